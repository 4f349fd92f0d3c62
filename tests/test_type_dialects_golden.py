"""Golden round trips of parameter types through every dialect, pinning the cases the readers once disagreed on.

For each case: the exact JSON Schema read from each dialect, the exact dialect written back, and that the
importer (``tasks.apis.importing``), dataset conversion (``sample_from_row`` / ``row_from_sample``) and ``toolace
verify`` (``tasks.verification.rules``) read the same schema. The rules are in :mod:`tasks.formats.type_dialects`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from schemas.records import APISpec
from schemas.samples import Sample
from tasks.apis.importing import apis_from_function_list
from tasks.formats.call_format import TOOLACE_SYSTEM_PROMPT, toolace_tool
from tasks.formats.dataset_formats import row_from_sample, sample_from_row
from tasks.formats.type_dialects import (
    schema_to_xlam,
    to_bfcl_dialect,
    to_json_schema,
    to_toolace_dialect,
    type_string_schema,
    unknown_types,
    xlam_to_schema,
)
from tasks.verification.rules import Context, RuleLimits, check_argument_values
from toolace.cli import app

# ------------------------------------------------------------------------------------------------ the cases

# (a) xLAM: a default makes a parameter optional, like ", optional" and Optional[...]; an explicit "required" wins.
XLAM_OPTIONAL = {
    "city": {"type": "str", "description": "City"},
    "units": {"type": "str", "description": "Units", "default": "C"},
    "days": {"type": "int, optional", "description": "Days"},
    "ratio": {"type": "Optional[float]", "description": "Ratio"},
    "strict": {"type": "bool", "default": True, "required": True},
}
XLAM_OPTIONAL_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "description": "City"},
    "units": {"type": "string", "description": "Units", "default": "C"},
    "days": {"type": "integer", "description": "Days"},
    "ratio": {"type": "number", "description": "Ratio"},
    "strict": {"type": "boolean", "default": True}}, "required": ["city", "strict"]}
XLAM_OPTIONAL_TOOLACE = {"type": "dict", "properties": {
    "city": {"type": "string", "description": "City"},
    "units": {"type": "string", "description": "Units", "default": "C"},
    "days": {"type": "int", "description": "Days"},
    "ratio": {"type": "float", "description": "Ratio"},
    "strict": {"type": "boolean", "default": True}}, "required": ["city", "strict"]}
# Written back: types kept as written, ", optional" where neither required nor defaulted; "required, with a
# default" cannot be said in xLAM, so "strict" loses its explicit flag (and reads back optional).
XLAM_OPTIONAL_BACK = {
    "city": {"type": "str", "description": "City"},
    "units": {"type": "str", "description": "Units", "default": "C"},
    "days": {"type": "int, optional", "description": "Days"},
    "ratio": {"type": "Optional[float]", "description": "Ratio"},
    "strict": {"type": "bool", "default": True},
}

# (b) Tuple[int, str] is prefixItems with a fixed length, everywhere.
PAIR_SCHEMA = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2,
               "maxItems": 2}
XLAM_TUPLE = {"pair": {"type": "Tuple[int, str]", "description": "Pair"},
              "many": {"type": "Tuple[float, ...]", "description": "Many"},
              "loose": {"type": "tuple, optional", "description": "Loose"}}
XLAM_TUPLE_SCHEMA = {"type": "object", "properties": {
    "pair": {**PAIR_SCHEMA, "description": "Pair"},
    "many": {"type": "array", "items": {"type": "number"}, "description": "Many"},
    "loose": {"type": "array", "description": "Loose"}}, "required": ["pair", "many"]}
XLAM_TUPLE_TOOLACE = {"type": "dict", "properties": {
    "pair": {"type": "array", "prefixItems": [{"type": "int"}, {"type": "string"}], "minItems": 2, "maxItems": 2,
             "description": "Pair"},
    "many": {"type": "array", "items": {"type": "float"}, "description": "Many"},
    "loose": {"type": "array", "description": "Loose"}}, "required": ["pair", "many"]}
# The same tuple from JSON Schema written to xLAM: a type string that reads back to exactly the same schema.
XLAM_TUPLE_FROM_JSON = {"pair": {"type": "Tuple[int, str]", "description": "Pair"},
                        "many": {"type": "List[float]", "description": "Many"},
                        "loose": {"type": "List, optional", "description": "Loose"}}

# (c) A "type" key inside default / enum / const / examples is data: never renamed, in any direction.
TOOLACE_DATA = {"type": "dict", "properties": {
    "filter": {"type": "dict", "properties": {"type": {"type": "string", "enum": ["dict", "float"]}},
               "default": {"type": "dict"}, "examples": [{"type": "int"}]},
    "shape": {"type": "any", "const": {"type": "object"}},
    "kinds": {"type": "array", "items": {"type": "dict"}, "enum": [[{"type": "number"}]]}},
    "required": ["filter"]}
DATA_SCHEMA = {"type": "object", "properties": {
    "filter": {"type": "object", "properties": {"type": {"type": "string", "enum": ["dict", "float"]}},
               "default": {"type": "dict"}, "examples": [{"type": "int"}]},
    "shape": {"const": {"type": "object"}},
    "kinds": {"type": "array", "items": {"type": "object"}, "enum": [[{"type": "number"}]]}},
    "required": ["filter"]}
DATA_TOOLACE = {"type": "dict", "properties": {
    "filter": {"type": "dict", "properties": {"type": {"type": "string", "enum": ["dict", "float"]}},
               "default": {"type": "dict"}, "examples": [{"type": "int"}]},
    "shape": {"const": {"type": "object"}},
    "kinds": {"type": "array", "items": {"type": "dict"}, "enum": [[{"type": "number"}]]}},
    "required": ["filter"]}
DATA_XLAM = {
    "filter": {"type": "dict", "properties": {"type": {"type": "string", "enum": ["dict", "float"]}},
               "default": {"type": "dict"}, "examples": [{"type": "int"}]},
    "shape": {"type": "any, optional", "const": {"type": "object"}},  # a name already Python-ish is kept
    "kinds": {"type": "List[dict], optional", "enum": [[{"type": "number"}]]},
}


# --------------------------------------------------------------------------------------------------- helpers


def xlam_row(parameters: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": 1, "query": "Do it.",
            "tools": json.dumps([{"name": "f", "description": "A tool", "parameters": parameters}]),
            "answers": json.dumps([{"name": "f", "arguments": arguments}])}


def toolace_row(parameters: dict[str, Any]) -> dict[str, Any]:
    tools = [{"name": "f", "description": "A tool", "parameters": parameters, "required": None}]
    return {"system": TOOLACE_SYSTEM_PROMPT + json.dumps(tools),
            "conversations": [{"from": "user", "value": "Do it."}, {"from": "assistant", "value": "[f()]"}]}


def written(sample: Sample, fmt: str) -> dict[str, Any]:
    """The first tool's parameters as the writer of ``fmt`` writes them."""
    row = json.loads(json.dumps(row_from_sample(sample, fmt)))  # type: ignore[arg-type]
    if fmt == "openai":
        return row["tools"][0]["function"]["parameters"]
    if fmt == "toolace":
        return json.loads(row["system"][len(TOOLACE_SYSTEM_PROMPT):])[0]["parameters"]
    if fmt == "xlam":
        return json.loads(row["tools"])[0]["parameters"]
    return row["function"][0]["parameters"]


def imported(parameters: dict[str, Any]) -> dict[str, Any]:
    [api] = apis_from_function_list([{"name": "f", "description": "A tool", "parameters": parameters}], "golden")
    assert api.accepted, api.reason
    return api.parameters


def verified(sample: Sample) -> dict[str, Any]:
    """The schema ``verify`` checks the calls against."""
    tool = Context.of(sample, RuleLimits()).tools["f"]
    assert tool.schema_error is None
    return tool.schema


# ------------------------------------------------------------------------------------------ (a) xLAM optional


def test_xlam_default_means_optional_everywhere() -> None:
    assert xlam_to_schema(XLAM_OPTIONAL)["required"] == ["city", "strict"]
    assert to_json_schema(xlam_to_schema(XLAM_OPTIONAL)) == XLAM_OPTIONAL_SCHEMA
    assert imported(XLAM_OPTIONAL) == XLAM_OPTIONAL_SCHEMA  # the importer
    sample = sample_from_row(xlam_row(XLAM_OPTIONAL, {"city": "Oslo", "strict": False}), "xlam", 0)
    assert sample.problems == []
    assert verified(sample) == XLAM_OPTIONAL_SCHEMA  # verify
    assert written(sample, "openai") == XLAM_OPTIONAL_SCHEMA  # dataset conversion
    assert written(sample, "toolace") == XLAM_OPTIONAL_TOOLACE
    assert written(sample, "xlam") == XLAM_OPTIONAL_BACK
    Draft202012Validator.check_schema(XLAM_OPTIONAL_SCHEMA)


def test_xlam_optional_from_json_schema_and_back() -> None:
    openai = sample_from_row({"tools": [{"type": "function", "function": {
        "name": "f", "description": "A tool", "parameters": XLAM_OPTIONAL_SCHEMA}}],
        "messages": [{"role": "user", "content": "Do it."}]}, "openai", 0)
    flat = written(openai, "xlam")
    assert flat == {"city": {"type": "str", "description": "City"},
                    "units": {"type": "str", "description": "Units", "default": "C"},
                    "days": {"type": "int, optional", "description": "Days"},
                    "ratio": {"type": "float, optional", "description": "Ratio"},
                    "strict": {"type": "bool", "default": True}}
    assert schema_to_xlam(XLAM_OPTIONAL_SCHEMA) == flat
    # read back: the same schema, less "strict"'s required (a default makes it optional in xLAM)
    assert to_json_schema(xlam_to_schema(flat)) == {**XLAM_OPTIONAL_SCHEMA, "required": ["city"]}


def test_verify_required_check_follows_the_same_rule(tmp_path: Path) -> None:
    rows = [xlam_row(XLAM_OPTIONAL, {"city": "Oslo", "strict": True}),  # the defaulted and optional ones omitted
            xlam_row(XLAM_OPTIONAL, {"strict": True}),  # "city" is required
            xlam_row(XLAM_OPTIONAL, {"city": "Oslo"})]  # "strict" is required: explicitly, despite its default
    path = tmp_path / "xlam.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["verify", str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    required = [[f["reason"] for f in v["failures"] if f["check"] == "required_params_v1"] for v in verdicts]
    assert required == [[], ["f misses required parameter(s) city"], ["f misses required parameter(s) strict"]]
    assert all(f["check"] != "tool_schema_v1" for v in verdicts for f in v["failures"])


# ------------------------------------------------------------------------------------------------ (b) tuples


@pytest.mark.parametrize(("name", "expected"), [
    ("Tuple[int, str]", PAIR_SCHEMA), ("Tuple[int,str]", PAIR_SCHEMA), ("tuple[int, str]", PAIR_SCHEMA),
    ("Tuple[int, str], optional", PAIR_SCHEMA), ("Optional[Tuple[int, str]]", PAIR_SCHEMA),
    ("Tuple[float, ...]", {"type": "array", "items": {"type": "number"}}),
    ("tuple", {"type": "array"}), ("Tuple", {"type": "array"}),
    ("List[Tuple[int, str]]", {"type": "array", "items": PAIR_SCHEMA}),
])
def test_tuple_type_strings(name: str, expected: dict[str, Any]) -> None:
    assert type_string_schema(name) == expected


def test_tuple_everywhere() -> None:
    assert to_json_schema(xlam_to_schema(XLAM_TUPLE)) == XLAM_TUPLE_SCHEMA
    assert imported(XLAM_TUPLE) == XLAM_TUPLE_SCHEMA
    sample = sample_from_row(xlam_row(XLAM_TUPLE, {"pair": [1, "a"], "many": [1.5]}), "xlam", 0)
    assert sample.problems == []
    assert verified(sample) == XLAM_TUPLE_SCHEMA
    assert written(sample, "openai") == XLAM_TUPLE_SCHEMA
    assert written(sample, "toolace") == XLAM_TUPLE_TOOLACE
    assert written(sample, "xlam") == XLAM_TUPLE  # written back as it was
    # ToolACE's dialect and JSON Schema read back the same; JSON Schema is written to xLAM as type strings
    toolace = sample_from_row(toolace_row(XLAM_TUPLE_TOOLACE), "toolace", 0)
    assert verified(toolace) == written(toolace, "openai") == XLAM_TUPLE_SCHEMA
    assert written(toolace, "toolace") == XLAM_TUPLE_TOOLACE
    assert written(toolace, "xlam") == XLAM_TUPLE_FROM_JSON
    assert to_json_schema(xlam_to_schema(XLAM_TUPLE_FROM_JSON)) == XLAM_TUPLE_SCHEMA
    assert imported(XLAM_TUPLE_TOOLACE) == XLAM_TUPLE_SCHEMA


def test_tuple_and_data_for_bfcl_checker() -> None:
    """Our dialogs as BFCL items (self-guidance): the same schema in BFCL's names, data untouched."""
    assert to_bfcl_dialect(XLAM_TUPLE_SCHEMA) == {"type": "dict", "properties": {
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2,
                 "maxItems": 2, "description": "Pair", "items": {"type": "any"}},
        "many": {"type": "array", "items": {"type": "float"}, "description": "Many"},
        "loose": {"type": "array", "description": "Loose", "items": {"type": "any"}}}, "required": ["pair", "many"]}
    assert to_bfcl_dialect(DATA_SCHEMA)["properties"]["filter"] == {
        "type": "dict", "properties": {"type": {"type": "string", "enum": ["dict", "float"]}},
        "default": {"type": "dict"}, "examples": [{"type": "int"}]}
    assert to_bfcl_dialect(DATA_SCHEMA)["properties"]["shape"] == {"const": {"type": "object"}}


def test_old_style_items_list_is_prefix_items() -> None:
    bfcl = {"type": "dict", "properties": {"pair": {"type": "tuple", "items": [{"type": "int"}, {"type": "str"}]}}}
    expected = {"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [
        {"type": "integer"}, {"type": "string"}]}}}
    assert to_json_schema(bfcl) == expected
    assert imported(bfcl) == {**expected, "required": []}


def test_verify_checks_tuple_members() -> None:
    validator = Draft202012Validator(XLAM_TUPLE_SCHEMA)
    assert validator.is_valid({"pair": [1, "a"], "many": [1.5]})
    assert not validator.is_valid({"pair": [1, 2], "many": []})
    assert not validator.is_valid({"pair": [1, "a", 3], "many": []})
    sample = sample_from_row(xlam_row(XLAM_TUPLE, {"pair": [1, 2], "many": []}), "xlam", 0)
    assert check_argument_values(Context.of(sample, RuleLimits())) == "f.pair/1: 2 is not of type 'string'"


# ------------------------------------------------------------------------------------- (c) data is not renamed


def test_type_keys_in_data_are_never_renamed() -> None:
    original = copy.deepcopy(TOOLACE_DATA)
    assert to_json_schema(TOOLACE_DATA) == DATA_SCHEMA
    assert unknown_types(TOOLACE_DATA) == []
    assert to_toolace_dialect(DATA_SCHEMA) == DATA_TOOLACE
    assert to_toolace_dialect(TOOLACE_DATA) == DATA_TOOLACE
    assert TOOLACE_DATA == original  # input untouched
    assert imported(TOOLACE_DATA) == DATA_SCHEMA
    sample = sample_from_row(toolace_row(TOOLACE_DATA), "toolace", 0)
    assert sample.problems == []
    assert verified(sample) == DATA_SCHEMA
    assert written(sample, "openai") == DATA_SCHEMA
    assert written(sample, "toolace") == DATA_TOOLACE
    assert written(sample, "xlam") == DATA_XLAM
    # "filter" has a default: xLAM reads it optional (rule (a)); its data is still not renamed
    assert to_json_schema(xlam_to_schema(DATA_XLAM)) == DATA_SCHEMA | {"required": []}
    assert schema_to_xlam(DATA_SCHEMA)["shape"] == {"type": "Any, optional", "const": {"type": "object"}}
    # the publishing path writes ToolACE tools the same way
    api = APISpec(api_id="a", name="f", description="A tool", parameters=DATA_SCHEMA, result_schema={},
                  domain="d", node_ids=["n"], operators=["base"])
    assert toolace_tool(api)["parameters"] == DATA_TOOLACE


def test_json_schema_data_keeps_json_names_in_toolace() -> None:
    schema = {"type": "object", "properties": {"o": {"type": "object", "default": {"type": "object"},
                                                     "enum": [{"type": "integer"}]}}}
    assert to_toolace_dialect(schema) == {"type": "dict", "properties": {"o": {
        "type": "dict", "default": {"type": "object"}, "enum": [{"type": "integer"}]}}}
    assert to_json_schema(to_toolace_dialect(schema)) == schema


# ---------------------------------------------------------------------------------------- unknown type names


def test_unknown_type_names_rejected_on_import_and_in_verify() -> None:
    flat = {"when": {"type": "datetime", "description": "When"}}
    [api] = apis_from_function_list([{"name": "f", "description": "A tool", "parameters": flat}], "golden")
    assert not api.accepted and "unknown type name(s) 'datetime'" in (api.reason or "")
    sample = sample_from_row(xlam_row(flat, {"when": "now"}), "xlam", 0)
    assert Context.of(sample, RuleLimits()).tools["f"].schema_error == "unknown type name(s) 'datetime'"


def test_flat_xlam_parameters_in_another_format_read_the_same() -> None:
    """A ShareGPT row whose tools carry xLAM's flat parameters: verify and the writers read them by the xLAM rule."""
    row = {"conversations": [{"from": "human", "value": "Do it."},
                             {"from": "function_call", "value": json.dumps({"name": "f", "arguments": {}})}],
           "tools": json.dumps([{"name": "f", "description": "A tool", "parameters": XLAM_OPTIONAL}])}
    sample = sample_from_row(row, "sharegpt", 0)
    assert sample.problems == []
    assert verified(sample) == written(sample, "openai") == XLAM_OPTIONAL_SCHEMA
    assert written(sample, "toolace") == XLAM_OPTIONAL_TOOLACE
    assert written(sample, "xlam") == XLAM_OPTIONAL  # already flat: written as it is
