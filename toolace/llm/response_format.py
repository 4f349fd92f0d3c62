"""JSON-schema ``response_format`` payloads generated from pydantic models (never written by hand).

A schema sent with ``strict: true`` must meet OpenAI's documented rules for strict structured outputs
(https://platform.openai.com/docs/guides/structured-outputs, "Supported schemas"), or the endpoint refuses the
request with HTTP 400: the root is an object (not ``anyOf``); every object lists all its properties in
``required`` and sets ``additionalProperties: false`` (an optional field is a required one that may be
``null``); at most 10 levels of nesting and 5,000 properties; at most 1,000 enum values and 120,000
characters of property names, definition names, enum and const values; and only these keywords: ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``anyOf``, ``$defs``,
``$ref``, ``description``, ``title``, ``pattern``, ``format`` (date-time, time, date, duration, email,
hostname, ipv4, ipv6, uuid), ``multipleOf``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, ``minItems`` and ``maxItems`` (no ``allOf``, ``oneOf``, ``not``, ``if``/``then``/``else``,
``default``, ``minLength``/``maxLength``, ``patternProperties``, ``uniqueItems``...).

:func:`to_strict_schema` rewrites a schema into that form where it can be expressed: objects are closed,
optional properties become required-but-nullable, a length bound becomes a ``pattern`` (on text without
quotes, backslashes or line breaks), ``oneOf`` becomes ``anyOf``, and what strict mode cannot say but a
validator can check afterwards (``default``, ``uniqueItems``, an unsupported ``format``...) moves into the
``description``. The pydantic
models' schemas always can (:func:`schema_for`). A schema that is data (an API's result schema) may not:
a free-form map, a tuple, a value of any type, or too deep a tree; :func:`data_response_format` then sends
it as it is with ``strict: false``. Either way the answer is validated against the original schema or model
afterwards, after :func:`strip_added_nulls` has removed the ``null`` values strict mode made possible.
:func:`strict_schema_problems` checks the documented rules.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
STRICT_MAX_DEPTH = 10
STRICT_MAX_PROPERTIES = 5000
STRICT_MAX_ENUM_VALUES = 1000
STRICT_MAX_STRING_CHARS = 120_000
STRICT_LARGE_ENUM = 250  # a string enum with more values than this ...
STRICT_LARGE_ENUM_CHARS = 15_000  # ... may hold at most this many characters in all

_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_COMMON = frozenset({"type", "enum", "const", "anyOf", "$ref", "$defs", "description", "title"})
_BY_TYPE = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"pattern", "format"}),
    "number": frozenset({"multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "integer": frozenset({"multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
_SUPPORTED = _COMMON.union(*_BY_TYPE.values())
# keywords that only annotate (dropped), and constraints a validator checks afterwards (moved into the description)
_DROPPED = frozenset({"title", "$schema", "$id", "$comment", "examples", "example", "readOnly", "writeOnly",
                      "deprecated", "discriminator", "contentEncoding", "contentMediaType", "xml", "externalDocs"})
_NOTED = ("uniqueItems", "contains", "minContains", "maxContains", "minProperties", "maxProperties",
          "patternProperties", "propertyNames", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
          "dependencies", "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_LOOKAROUND = re.compile(r"\(\?<?[=!]|\\[1-9]|\\k<")
# a character of a length-bounded string: not ``.``, which grammar-constrained servers (llama.cpp, outlines) write
# raw into the JSON string, so a quote, a backslash or a line break it allows would end or break the JSON
_TEXT_CHAR = r'[^"\\\n\r]'
_NOTE_CHARS = 120


class NotStrict(ValueError):
    """A schema that strict structured outputs cannot express; the message says where and why."""


def _admits_null(node: Any, defs: dict[str, Any] | None = None, seen: frozenset[str] = frozenset()) -> bool:
    """Whether ``node`` accepts ``null`` (read conservatively: ``$ref`` targets in ``defs`` are followed)."""
    if node is True or node == {}:
        return True
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind) or node.get("nullable") is True:
        return True
    if "const" in node and node["const"] is None:
        return True
    if isinstance(node.get("enum"), list) and None in node["enum"]:
        return True
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list) and any(_admits_null(b, defs, seen) for b in node[key]):
            return True
    ref = node.get("$ref")
    if isinstance(ref, str) and defs is not None and ref not in seen:
        target = _lookup(ref, defs)
        return target is not None and _admits_null(target, defs, seen | {ref})
    return False


def _lookup(ref: str, defs: dict[str, Any]) -> Any:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            return defs.get(ref[len(prefix):])
    return defs.get("#") if ref == "#" else None


def _note(key: str, value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{key}: {text if len(text) <= _NOTE_CHARS else text[: _NOTE_CHARS - 3] + '...'}"


def _with_notes(node: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """``node`` with the notes of what strict mode cannot say appended to its description."""
    if notes:
        if "$ref" in node:  # no siblings beside a reference
            node = {"anyOf": [node]}
        description = node.get("description")
        joined = "; ".join(dict.fromkeys(notes))
        node["description"] = f"{description} ({joined})" if isinstance(description, str) and description else joined
    return node


def _length_pattern(low: Any, high: Any) -> str | None:
    """``minLength``/``maxLength`` as a pattern (strict mode has no length keywords): the same bounds, on text
    without double quotes, backslashes and line breaks (see ``_TEXT_CHAR``)."""
    low = low if isinstance(low, int) and not isinstance(low, bool) and low > 0 else 0
    if high is not None and not (isinstance(high, int) and not isinstance(high, bool) and high >= low):
        return None
    if high is None:
        return f"^{_TEXT_CHAR}{{{low},}}$" if low else None
    return f"^{_TEXT_CHAR}{{{low},{high}}}$"


class _Strict:
    """One conversion: the definitions of the root, and the path of the node being converted."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def ref(self, ref: Any, path: str) -> str:
        if not isinstance(ref, str):
            raise NotStrict(f"{path or '/'}: $ref is not a string")
        if ref == "#":
            return ref
        for prefix in ("#/$defs/", "#/definitions/"):
            name = ref[len(prefix):]
            if ref.startswith(prefix) and name in self.defs:
                return f"#/$defs/{name}"
        raise NotStrict(f"{path or '/'}: $ref {ref!r} is not a local definition")

    def node(self, schema: Any, path: str) -> dict[str, Any]:
        where = path or "/"
        if not isinstance(schema, dict):
            raise NotStrict(f"{where}: {'accepts any value' if schema is True else 'is not a schema'}")
        schema = dict(schema)
        for key in _DROPPED:
            schema.pop(key, None)
        nullable = schema.pop("nullable", None) is True  # OpenAPI 3.0
        notes: list[str] = []
        if isinstance(schema.get("allOf"), list):
            parts = schema.pop("allOf")
            if len(parts) != 1 or not isinstance(parts[0], dict):
                raise NotStrict(f"{where}: allOf of {len(parts)} schemas")
            merged = {k: v for k, v in parts[0].items() if k not in _DROPPED}
            clash = (merged.keys() & schema.keys()) - {"description"}
            if clash:
                raise NotStrict(f"{where}: allOf repeats {', '.join(sorted(clash))}")
            schema = {**merged, **schema}
        if "oneOf" in schema:  # the answer is checked against the original oneOf afterwards
            if "anyOf" in schema:
                raise NotStrict(f"{where}: both oneOf and anyOf")
            schema["anyOf"] = schema.pop("oneOf")
        for key in _NOTED:  # (default, lengths, format and pattern are noted where strict mode cannot keep them)
            if key in schema:
                notes.append(_note(key, schema.pop(key)))
        default = schema.pop("default", None)
        if default is not None:
            notes.append(_note("default", default))
        out = self._typed(schema, where, path, notes)
        if nullable:
            out = self.nullable(out)
        return _with_notes(out, notes)

    def _typed(self, schema: dict[str, Any], where: str, path: str, notes: list[str]) -> dict[str, Any]:
        description = schema.get("description")
        base: dict[str, Any] = {"description": description} if isinstance(description, str) and description else {}
        if "$ref" in schema:
            ref = self.ref(schema["$ref"], path)
            extra = set(schema) - {"$ref", "description"}
            for key in sorted(extra):
                notes.append(_note(key, schema[key]))
            return {"anyOf": [{"$ref": ref}], **base} if base else {"$ref": ref}
        if "anyOf" in schema:
            branches = schema["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise NotStrict(f"{where}: anyOf is not a non-empty list")
            extra = set(schema) - {"anyOf", "description"}
            if extra:
                raise NotStrict(f"{where}: anyOf beside {', '.join(sorted(extra))}")
            return {"anyOf": [self.node(b, f"{path}/anyOf/{i}") for i, b in enumerate(branches)], **base}
        kind = schema.get("type")
        if kind is None:
            kind = self._infer_type(schema, where)
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            if not kinds or any(k not in _TYPES for k in kinds):
                raise NotStrict(f"{where}: type {kind!r}")
            if len(kinds) > 1:
                split = [self._typed({**schema, "type": k, "description": None}, where, path, notes) for k in kinds]
                if "null" in kind:
                    split.append({"type": "null"})
                return {"anyOf": split, **base}
            typed = self._typed({**schema, "type": kinds[0]}, where, path, notes)
            return self.nullable(typed) if "null" in kind else typed
        if kind not in _TYPES:
            raise NotStrict(f"{where}: type {kind!r}")
        out: dict[str, Any] = {"type": kind, **base}
        for key in ("enum", "const"):
            if key in schema:
                out[key] = schema[key]
        allowed = _BY_TYPE[kind]
        if kind == "object":
            self._object(schema, out, where, path, notes)
        elif kind == "array":
            self._array(schema, out, where, path)
        elif kind == "string":
            self._string(schema, out, notes)
        elif kind in ("number", "integer"):
            self._number(schema, out, notes)
        for key in sorted(set(schema) - allowed - _COMMON - {"minLength", "maxLength"}):
            if not key.startswith("x-"):
                notes.append(_note(key, schema[key]))
        return out

    @staticmethod
    def _infer_type(schema: dict[str, Any], where: str) -> str | list[str]:
        """The type a schema without ``type`` implies (by its keywords, or the values of its enum or const)."""
        if any(k in schema for k in ("properties", "additionalProperties", "required")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        values = schema.get("enum") if "enum" in schema else [schema["const"]] if "const" in schema else None
        if isinstance(values, list) and values:
            names = {"string" if isinstance(v, str) else "boolean" if isinstance(v, bool)
                     else "integer" if isinstance(v, int) else "number" if isinstance(v, float)
                     else "null" if v is None else "other" for v in values}
            names.discard("null")
            if names == {"integer", "number"}:
                names = {"number"}
            if len(names) == 1 and "other" not in names:
                kind = names.pop()
                return [kind, "null"] if None in values else kind
        raise NotStrict(f"{where}: no type (accepts any value)")

    def _object(self, schema: dict[str, Any], out: dict[str, Any], where: str, path: str,
                notes: list[str]) -> None:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            raise NotStrict(f"{where}: an object without properties (a free-form map)")
        if not properties and schema.get("additionalProperties", True) is not False:
            raise NotStrict(f"{where}: an object without properties (a free-form map)")
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        converted: dict[str, Any] = {}
        for name, sub in properties.items():
            node = self.node(sub, f"{path}/properties/{name}")
            converted[name] = node if name in required else self.nullable(node)
        out["properties"] = converted
        out["required"] = list(converted)
        out["additionalProperties"] = False
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            notes.append(_note("additionalProperties", extra))

    def _array(self, schema: dict[str, Any], out: dict[str, Any], where: str, path: str) -> None:
        items = schema.get("items")
        if "prefixItems" in schema or isinstance(items, list):
            raise NotStrict(f"{where}: a tuple (prefixItems / a list of items)")
        if not isinstance(items, dict) or not items:
            raise NotStrict(f"{where}: an array of any value (no items)")
        out["items"] = self.node(items, f"{path}/items")
        for key in ("minItems", "maxItems"):
            if isinstance(schema.get(key), int) and not isinstance(schema[key], bool):
                out[key] = schema[key]

    @staticmethod
    def _string(schema: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if isinstance(fmt, str) and fmt in STRICT_FORMATS:
            out["format"] = fmt
        elif fmt is not None:
            notes.append(_note("format", fmt))
        if isinstance(pattern, str) and not _LOOKAROUND.search(pattern):
            try:
                re.compile(pattern)
                out["pattern"] = pattern
            except re.error:
                notes.append(_note("pattern", pattern))
        elif pattern is not None:
            notes.append(_note("pattern", pattern))
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low is None and high is None:
            return
        bound = _length_pattern(low, high)
        if bound is not None and "pattern" not in out and "format" not in out and "enum" not in out:
            out["pattern"] = bound
            return
        for key, value in (("minLength", low), ("maxLength", high)):
            if value is not None:
                notes.append(_note(key, value))

    @staticmethod
    def _number(schema: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
        for key in ("multipleOf", "minimum", "maximum"):
            value = schema.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = value
        for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = schema.get(key)
            if value is True and bound in out:  # draft 4: a flag on minimum/maximum
                out[key] = out.pop(bound)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = value
            elif value is not None and value is not False:
                notes.append(_note(key, value))

    def nullable(self, node: dict[str, Any]) -> dict[str, Any]:
        """``node`` that also accepts ``null``: a scalar type gets ``"null"`` in its type list, anything else
        (objects, arrays, enums, references, unions) becomes one branch of an ``anyOf`` with ``null``."""
        if _admits_null(node, self.defs):
            return node
        kind = node.get("type")
        if isinstance(kind, str) and kind in ("string", "number", "integer", "boolean") and \
                "enum" not in node and "const" not in node:
            return {**node, "type": [kind, "null"]}
        if "anyOf" in node:
            return {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
        description = node.get("description")
        inner = {k: v for k, v in node.items() if k != "description"}
        out: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
        if description:
            out["description"] = description
        return out


def to_strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` rewritten for strict structured outputs (see the module docstring), or :class:`NotStrict`
    saying why it cannot be. Key order is kept (constrained decoding writes properties in schema order)."""
    if not isinstance(schema, dict):
        raise NotStrict("the root is not a schema object")
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    if not all(isinstance(v, dict) for v in defs.values()):
        raise NotStrict("/$defs: a definition is not a schema object")
    converter = _Strict(defs)
    root = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    out = converter.node(root, "")
    if out.get("type") != "object":
        raise NotStrict(f"the root is {out.get('type') or 'a union'}, not an object")
    if defs:
        out["$defs"] = {name: converter.node(sub, f"/$defs/{name}") for name, sub in defs.items()}
    problems = strict_schema_problems(out)
    if problems:
        raise NotStrict(problems[0])
    return out


# ------------------------------------------------------------------------------------------------ the rules


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    """Every schema node, with its path: the node, its properties, items, anyOf branches and definitions."""
    yield path or "/", schema
    if not isinstance(schema, dict):
        return
    for name, sub in (schema.get("properties") or {}).items() if isinstance(schema.get("properties"), dict) else ():
        yield from _nodes(sub, f"{path}/properties/{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}/items")
    for i, sub in enumerate(schema.get("anyOf") or []) if isinstance(schema.get("anyOf"), list) else ():
        yield from _nodes(sub, f"{path}/anyOf/{i}")
    for name, sub in (schema.get("$defs") or {}).items() if isinstance(schema.get("$defs"), dict) else ():
        yield from _nodes(sub, f"{path}/$defs/{name}")


def _depth(node: Any, defs: dict[str, Any], seen: frozenset[str] = frozenset()) -> int:
    """Levels of nesting below and including ``node``: every object and every array is a level (counted
    conservatively; a recursive reference counts once)."""
    if not isinstance(node, dict):
        return 0
    ref = node.get("$ref")
    if isinstance(ref, str):
        return 0 if ref in seen else _depth(_lookup(ref, defs), defs, seen | {ref})
    children = [*(node.get("properties") or {}).values()] if isinstance(node.get("properties"), dict) else []
    if isinstance(node.get("items"), dict):
        children.append(node["items"])
    below = max((_depth(c, defs, seen) for c in children), default=0)
    union = max((_depth(b, defs, seen) for b in node.get("anyOf") or [] if isinstance(b, dict)), default=0)
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    own = 1 if {"object", "array"} & set(kinds) or children else 0
    return max(own + below, union)


def strict_schema_problems(schema: Any) -> list[str]:
    """What keeps ``schema`` from being accepted with ``strict: true`` under OpenAI's documented rules (see
    the module docstring); an empty list when nothing does. Each problem names the node's path."""
    if not isinstance(schema, dict):
        return ["/: the root is not a schema object"]
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("/: the root must be an object (type 'object')")
    if "anyOf" in schema:
        problems.append("/: the root must not be anyOf")
    defs = schema.get("$defs") if isinstance(schema.get("$defs"), dict) else {}
    lookup = {**defs, "#": schema}
    properties = enum_values = chars = 0
    chars += sum(len(name) for name in defs)
    for path, node in _nodes(schema):
        if not isinstance(node, dict):
            problems.append(f"{path}: {'accepts any value' if node is True else 'is not a schema object'}")
            continue
        unknown = sorted(set(node) - _SUPPORTED)
        if unknown:
            problems.append(f"{path}: {', '.join(repr(k) for k in unknown)} not supported in strict mode")
        if path != "/" and "$defs" in node:
            problems.append(f"{path}: $defs only at the root")
        if "$ref" in node:
            ref = node["$ref"]
            if len(node) > 1:
                problems.append(f"{path}: $ref beside {', '.join(sorted(set(node) - {'$ref'}))}")
            if not isinstance(ref, str) or (ref != "#" and (not ref.startswith("#/$defs/")
                                                             or ref[len("#/$defs/"):] not in defs)):
                problems.append(f"{path}: $ref {ref!r} is not a local definition")
            continue
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        if any(k not in _TYPES for k in kinds):
            problems.append(f"{path}: type {kind!r}")
        if isinstance(kind, list) and len([k for k in kind if k != "null"]) != 1:
            problems.append(f"{path}: a type list must be one type and 'null'")
        if not kinds and not any(k in node for k in ("anyOf", "enum", "const")):
            problems.append(f"{path}: no type (accepts any value)")
        if "anyOf" in node and (not isinstance(node["anyOf"], list) or not node["anyOf"]):
            problems.append(f"{path}: anyOf must be a non-empty list")
        misplaced = sorted(k for k in set(node) & _SUPPORTED - _COMMON
                           if kinds and not any(k in _BY_TYPE.get(t, ()) for t in kinds))
        if misplaced:
            problems.append(f"{path}: {', '.join(misplaced)} on type {kind!r}")
        if "object" in kinds or "properties" in node:
            props = node.get("properties")
            if not isinstance(props, dict):
                problems.append(f"{path}: an object needs properties")
                props = {}
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: 'additionalProperties' is required to be supplied and to be false")
            required = node.get("required")
            if not isinstance(required, list) or set(required) != set(props):
                missing = sorted(set(props) - set(required if isinstance(required, list) else []))
                problems.append(f"{path}: 'required' must list every property"
                                f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}")
            properties += len(props)
            chars += sum(len(name) for name in props)
        if "array" in kinds and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: an array needs an items schema")
        fmt = node.get("format")
        if fmt is not None and fmt not in STRICT_FORMATS:
            problems.append(f"{path}: format {fmt!r} not supported in strict mode")
        if "pattern" in node:
            pattern = node["pattern"]
            if not isinstance(pattern, str) or _LOOKAROUND.search(pattern):
                problems.append(f"{path}: pattern {pattern!r} (lookaround and backreferences are not supported)")
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if key in node and (not isinstance(node[key], int | float) or isinstance(node[key], bool)):
                problems.append(f"{path}: {key} must be a number")
        for key in ("minItems", "maxItems"):
            if key in node and (not isinstance(node[key], int) or isinstance(node[key], bool)):
                problems.append(f"{path}: {key} must be an integer")
        enum = node.get("enum")
        if "enum" in node:
            if not isinstance(enum, list) or not enum:
                problems.append(f"{path}: enum must be a non-empty list")
                enum = []
            enum_values += len(enum)
            texts = [v for v in enum if isinstance(v, str)]
            chars += sum(map(len, texts))
            if len(texts) > STRICT_LARGE_ENUM and sum(map(len, texts)) > STRICT_LARGE_ENUM_CHARS:
                problems.append(f"{path}: an enum of over {STRICT_LARGE_ENUM} strings holds over "
                                f"{STRICT_LARGE_ENUM_CHARS} characters")
        if isinstance(node.get("const"), str):
            chars += len(node["const"])
    depth = _depth(schema, lookup)
    if depth > STRICT_MAX_DEPTH:
        problems.append(f"/: {depth} levels of nesting exceed the limit of {STRICT_MAX_DEPTH}")
    if properties > STRICT_MAX_PROPERTIES:
        problems.append(f"/: {properties} properties exceed the limit of {STRICT_MAX_PROPERTIES}")
    if enum_values > STRICT_MAX_ENUM_VALUES:
        problems.append(f"/: {enum_values} enum values exceed the limit of {STRICT_MAX_ENUM_VALUES}")
    if chars > STRICT_MAX_STRING_CHARS:
        problems.append(f"/: {chars} characters of names and values exceed the limit of {STRICT_MAX_STRING_CHARS}")
    return problems


def strip_added_nulls(value: Any, schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """``value`` (an answer to the strict form of ``schema``) without the ``null`` of an optional property
    whose original schema does not accept ``null``: strict mode makes every property required and the
    optional ones nullable, so an answer that leaves one out says ``null``. Changes ``value`` in place."""
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {}), "#": schema} \
            if isinstance(schema, dict) else {}
    for _ in range(32):  # follow references (a cycle ends here)
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            break
        schema = _lookup(schema["$ref"], defs)
    if not isinstance(schema, dict):
        return value
    parts = schema.get("allOf")
    if isinstance(parts, list) and len(parts) == 1:
        value = strip_added_nulls(value, parts[0], defs)
    properties = schema.get("properties")
    if isinstance(value, dict) and isinstance(properties, dict):
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        for name, sub in properties.items():
            if name not in value:
                continue
            if value[name] is None and name not in required and not _admits_null(sub, defs):
                del value[name]
            else:
                value[name] = strip_added_nulls(value[name], sub, defs)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        for i, item in enumerate(value):
            value[i] = strip_added_nulls(item, items, defs)
    return value


# ---------------------------------------------------------------------------------------- response formats


@functools.cache
def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's own JSON schema (pydantic's), built once: read-only."""
    return model.model_json_schema()


@functools.cache
def _closed_schema(model: type[BaseModel]) -> dict[str, Any]:
    return to_strict_schema(model_schema(model))


@functools.cache
def model_adds_nulls(model: type[BaseModel]) -> bool:
    """Whether the strict form of ``model``'s schema lets a field be ``null`` that the model itself does not
    (a field with a default): its answers then go through :func:`strip_added_nulls` before validation."""
    original = model_schema(model)
    defs = {**original.get("$defs", {}), "#": original}
    for _, node in _nodes(original):
        if isinstance(node, dict) and isinstance(node.get("properties"), dict):
            required = set(node.get("required") or [])
            if any(name not in required and not _admits_null(sub, defs) for name, sub in node["properties"].items()):
                return True
    return False


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in strict form; built once per model (a copy is returned)."""
    return copy.deepcopy(_closed_schema(model))


@functools.cache
def response_format_for(model: type[BaseModel], strict: bool = True) -> dict[str, Any]:
    """The ``response_format`` payload of a model, built once and shared by every request: read-only."""
    return json_schema_response_format(model.__name__, schema_for(model), strict=strict)


def json_schema_response_format(name: str, schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The standard OpenAI payload."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


def data_response_format(name: str, schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The payload for a schema that is data (an API's result schema): its strict form with ``strict: true``
    when it has one (see :func:`to_strict_schema`), else the schema as it is with ``strict: false`` (the
    answer is validated against it afterwards either way). ``strict=False`` always sends the latter."""
    if strict:
        try:
            return json_schema_response_format(name, to_strict_schema(schema))
        except NotStrict:
            pass
    return json_schema_response_format(name, schema, strict=False)
