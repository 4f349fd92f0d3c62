"""Parameter schemas in JSON Schema, the BFCL/ToolACE dialect and xLAM's type strings."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tasks.formats.type_dialects import to_json_schema, type_string_schema, unknown_types

TOOLACE = {"type": "dict", "properties": {
    "a": {"type": "float"}, "b": {"type": "int"}, "c": {"type": "str"}, "d": {"type": "bool"},
    "e": {"type": "tuple", "items": {"type": "int"}}, "f": {"type": "any"},
    "g": {"type": "array", "items": {"type": "dict", "properties": {"x": {"type": "float"}}}},
    "h": {"type": "dict", "additionalProperties": {"type": "str"}}}, "required": ["a"]}


def test_bfcl_toolace_dialect_becomes_json_schema() -> None:
    schema = to_json_schema(TOOLACE)
    props = schema["properties"]
    assert schema["type"] == "object" and schema["required"] == ["a"]
    assert [props[k].get("type") for k in "abcdefgh"] == ["number", "integer", "string", "boolean", "array", None,
                                                           "array", "object"]
    assert props["e"]["items"] == {"type": "integer"}
    assert props["g"]["items"]["properties"]["x"] == {"type": "number"}
    assert props["h"]["additionalProperties"] == {"type": "string"}
    Draft202012Validator.check_schema(schema)
    assert TOOLACE["properties"]["a"] == {"type": "float"}  # input untouched
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"a": 3, "f": {"any": "thing"}})  # int accepted where float is declared
    assert not validator.is_valid({"a": "3"})


def test_required_null_and_per_property_required() -> None:
    assert "required" not in to_json_schema({"type": "dict", "properties": {}, "required": None})
    schema = to_json_schema({"type": "object", "properties": {"q": {"type": "string", "required": True},
                                                              "n": {"type": "integer", "required": False}}})
    assert schema["required"] == ["q"] and "required" not in schema["properties"]["q"]


@pytest.mark.parametrize(("name", "expected"), [
    ("str, optional", {"type": "string"}), ("int, default=5", {"type": "integer"}),
    ("List[int]", {"type": "array", "items": {"type": "integer"}}),
    ("List[Dict[str, Any]]", {"type": "array", "items": {"type": "object"}}),
    ("Optional[float]", {"type": "number"}), ("Union[int, str]", {"type": ["integer", "string"]}),
    ("int | None", {"type": ["integer", "null"]}), ("tuple", {"type": "array"}), ("any", {}),
    ("Tuple[int, int]", {"type": "array", "prefixItems": [{"type": "integer"}] * 2, "minItems": 2, "maxItems": 2}),
    ("Tuple[int, ...]", {"type": "array", "items": {"type": "integer"}}),
    ("Dict[str, int]", {"type": "object", "additionalProperties": {"type": "integer"}}),
    ("Union[List[int], str]", {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}]}),
])
def test_xlam_type_strings(name: str, expected: dict) -> None:
    assert type_string_schema(name) == expected


def test_unknown_types_are_named() -> None:
    schema = {"type": "dict", "properties": {"a": {"type": "strnig"}, "b": {"type": "List[datetime]"},
                                             "c": {"type": ["string", "nope"]}, "d": {"type": 5}}}
    assert unknown_types(schema) == ["strnig", "List[datetime]", "nope", "5"]
    assert unknown_types(TOOLACE) == []
