"""Importing real APIs into an API pool: OpenAPI 3 / Swagger 2 documents and ToolACE, BFCL or xLAM function
lists become :class:`APISpec` records (``operators == ["imported"]``), merged without duplicates into a JSONL or
parquet pool. An operation that cannot be imported (a broken ``$ref``, an invalid schema) is kept, rejected with
the check that rejected it, so nothing is lost silently.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import fsspec
import polars as pl
import yaml
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from schemas.records import APISpec
from tasks.apis.schema_validity import SchemaChecker as _SchemaChecker
from tasks.apis.synthesis import snake_case
from tasks.formats.type_dialects import DATA_KEYWORDS, SCHEMA_MAPS, parameters_schema, to_json_schema, unknown_types
from tasks.mcp.tool_import import apis_from_tools_list_document, tools_list_payload
from tasks.storage.frames import records_frame, records_frame_dicts
from tasks.storage.writers import write_table
from toolace.errors import UserError
from toolace.safe_patterns import schema_hazard

REF_CHECK = "openapi_ref_v1"
SCHEMA_CHECK = "import_schema_v1"
ENTRY_CHECK = "function_entry_v1"
OPERATORS = ["imported"]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PARAM_LOCATIONS = ("path", "query", "header", "formData")
RESULT_CODES = ("200", "201", "default")
OBJECT: dict[str, Any] = {"type": "object"}
_SWAGGER_PARAM_META = {"name", "in", "required", "description", "collectionFormat", "allowEmptyValue", "style",
                       "explode", "allowReserved", "deprecated", "example", "examples"}


def _api_id(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value else ""




def _spec(name: str, description: str, parameters: dict[str, Any], result: dict[str, Any], domain: str,
          id_parts: list[Any] | None = None) -> APISpec:
    api_id = _api_id(name, parameters, *(id_parts or []))
    return APISpec(api_id=api_id, name=name, description=description, parameters=parameters,
                   result_schema=result, domain=domain, node_ids=[], operators=list(OPERATORS))


def _rejected(name: str, description: str, domain: str, check: str, reason: str, raw: Any) -> APISpec:
    raw_text = json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str)
    spec = _spec(name, description, {"type": "object", "properties": {}, "required": []}, dict(OBJECT), domain,
                 id_parts=[raw_text])
    spec.reject(check, reason)
    spec.raw_outputs = [raw_text]
    return spec


# ---------------------------------------------------------------------------------------------- OpenAPI


class _BrokenRef(Exception):
    def __init__(self, ref: str, why: str) -> None:
        super().__init__(f"$ref {ref} {why}")
        self.ref = ref
        self.why = why


def merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` folded into one schema: properties and required lists united, the outer keywords winning."""
    parts = schema.get("allOf")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        return schema
    outer = {k: v for k, v in schema.items() if k != "allOf"}
    merged: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in [*parts, outer]:
        properties.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if isinstance(r, str))
    for part in [outer, *parts]:
        for key, value in part.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
        merged.setdefault("type", "object")
    if required:
        merged["required"] = list(dict.fromkeys(required))
    return merged


# Nested dicts and lists an imported schema may have: pydantic serialises no deeper than 255, so an APISpec nested
# deeper could not be written to a pool.
MAX_NESTING = 250


class _TooDeep(Exception):
    pass


def _copy_json(value: Any, depth: int = 0) -> Any:
    """An independent copy of nested dicts and lists (their leaves are immutable): many times faster than
    ``copy.deepcopy``, and faster than a round trip through the JSON codec. Raises :class:`_TooDeep` past
    :data:`MAX_NESTING` levels."""
    if isinstance(value, dict):
        if depth >= MAX_NESTING:
            raise _TooDeep
        return {k: _copy_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            raise _TooDeep
        return [_copy_json(v, depth + 1) for v in value]
    return value


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (if it was on): building millions of small acyclic dicts otherwise sets
    off collections that walk everything built so far, about half the time of a large import."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _unescape_pointer(token: str) -> str:
    if "%" in token:
        token = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), token)
    return token.replace("~1", "/").replace("~0", "~")


class _Resolver:
    """Local ``$ref`` resolution with a cycle guard: a reference met again inside its own expansion becomes
    ``{"type": "object"}``; ``allOf`` is merged and Swagger 2's ``file`` type becomes a binary string.

    Every reference is expanded once. An expansion that cut no cycle is the same wherever the reference is used: it is
    cached and shared by every tree that uses it, so resolved trees are read-only (copy them to hand them out). One that
    cut a cycle, or met a broken reference, depends only on which of the references being expanded around it it can
    reach: it is cached under those.
    """

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.cache: dict[str, Any] = {}
        self.context_refs: set[str] = set()
        self.contextual: dict[tuple[str, frozenset[str]], tuple[Any, tuple[str, str] | None]] = {}
        self.targets: dict[str, tuple[Any, str | None]] = {}
        self.reaches: dict[str, frozenset[str]] = {}
        self.direct: dict[str, set[str]] = {}

    def target(self, ref: str) -> Any:
        if ref not in self.targets:
            self.targets[ref] = self._locate(ref)
        node, why = self.targets[ref]
        if why is not None:
            raise _BrokenRef(ref, why)
        return node

    def _locate(self, ref: str) -> tuple[Any, str | None]:
        if not ref.startswith("#"):
            return None, "is not a local reference (only #/... references are resolved)"
        if ref != "#" and not ref.startswith("#/"):
            return None, "is not a JSON pointer (only #/... references are resolved)"
        node: Any = self.doc
        for raw in ref[2:].split("/") if ref != "#" else []:
            token = _unescape_pointer(raw)
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return None, "points to nothing in the document"
        return node, None

    def resolve(self, node: Any) -> Any:
        """The node with its references expanded (raises :class:`_BrokenRef`); shares parts with other results."""
        return self._resolve(node, ())[0]

    def _resolve(self, node: Any, stack: tuple[str, ...]) -> tuple[Any, bool]:
        """The resolved node and whether a cycle was cut while resolving it."""
        if isinstance(node, list):
            items: list[Any] = []
            cut = False
            for value in node:
                resolved, value_cut = self._resolve(value, stack)
                items.append(resolved)
                cut = cut or value_cut
            return items, cut
        if not isinstance(node, dict):
            return node, False
        ref = node.get("$ref")
        if isinstance(ref, str):
            resolved, cut = self._reference(ref, stack)
            if len(node) > 1:
                extra, extra_cut = self._resolve({k: v for k, v in node.items() if k != "$ref"}, stack)
                resolved = {**resolved, **extra} if isinstance(resolved, dict) else resolved
                cut = cut or extra_cut
            return resolved, cut
        out: dict[str, Any] = {}
        cut = False
        for key, value in node.items():
            if key in DATA_KEYWORDS:  # data, not schemas: a "$ref" key inside them is not a reference
                out[key] = value
            elif key in SCHEMA_MAPS and isinstance(value, dict):  # names, not keywords: none is data
                named: dict[str, Any] = {}
                for name, sub in value.items():
                    named[name], sub_cut = self._resolve(sub, stack)
                    cut = cut or sub_cut
                out[key] = named
            else:
                out[key], value_cut = self._resolve(value, stack)
                cut = cut or value_cut
        if out.get("type") == "file":  # Swagger 2's file type is no JSON Schema type
            out["type"], out["format"] = "string", "binary"
        if "allOf" in out:
            out = merge_all_of(out)
        return out, cut

    def _reference(self, ref: str, stack: tuple[str, ...]) -> tuple[Any, bool]:
        if ref in stack:
            return dict(OBJECT), True
        if ref in self.cache:
            return self.cache[ref], False
        key = self._context_key(ref, stack) if ref in self.context_refs else None
        if key is not None and key in self.contextual:
            value, broken = self.contextual[key]
            if broken is not None:
                raise _BrokenRef(*broken)
            return value, True
        try:
            value, cut = self._resolve(self.target(ref), (*stack, ref))
        except _BrokenRef as exc:
            self.context_refs.add(ref)
            self.contextual[key or self._context_key(ref, stack)] = (None, (exc.ref, exc.why))
            raise
        if cut:
            self.context_refs.add(ref)
            self.contextual[key or self._context_key(ref, stack)] = (value, None)
        else:
            self.cache[ref] = value
        return value, cut

    def _context_key(self, ref: str, stack: tuple[str, ...]) -> tuple[str, frozenset[str]]:
        """What the expansion of ``ref`` inside ``stack`` depends on: the references of the stack it can reach."""
        reach = self._reach(ref)
        return ref, frozenset(r for r in stack if r in reach)

    def _reach(self, ref: str) -> frozenset[str]:
        """Every reference the expansion of ``ref`` could meet (a superset: data keywords are searched too)."""
        if ref not in self.reaches:
            seen: set[str] = set()
            todo = [ref]
            while todo:
                for found in self._direct_refs(todo.pop()):
                    if found not in seen:
                        seen.add(found)
                        todo.append(found)
            self.reaches[ref] = frozenset(seen)
        return self.reaches[ref]

    def _direct_refs(self, ref: str) -> set[str]:
        if ref in self.direct:
            return self.direct[ref]
        found: set[str] = set()
        self.direct[ref] = found
        node, why = self.targets.get(ref) or self._locate(ref)
        if why is not None:
            return found
        todo, visited = [node], set()
        while todo:
            item = todo.pop()
            if id(item) in visited:
                continue
            visited.add(id(item))
            if isinstance(item, dict):
                if isinstance(item.get("$ref"), str):
                    found.add(item["$ref"])
                todo.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                todo.extend(v for v in item if isinstance(v, dict | list))
        return found


def _media_schema(content: Any) -> tuple[dict[str, Any] | None, bool]:
    """The schema of a ``content`` map (JSON media types first) and whether it came from a JSON media type."""
    if not isinstance(content, dict):
        return None, False
    ranked = sorted(content.items(), key=lambda kv: 0 if "json" in str(kv[0]).lower() else 1)
    for media, spec in ranked:
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return spec["schema"], "json" in str(media).lower()
    return None, False


def _parameter_schema(param: dict[str, Any]) -> dict[str, Any]:
    if isinstance(param.get("schema"), dict):
        schema = dict(param["schema"])
    elif "content" in param:
        schema = dict(_media_schema(param["content"])[0] or {})
    else:  # Swagger 2: the parameter object is its own schema
        schema = {k: v for k, v in param.items() if k not in _SWAGGER_PARAM_META and not k.startswith("x-")}
    if param.get("description") and "description" not in schema:
        schema["description"] = _text(param["description"])
    return schema


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or ("type" not in schema and isinstance(schema.get("properties"), dict)
                                              and not any(k in schema for k in ("oneOf", "anyOf")))


def _operation_schemas(resolver: _Resolver, path_item: dict[str, Any], operation: dict[str, Any]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged parameters schema and the result schema of one operation (raises :class:`_BrokenRef`).

    They share parts with the resolver's cache: read-only, copy them to hand them out.
    """
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*(path_item.get("parameters") or []), *(operation.get("parameters") or [])]:
        param = resolver.resolve(raw)
        if isinstance(param, dict) and isinstance(param.get("name"), str):
            params[(param["name"], str(param.get("in")))] = param  # the operation's own overrides the path's
    properties: dict[str, Any] = {}
    required: list[str] = []
    body: dict[str, Any] | None = None
    body_required = False
    for (name, location), param in params.items():
        if location == "body":  # Swagger 2
            body, body_required = dict(param.get("schema") or OBJECT), bool(param.get("required"))
            if param.get("description") and "description" not in body:
                body["description"] = _text(param["description"])
        elif location in PARAM_LOCATIONS:
            properties[name] = _parameter_schema(param)
            if param.get("required") or location == "path":
                required.append(name)
    if operation.get("requestBody") is not None:
        request = resolver.resolve(operation["requestBody"])
        if isinstance(request, dict):
            schema, _ = _media_schema(request.get("content"))
            if schema is not None:
                body, body_required = dict(schema), bool(request.get("required"))
                if request.get("description") and "description" not in body:
                    body["description"] = _text(request["description"])
    if body is not None:
        body_properties = body.get("properties") if _is_object_schema(body) else None
        if isinstance(body_properties, dict) and not set(body_properties) & set(properties):
            properties.update(body_properties)
            if body_required:
                required.extend(r for r in body.get("required") or [] if isinstance(r, str))
        else:
            properties["body"] = body
            if body_required:
                required.append("body")
    parameters = {"type": "object", "properties": properties, "required": list(dict.fromkeys(required))}
    result: dict[str, Any] = dict(OBJECT)
    responses = operation.get("responses") if isinstance(operation.get("responses"), dict) else {}
    responses = {str(k): v for k, v in responses.items()}
    for code in RESULT_CODES:
        if code not in responses:
            continue
        response = resolver.resolve(responses[code])
        if isinstance(response, dict):
            schema = response.get("schema") if isinstance(response.get("schema"), dict) else None
            if schema is None:
                schema, is_json = _media_schema(response.get("content"))
                schema = schema if is_json else None
            if schema is not None:
                result = schema
                break
    return parameters, result


def apis_from_openapi(doc: dict[str, Any], source: str) -> list[APISpec]:
    """One APISpec per operation of an OpenAPI 3 or Swagger 2 document (already parsed).

    An operation with a broken ``$ref`` or an invalid schema is kept, rejected, with the reason (the file, the
    operation and what is wrong). Each ``$ref`` target is expanded and checked once, so large documents with deep
    ``$ref`` chains import in time linear in their operations.
    """
    with _gc_paused():
        apis = _apis_from_openapi(doc, source)
    for api in apis:
        api.imported_from = "openapi"  # an extra field (APISpec.tool_source): the tables' columns stay as they are
    return apis


def _apis_from_openapi(doc: dict[str, Any], source: str) -> list[APISpec]:
    resolver = _Resolver(doc)
    checker = _SchemaChecker()
    title = _text((doc.get("info") or {}).get("title")) or PurePosixPath(source).stem or "imported"
    apis: list[APISpec] = []
    paths = doc.get("paths") or {}
    if not isinstance(paths, dict):
        return apis
    for path, path_item in paths.items():
        if not isinstance(path_item, dict):
            continue
        for method in HTTP_METHODS:
            operation = path_item.get(method)
            if not isinstance(operation, dict):
                continue
            operation_id = operation.get("operationId")
            name = snake_case(str(operation_id or "")) or snake_case(f"{method} {path}")
            description = (_text(operation.get("summary")) or _text(operation.get("description"))
                           or f"{method.upper()} {path}")
            tags = operation.get("tags") or []
            domain = _text(tags[0]) if isinstance(tags, list) and tags and _text(tags[0]) else title
            where = f"{source}: {method.upper()} {path}" + (f" (operationId {operation_id})" if operation_id else "")
            check, problem = SCHEMA_CHECK, None
            try:
                parameters, result = _operation_schemas(resolver, path_item, operation)
                problem = checker.problem(parameters, result)
                if problem is None:
                    parameters, result = _copy_json(parameters), _copy_json(result)
            except _BrokenRef as exc:
                check, problem = REF_CHECK, str(exc)
            except (RecursionError, _TooDeep):
                problem = f"its schemas nest too deeply to import (at most {MAX_NESTING} levels)"
            if problem is not None:
                raw = {"method": method, "path": path, "operation": operation}
                apis.append(_rejected(name, description, domain, check, f"{where}: {problem}", raw))
                continue
            apis.append(_spec(name, description, parameters, result, domain))
    return apis


# ---------------------------------------------------------------------------------------- function lists


def function_parameters(params: Any) -> dict[str, Any]:
    """Function-list parameters (JSON-Schema-like in any dialect, or xLAM's flat map) as one JSON Schema object,
    read by :mod:`tasks.formats.type_dialects` (the same rules as dataset conversion and ``verify``)."""
    if not isinstance(params, dict) or not params:
        return {"type": "object", "properties": {}, "required": []}
    schema = parameters_schema(params)
    schema["type"] = "object"
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    return schema


def _unknown_type_problem(*schemas: Any) -> str | None:
    """The type names no dialect defines, as a rejection reason (the words ``verify`` uses)."""
    unknown = [u for s in schemas if isinstance(s, dict) for u in unknown_types(s)]
    return f"unknown type name(s) {', '.join(repr(u) for u in unknown)}" if unknown else None


def _hazard_problem(*labelled: tuple[str, Any]) -> str | None:
    """The first hazard of the labelled schemas (a pattern with no linear-time matcher, a recursive or dangling
    ``$ref``, subschemas nested deeper than MAX_SCHEMA_DEPTH: :mod:`toolace.safe_patterns`), as a rejection reason."""
    for label, schema in labelled:
        if hazard := schema_hazard(schema):
            return f"{label} schema: {hazard}"
    return None


def _unwrap(item: Any) -> Any:
    """An OpenAI ``{"type": "function", "function": {...}}`` entry as its function."""
    if isinstance(item, dict) and isinstance(item.get("function"), dict) and "name" not in item:
        return item["function"]
    return item


def apis_from_function_list(items: list[dict[str, Any]], source: str) -> list[APISpec]:
    """ToolACE / BFCL / xLAM (and OpenAI ``tools``) function entries as APISpecs; names are kept verbatim."""
    apis: list[APISpec] = []
    checker = _SchemaChecker()
    for index, raw in enumerate(items):
        item = _unwrap(raw)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            apis.append(_rejected(str(item.get("name") or "") if isinstance(item, dict) else "", "", "imported",
                                  ENTRY_CHECK, f"{source}: entry {index} is not a function with a name", raw))
            continue
        name = item["name"].strip()
        description = _text(item.get("description"))
        domain = _text(item.get("category") or item.get("domain")) or "imported"
        if problem := _hazard_problem(("parameters", item.get("parameters")),
                                      *(("result", item.get(k)) for k in ("response", "result", "returns"))):
            apis.append(_rejected(name, description, domain, SCHEMA_CHECK, f"{source}: {name}: {problem}", raw))
            continue
        parameters = function_parameters(item.get("parameters"))
        if isinstance(item.get("required"), list):  # a top-level list adds to the parameters' ("null" is ignored)
            extra = [r for r in item["required"] if isinstance(r, str)]
            parameters["required"] = list(dict.fromkeys([*parameters["required"], *extra]))
        result_raw = next((item[k] for k in ("response", "result", "returns") if isinstance(item.get(k), dict)),
                          None)
        result = to_json_schema(result_raw) if result_raw else dict(OBJECT)
        if problem := _unknown_type_problem(item.get("parameters"), result_raw) \
                or _hazard_problem(("parameters", parameters), ("result", result)) \
                or checker.problem(parameters, result):
            apis.append(_rejected(name, description, domain, SCHEMA_CHECK, f"{source}: {name}: {problem}", raw))
            continue
        apis.append(_spec(name, description, parameters, result, domain))
    return apis


# ------------------------------------------------------------------------------------------------ files

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
# libyaml's loader when PyYAML was built with it: the pure-Python one takes most of the time of a large document.
_YAML_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_SUFFIXES = {".yaml", ".yml"}
_TOOL_LIST_MARKER = "invoke:\n"


def _functions_from_row(row: Any, where: str, in_list: bool = False) -> list[Any]:
    """The functions one row holds: a function itself, a ToolACE row, an xLAM row or an OpenAI row.

    An entry of a JSON list that is none of these is passed on as a function (it is rejected, not an error).
    """
    if isinstance(row, list):
        return [f for r in row for f in _functions_from_row(r, where, in_list=True)]
    if in_list and not (isinstance(row, dict) and (
            "system" in row or any(k in row for k in ("tools", "functions", "function")))):
        return [row]
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a function or a row with a tool list, got {type(row).__name__}")
    if isinstance(row.get("system"), str) and _TOOL_LIST_MARKER in row["system"]:
        text = row["system"].split(_TOOL_LIST_MARKER, 1)[1].lstrip()
        try:
            tools, _ = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: the tool list in 'system' is not valid JSON ({exc.msg})") from None
        if not isinstance(tools, list):
            raise UserError(f"{where}: the tool list in 'system' is not a JSON list")
        return tools
    for key in ("tools", "functions", "function"):
        if key in row and "name" not in row:
            tools = row[key]
            if isinstance(tools, str):
                try:
                    tools = json.loads(tools)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{where}: '{key}' is not valid JSON ({exc.msg})") from None
            return [_unwrap(t) for t in (tools if isinstance(tools, list) else [tools])]
    if "name" in row or isinstance(row.get("function"), dict):
        return [_unwrap(row)]
    raise UserError(f"{where}: neither a function (name), a ToolACE row (system with a tool list) "
                    "nor an xLAM row (tools)")


def _parse_jsonl(text: str, path: str) -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
    return rows


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, with libyaml when available."""
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python


def _is_openapi(value: Any) -> bool:
    return isinstance(value, dict) and ("openapi" in value or "swagger" in value)


def read_api_file(path: str) -> list[APISpec]:
    """APISpecs from one file, local or fsspec URL: an OpenAPI 3 / Swagger 2 document (JSON or YAML), a saved MCP
    ``tools/list`` answer (JSON), a JSON list of functions, or JSONL rows (functions, ToolACE rows, xLAM rows). Bad
    files raise :class:`UserError`."""
    try:
        with fsspec.open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise UserError(f"API file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"API file {path} cannot be read: {exc}") from None
    if not text.strip():
        raise UserError(f"API file {path} is empty")
    with _gc_paused():
        return _apis_from_text(text, path)


def _apis_from_text(text: str, path: str) -> list[APISpec]:
    suffix = PurePosixPath(path.split("?", 1)[0]).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        rows = _parse_jsonl(text, path)
    else:
        value: Any
        try:
            if suffix in YAML_SUFFIXES:
                value = _load_yaml(text)
            else:
                value = json.loads(text)
        except yaml.YAMLError as exc:
            line = f"line {exc.problem_mark.line + 1}: " if getattr(exc, "problem_mark", None) else ""
            raise UserError(f"{path}: {line}invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # one JSON value per line
                rows = _parse_jsonl(text, path)
                value = None
            elif suffix == ".json":
                raise UserError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
            else:
                try:
                    value = _load_yaml(text)
                except yaml.YAMLError:
                    raise UserError(f"{path}: neither JSON, JSONL nor YAML") from None
        if value is not None:
            if _is_openapi(value):
                return apis_from_openapi(value, path)
            if tools_list_payload(value) is not None:  # a saved MCP tools/list answer
                return apis_from_tools_list_document(value, path)
            rows = [(0, value)]
    functions: list[Any] = []
    for number, row in rows:
        where = f"{path}: line {number}" if number else path
        if _is_openapi(row):
            raise UserError(f"{where}: an OpenAPI document inside JSONL is not supported: save it as its own file")
        functions.extend(_functions_from_row(row, where))
    return apis_from_function_list(functions, path)


# ------------------------------------------------------------------------------------------------- pool

_JSON_FIELDS = ("parameters", "result_schema", "node_ids", "operators", "raw_outputs", "mcp")


_EXTRA_COLUMNS = ("imported_from", "mcp")  # APISpec's extra fields a parquet pool keeps (APISpec.tool_source)


def _pool_frame(pool: list[APISpec]) -> pl.DataFrame:
    """The pool as a table, with a column for each extra field some API has (``imported_from``; ``mcp`` as JSON)."""
    extras = [key for key in _EXTRA_COLUMNS if any(key in (api.model_extra or {}) for api in pool)]
    if not extras:
        return records_frame(pool)
    return records_frame_dicts([{**{k: getattr(api, k) for k in APISpec.model_fields},
                                 **{k: (api.model_extra or {}).get(k) for k in extras}} for api in pool])


def _pool_format(pool_url: str) -> str:
    suffix = PurePosixPath(pool_url.split("?", 1)[0]).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise UserError(f"pool {pool_url} must end in .jsonl or .parquet")


def read_pool(pool_url: str) -> list[APISpec]:
    """The APIs in a pool file (empty if it does not exist yet)."""
    kind = _pool_format(pool_url)
    fs, fs_path = fsspec.core.url_to_fs(pool_url)
    if not fs.exists(fs_path):
        return []
    try:
        if kind == "jsonl":
            with fs.open(fs_path, "r", encoding="utf-8") as handle:
                rows = [(n, row) for n, row in _parse_jsonl(handle.read(), pool_url)]
        else:
            with fs.open(fs_path, "rb") as handle:
                frame = pl.read_parquet(handle)
            rows = []
            for number, row in enumerate(frame.to_dicts(), start=1):
                for key in _JSON_FIELDS:
                    if isinstance(row.get(key), str):
                        row[key] = json.loads(row[key])
                for key in _EXTRA_COLUMNS:
                    if key in row and row[key] is None:
                        del row[key]
                rows.append((number, row))
        return [APISpec.model_validate(row) for _, row in rows]
    except UserError:
        raise
    except (ValidationError, json.JSONDecodeError, OSError, pl.exceptions.PolarsError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"pool {pool_url} is not an API pool: {first}") from None


def merge_into_pool(pool_url: str, apis: list[APISpec]) -> dict[str, int]:
    """Add APIs to a JSONL or parquet pool (created if absent); an api_id already there is not added twice.

    Rejected APIs are written too. Returns the counts ``read``, ``added``, ``duplicates`` and ``rejected``.
    """
    kind = _pool_format(pool_url)
    fs, fs_path = fsspec.core.url_to_fs(pool_url)
    existed = fs.exists(fs_path)
    pool = read_pool(pool_url)
    seen = {api.api_id for api in pool}
    counts = {"read": len(apis), "added": 0, "duplicates": 0, "rejected": 0}
    for api in apis:
        counts["rejected"] += not api.accepted
        if api.api_id in seen:
            counts["duplicates"] += 1
            continue
        seen.add(api.api_id)
        pool.append(api)
        counts["added"] += 1
    if counts["added"] or not existed:
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(str(PurePosixPath(fs_path).parent), exist_ok=True)
        if kind == "jsonl":
            with fs.open(fs_path, "w", encoding="utf-8") as handle:
                for api in pool:
                    handle.write(json.dumps(api.model_dump(mode="json"), ensure_ascii=False) + "\n")
        else:
            write_table(_pool_frame(pool), pool_url)
    return counts
