"""Parameter schemas in the dialects datasets use, read as JSON Schema.

- JSON Schema: ``object``, ``number``, ``integer``, ``string``, ``boolean``, ``array``, ``null``.
- The BFCL / ToolACE dialect: ``dict``, ``float``, ``int``, ``str``, ``bool``, ``tuple``, ``any``, a tool's
  ``"required": null``.
- xLAM's Python-ish type strings: ``str, optional``, ``List[int]``, ``Dict[str, Any]``, ``Optional[float]``,
  ``Union[int, str]``.

:func:`to_json_schema` rewrites any of them to JSON Schema (a new object, the input is not changed) and
:func:`unknown_types` lists the type names it could not read, so a check can say which one is wrong.
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
_GENERIC = re.compile(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$")
_OPTIONAL_SUFFIX = re.compile(r",\s*(optional|default\s*[:=].*)$", re.IGNORECASE)
# Keywords whose values are schemas (walked), or maps / lists of schemas.
_SCHEMA_KEYS = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


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


def type_string_schema(name: str) -> dict[str, Any] | None:
    """JSON Schema for one type name of any dialect; None when it cannot be read."""
    text = _OPTIONAL_SUFFIX.sub("", name.strip())
    generic = _GENERIC.match(text)
    if generic:
        outer, inner = generic.group(1).lower(), _split_top(generic.group(2))
        if outer in ("list", "set", "sequence", "iterable") and len(inner) == 1:
            items = type_string_schema(inner[0])
            return None if items is None else {"type": "array", "items": items}
        if outer == "tuple":
            return {"type": "array"}
        if outer in ("dict", "mapping"):
            return {"type": "object"}
        if outer == "optional" and len(inner) == 1:
            return type_string_schema(inner[0])
        if outer == "union":
            schemas = [type_string_schema(p) for p in inner]
            return None if any(s is None for s in schemas) else _union(schemas)  # type: ignore[arg-type]
        return None
    alternatives = _split_top(text)
    if len(alternatives) > 1:
        schemas = [type_string_schema(p) for p in alternatives]
        return None if any(s is None for s in schemas) else _union(schemas)  # type: ignore[arg-type]
    key = text.lower()
    if key not in DIALECT_TYPES:
        return None
    mapped = DIALECT_TYPES[key]
    return {} if mapped is None else {"type": mapped}


def _union(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    if any("type" not in s for s in schemas):
        return {}
    if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
        return {"type": list(dict.fromkeys(s["type"] for s in schemas))}
    return {"anyOf": schemas}


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
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            converted, bad = _convert_type(value)
            unknown.extend(bad)
            for k, v in converted.items():
                if k == "items" and "items" in schema:
                    continue  # the schema's own items win
                out[k] = v
        elif key == "required" and value is None:
            continue  # the ToolACE dialect's "required": null
        elif key in _SCHEMA_KEYS:
            out[key] = _walk(value, unknown)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(sub, unknown) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_walk(sub, unknown) for sub in value]
        else:
            out[key] = value
    if isinstance(out.get("properties"), dict):
        _lift_property_required(out)
    return out


def _lift_property_required(schema: dict[str, Any]) -> None:
    """Old-style ``"required": true`` on a property becomes an entry of the parent's ``required``."""
    required = list(schema.get("required") or []) if isinstance(schema.get("required"), list) else []
    for name, prop in schema["properties"].items():
        if isinstance(prop, dict) and isinstance(prop.get("required"), bool):
            if prop.pop("required") and name not in required:
                required.append(name)
    if required or "required" in schema:
        schema["required"] = required


def to_json_schema(schema: Any) -> Any:
    """The schema in plain JSON Schema, whatever dialect it was written in."""
    return _walk(schema, [])


def unknown_types(schema: Any) -> list[str]:
    """Type names in the schema that no dialect defines (``"strnig"``, ``"datetime"`` ...)."""
    unknown: list[str] = []
    _walk(schema, unknown)
    return unknown
