"""Parameter schemas in the dialects datasets use: the one place that reads and writes them.

The dialects:

- JSON Schema: ``object``, ``number``, ``integer``, ``string``, ``boolean``, ``array``, ``null``.
- The BFCL / ToolACE dialect: ``dict``, ``float``, ``int``, ``str``, ``bool``, ``tuple``, ``any``, a tool's
  ``"required": null``. ToolACE's own data mixes it with JSON Schema (``dict``/``float``/``int`` next to
  ``string``/``boolean``/``array``).
- xLAM's flat parameters ``{"param": {"type": "str, optional", "description", "default"}}`` with Python-ish type
  strings: ``List[int]``, ``Dict[str, Any]``, ``Tuple[int, str]``, ``Optional[float]``, ``Union[int, str]``,
  ``int | None``.

Reading: :func:`to_json_schema` rewrites any of them to JSON Schema (a new object, the input is not changed),
:func:`parameters_schema` does it for a tool's parameters (a flat xLAM map included), :func:`unknown_types`
lists the type names it could not read (so a check can say which one is wrong) and :func:`xlam_to_schema` turns
xLAM's flat map into an object schema. Writing: :func:`to_toolace_dialect`,
:func:`to_bfcl_dialect` (for BFCL's checker) and :func:`schema_to_xlam`. The importer
(:mod:`tasks.apis.importing`), the dataset readers and writers (:mod:`tasks.formats.dataset_formats`,
:mod:`tasks.formats.call_format`), the BFCL items of our dialogs (:mod:`tasks.evaluation.bfcl_eval`) and
``toolace verify`` (:mod:`tasks.verification.rules`) all go through these functions, so they agree on every case below.

Decisions:

- **Optional in xLAM.** A flat xLAM parameter is optional when its type says so (``"int, optional"``,
  ``"Optional[int]"``, ``"int, default=5"``) *or* it has a ``default`` (that is how xLAM's own data uses
  defaults); an explicit ``"required": true/false`` (or ``"optional": true``) on the parameter wins over both.
  The same rule holds on import, on reading an ``xlam`` dataset row and so in ``verify``'s required-parameter
  check. Written back to xLAM, a parameter that is neither required nor defaulted gets ``", optional"`` on its
  type; "required, with a default" cannot be said in xLAM and comes back optional.
- **Optional[X] is optionality, not null.** ``Optional[float]`` reads as ``{"type": "number"}`` (and, as an
  xLAM parameter type, marks the parameter optional); a union with ``None`` written out (``int | None``,
  ``Union[int, None]``) reads as ``{"type": ["integer", "null"]}``.
- **Tuples.** ``Tuple[int, str]`` is ``{"type": "array", "prefixItems": [{"type": "integer"},
  {"type": "string"}], "minItems": 2, "maxItems": 2}``; ``Tuple[int, ...]`` is an array of integers; a bare
  ``tuple`` (BFCL) is ``{"type": "array"}``; an old-style ``"items": [a, b]`` list becomes ``"prefixItems"``.
- **Other type strings.** ``List[X]`` is an array of ``X``; ``Dict[str, V]`` is an object whose
  ``additionalProperties`` are ``V`` (plain ``{"type": "object"}`` when ``V`` is ``Any``); a union of plain types
  is a ``type`` list, a union with a compound member is ``anyOf``; ``any`` is no ``type`` at all. A name no
  dialect defines (``datetime``) is kept as written and named by :func:`unknown_types`; the importer rejects
  such an API and ``verify`` such a sample, with that name.
- **Data is never renamed.** Only schema positions are rewritten: the values of ``default``, ``enum``,
  ``const``, ``examples`` and ``example`` (and property *names*, such as a property called ``type``) are copied
  as they are in every direction.
- **Writing BFCL** (the items self-guidance scores with BFCL's checker) is JSON Schema with ``object``/``number``
  renamed ``dict``/``float`` and ``{"type": "any"}`` items on an array that has none.
- **Writing ToolACE** is JSON Schema with ``object``/``number``/``integer`` renamed ``dict``/``float``/``int``
  (what ToolACE's data does; ``string``/``boolean``/``array`` stay), so ``tuple`` becomes ``array`` and ``any``
  no type. **Writing xLAM** keeps a type already written as a Python-ish name and turns a JSON Schema property
  into a type string when the string reads back to exactly the same schema (``integer`` -> ``int``, an array of
  strings -> ``List[str]``, the tuple above -> ``Tuple[int, str]``); otherwise the property stays JSON Schema,
  which every reader here accepts.
- ``"required": null`` (ToolACE) is dropped; a property's own boolean ``"required"`` (old JSON Schema drafts)
  or ``"optional": true`` is folded into its parent's ``required`` list.
"""

from __future__ import annotations

import re
from typing import Any

JSON_TYPES = frozenset({"object", "number", "integer", "string", "boolean", "array", "null"})
DIALECT_TYPES: dict[str, str | None] = {
    "dict": "object", "float": "number", "double": "number", "int": "integer", "long": "integer",
    "str": "string", "bool": "boolean", "tuple": "array", "list": "array", "any": None, "none": "null",
    "object": "object", "number": "number", "integer": "integer", "string": "string", "boolean": "boolean",
    "array": "array", "null": "null", "set": "array", "hashmap": "object", "char": "string",
}
# Keywords whose values are data, never schemas: nothing inside them is renamed or read as a type.
DATA_KEYWORDS = frozenset({"default", "enum", "const", "examples", "example"})
# Keywords whose values are schemas (walked), or maps / lists of schemas.
SCHEMA_KEYWORDS = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then",
                             "else", "additionalItems", "unevaluatedItems", "unevaluatedProperties", "contentSchema"})
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
TOOLACE_NAMES = {"object": "dict", "number": "float", "integer": "int"}
BFCL_NAMES = {"object": "dict", "number": "float"}  # BFCL's checker reads "integer", "string", "array" ...
# JSON Schema types as xLAM's Python-ish names.
_PYTHON_NAMES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "object": "dict",
                 "array": "List", "null": "None"}
# The keywords a type string can stand for (what is replaced when a property is written as one).
_TYPE_KEYWORDS = ("type", "items", "prefixItems", "minItems", "maxItems", "additionalProperties", "anyOf")
# What an object schema (not xLAM's flat map) may hold at its top level.
_OBJECT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "patternProperties",
                              "description", "title", "$schema", "$id", "$defs", "definitions", "$comment",
                              "minProperties", "maxProperties", "propertyNames", "dependentRequired",
                              "dependentSchemas", "unevaluatedProperties", "allOf", "anyOf", "oneOf", "not", "if",
                              "then", "else", "$ref", "default", "examples", "enum", "const"})
_GENERIC = re.compile(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$")
_OPTIONAL_SUFFIX = re.compile(r",\s*(optional|default\s*[:=].*)$", re.IGNORECASE)
_OPTIONAL_WORD = re.compile(r",\s*optional\s*$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------- type strings


def _split_top(text: str) -> list[str]:
    """``"int, List[str]"`` -> ``["int", "List[str]"]`` (commas inside brackets kept)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char in ",|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def _union(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    if any(not s for s in schemas):
        return {}
    if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
        return {"type": list(dict.fromkeys(s["type"] for s in schemas))}
    return {"anyOf": schemas}


def _all_read(names: list[str]) -> list[dict[str, Any]] | None:
    schemas = [type_string_schema(n) for n in names]
    return None if any(s is None for s in schemas) else schemas  # type: ignore[return-value]


def _generic_schema(outer: str, inner: list[str]) -> dict[str, Any] | None:
    """``Outer[inner, ...]`` as JSON Schema; None when it cannot be read."""
    if outer in ("list", "set", "sequence", "iterable") and len(inner) == 1:
        items = type_string_schema(inner[0])
        return None if items is None else {"type": "array", "items": items}
    if outer == "tuple":
        if len(inner) == 2 and inner[1] == "...":
            items = type_string_schema(inner[0])
            return None if items is None else {"type": "array", "items": items}
        members = _all_read(inner)
        if members is None:
            return None
        return {"type": "array", "prefixItems": members, "minItems": len(members), "maxItems": len(members)} \
            if members else {"type": "array"}
    if outer in ("dict", "mapping"):
        if len(inner) != 2:
            return {"type": "object"}
        values = type_string_schema(inner[1])
        if values is None:
            return None
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    if outer == "optional" and len(inner) == 1:
        return type_string_schema(inner[0])
    if outer == "union":
        members = _all_read(inner)
        return None if members is None else _union(members)
    return None


def type_string_schema(name: str) -> dict[str, Any] | None:
    """JSON Schema for one type name of any dialect; None when it cannot be read."""
    text = _OPTIONAL_SUFFIX.sub("", name.strip())
    generic = _GENERIC.match(text)
    if generic:
        return _generic_schema(generic.group(1).lower(), _split_top(generic.group(2)))
    alternatives = _split_top(text)
    if len(alternatives) > 1:
        members = _all_read(alternatives)
        return None if members is None else _union(members)
    key = text.lower()
    if key not in DIALECT_TYPES:
        return None
    mapped = DIALECT_TYPES[key]
    return {} if mapped is None else {"type": mapped}


def type_says_optional(name: str) -> bool:
    """Whether a type string marks its parameter optional: ``"int, optional"``, ``"int, default=5"`` or
    ``"Optional[int]"``."""
    text = name.strip()
    generic = _GENERIC.match(text)
    return bool(_OPTIONAL_SUFFIX.search(text)) or (generic is not None and generic.group(1).lower() == "optional")


def python_type_string(schema: dict[str, Any]) -> str | None:
    """A JSON Schema type as an xLAM type string (``List[int]``, ``Tuple[int, str]`` ...); None when there is no
    such string. The caller checks that it reads back the same (:func:`type_string_schema`)."""
    if not schema:
        return "Any"
    if set(schema) == {"anyOf"} and isinstance(schema["anyOf"], list):
        parts = [python_type_string(s) if isinstance(s, dict) else None for s in schema["anyOf"]]
        return None if None in parts else f"Union[{', '.join(parts)}]"  # type: ignore[arg-type]
    kind = schema.get("type")
    if isinstance(kind, list):
        parts = [_PYTHON_NAMES.get(k) if isinstance(k, str) else None for k in kind]
        return None if None in parts else f"Union[{', '.join(parts)}]"  # type: ignore[arg-type]
    if not isinstance(kind, str):
        return None
    if kind == "array" and isinstance(schema.get("prefixItems"), list):
        parts = [python_type_string(s) if isinstance(s, dict) else None for s in schema["prefixItems"]]
        return None if None in parts else f"Tuple[{', '.join(parts)}]"  # type: ignore[arg-type]
    if kind == "array" and isinstance(schema.get("items"), dict):
        inner = python_type_string(schema["items"])
        return None if inner is None else f"List[{inner}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = python_type_string(schema["additionalProperties"])
        return None if inner is None else f"Dict[str, {inner}]"
    return _PYTHON_NAMES.get(kind)


# ------------------------------------------------------------------------------------------ to JSON Schema


def _convert_type(value: Any) -> tuple[dict[str, Any], list[str]]:
    """What a ``type`` value becomes (keys to merge) and the names that could not be read."""
    if isinstance(value, str):
        schema = type_string_schema(value)
        return ({"type": value}, [value]) if schema is None else (schema, [])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        schemas = [type_string_schema(v) for v in value]
        unknown = [v for v, s in zip(value, schemas, strict=True) if s is None]
        if unknown:
            return {"type": value}, unknown
        return _union(schemas), []  # type: ignore[arg-type]
    return {"type": value}, [repr(value)]


def _walk(schema: Any, unknown: list[str]) -> Any:
    if not isinstance(schema, dict):
        return schema
    own = set(schema) | ({"prefixItems"} if isinstance(schema.get("items"), list) else set())
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            converted, bad = _convert_type(value)
            unknown.extend(bad)
            out.update({k: v for k, v in converted.items() if k == "type" or k not in own})  # own keywords win
        elif key == "required" and value is None:
            continue  # the ToolACE dialect's "required": null
        elif key in DATA_KEYWORDS:
            out[key] = value
        elif key == "items" and isinstance(value, list):
            out["prefixItems"] = [_walk(sub, unknown) for sub in value]  # the pre-2020 tuple form
        elif key in SCHEMA_KEYWORDS:
            out[key] = _walk(value, unknown)
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(sub, unknown) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_walk(sub, unknown) for sub in value]
        else:
            out[key] = value
    if isinstance(out.get("properties"), dict):
        _lift_property_required(out)
    return out


def _lift_property_required(schema: dict[str, Any]) -> None:
    """A property's own boolean ``required`` (old drafts) or ``"optional": true`` folded into the parent's
    ``required`` list."""
    required = list(schema["required"]) if isinstance(schema.get("required"), list) else []
    for name, prop in schema["properties"].items():
        if not isinstance(prop, dict):
            continue
        flag = prop.pop("required") if isinstance(prop.get("required"), bool) else None
        if isinstance(prop.get("optional"), bool) and prop.pop("optional"):
            required = [r for r in required if r != name]
        elif flag and name not in required:
            required.append(name)
    if required or "required" in schema:
        schema["required"] = required


def to_json_schema(schema: Any) -> Any:
    """The schema in plain JSON Schema, whatever dialect it was written in."""
    return _walk(schema, [])


def unknown_types(schema: Any) -> list[str]:
    """Type names in the schema (or a tool's flat xLAM parameters) that no dialect defines (``"strnig"``,
    ``"datetime"`` ...)."""
    unknown: list[str] = []
    _walk(xlam_to_schema(schema), unknown)
    return unknown


def parameters_schema(parameters: Any) -> Any:
    """A tool's parameters in plain JSON Schema, whatever dialect they were written in, xLAM's flat map
    included (:func:`xlam_to_schema`, then :func:`to_json_schema`)."""
    return to_json_schema(xlam_to_schema(parameters))


# ------------------------------------------------------------------------------------------ ToolACE, BFCL


def _renamed(schema: Any, names: dict[str, str], any_items: bool = False) -> Any:
    """The schema with ``type`` values renamed by ``names``, in schema positions only; with ``any_items``, an
    array without an ``items`` schema gets ``{"type": "any"}`` ones."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = names.get(value, value)
        elif key == "type" and isinstance(value, list):
            out[key] = [names.get(v, v) if isinstance(v, str) else v for v in value]
        elif key in DATA_KEYWORDS:
            out[key] = value
        elif key in SCHEMA_KEYWORDS:
            out[key] = _renamed(value, names, any_items)
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _renamed(sub, names, any_items) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_renamed(sub, names, any_items) for sub in value]
        else:
            out[key] = value
    if any_items and out.get("type") == "array" and not isinstance(out.get("items"), dict):
        out["items"] = {"type": "any"}
    return out


def to_toolace_dialect(schema: Any) -> Any:
    """A tool's parameters (any dialect) in ToolACE's: JSON Schema with ``object``/``number``/``integer`` written
    ``dict``/``float``/``int``."""
    return _renamed(parameters_schema(schema), TOOLACE_NAMES)


def to_bfcl_dialect(schema: Any) -> Any:
    """A tool's parameters (any dialect) as BFCL's checker reads them: JSON Schema with ``object``/``number``
    written ``dict``/``float`` (``integer``, ``string``, ``boolean``, ``array`` stay) and ``{"type": "any"}``
    items on an array without an ``items`` schema (the checker reads the item type)."""
    return _renamed(parameters_schema(schema), BFCL_NAMES, any_items=True)


# --------------------------------------------------------------------------------------------------- xLAM


def is_flat_parameters(parameters: Any) -> bool:
    """Whether ``parameters`` is xLAM's flat ``{"param": {...}}`` map rather than a schema."""
    if not isinstance(parameters, dict) or not parameters:
        return False
    if isinstance(parameters.get("type"), str):
        return False
    if isinstance(parameters.get("properties"), dict) and set(parameters) <= _OBJECT_KEYWORDS:
        return False
    return all(isinstance(spec, dict) for spec in parameters.values())


def _xlam_required(spec: dict[str, Any], explicit: Any, optional_flag: Any) -> bool:
    if isinstance(explicit, bool):
        return explicit
    if optional_flag is True:
        return False
    kind = spec.get("type")
    return not (isinstance(kind, str) and type_says_optional(kind)) and "default" not in spec


def xlam_to_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """xLAM's flat ``{"param": {"type": "str, optional", ...}}`` as ``{"type": "dict", "properties", "required"}``
    (types kept as written, less ``", optional"``); anything that is not a flat map is returned as it is. A
    parameter is required unless its type says optional or it has a ``default``; an explicit ``required``
    (or ``"optional": true``) on it wins."""
    if not is_flat_parameters(parameters):
        return parameters
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, raw in parameters.items():
        spec = {k: v for k, v in raw.items() if not (k in ("required", "optional") and isinstance(v, bool))}
        if _xlam_required(spec, raw.get("required"), raw.get("optional")):
            required.append(name)
        if isinstance(spec.get("type"), str) and _OPTIONAL_WORD.search(spec["type"]):
            spec["type"] = _OPTIONAL_WORD.sub("", spec["type"]).rstrip()
        properties[name] = spec
    return {"type": "dict", "properties": properties, "required": required}


def _xlam_property(spec: dict[str, Any]) -> dict[str, Any]:
    """One property with its JSON Schema type written as an xLAM type string, when that string reads back to
    exactly the same schema; a Python-ish type already there, or no type, is kept."""
    kind = spec.get("type")
    if kind is None or (isinstance(kind, str) and kind.strip().lower() not in JSON_TYPES):
        return spec
    schema = to_json_schema(spec)
    typed = {k: schema[k] for k in _TYPE_KEYWORDS if k in schema}
    name = python_type_string(typed)
    if name is None or type_string_schema(name) != typed:
        return spec
    return {k: (name if k == "type" else v) for k, v in spec.items() if k == "type" or k not in _TYPE_KEYWORDS}


def schema_to_xlam(parameters: dict[str, Any]) -> dict[str, Any]:
    """An object schema (any dialect) as xLAM's flat parameter map; other shapes as they are. A parameter that
    is neither required nor defaulted gets ``", optional"`` on its type (``"Any, optional"`` when it has none)."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    required = set(parameters["required"]) if isinstance(parameters.get("required"), list) else set()
    flat: dict[str, Any] = {}
    for name, spec in properties.items():
        if isinstance(spec, dict):
            spec = _xlam_property(spec)
            kind = spec.get("type")
            if name not in required and "default" not in spec:
                if isinstance(kind, str) and not type_says_optional(kind):
                    spec = {**spec, "type": kind + ", optional"}
                elif kind is None:
                    spec = {"type": "Any, optional", **spec}
        flat[name] = spec
    return flat
