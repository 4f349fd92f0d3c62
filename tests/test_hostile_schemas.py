"""Hostile schemas are a verdict, never a hang or a crash (issue 19, item 3): an invalid pattern, a pattern with
catastrophic backtracking, a pattern RE2 has no matcher for, an invalid ``format``, a recursive ``$ref`` and a schema
nested too deep, in ``toolace verify``, in the rule layer of a run, in ``import-apis`` and in API synthesis.

No timing is asserted: a catastrophic pattern used to take minutes, pytest-timeout guards against its return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas.records import APISpec, Dialog, ToolCall, Turn
from tasks.apis.importing import SCHEMA_CHECK, apis_from_function_list, apis_from_openapi
from tasks.apis.schema_validity import schema_problem
from tasks.apis.synthesis import check_definition, to_api_spec
from tasks.formats.dataset_formats import sample_from_row
from tasks.verification.rules import score_dialog, score_sample
from toolace.cli import app
from toolace.safe_patterns import MAX_SCHEMA_DEPTH, pattern_problem, safe_validator, schema_hazard, search

CATASTROPHIC_ARGUMENT = "a" * 34 + "!"  # ^(a+)+$ backtracks 2^34 times on it in Python's re


def deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": "leaf"}
    for _ in range(levels):
        schema = {"type": "object", "description": "level", "properties": {"next": schema}}
    return schema


DEEP_AT = "properties/code/properties/next/properties/next/properties/n..."
# the parameter "code" of a tool "lookup", as each hostile case has it, and the reason of its verdict
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "invalid pattern": (
        {"type": "string", "description": "Code", "pattern": "["},
        "schema: pattern '[' is not a valid regular expression: unterminated character set at position 0 "
        "(at properties/code/pattern)"),
    "lookahead pattern": (
        {"type": "string", "description": "Code", "pattern": "^(?=a)a+$"},
        "schema: pattern '^(?=a)a+$' uses a lookahead, which has no linear-time matcher (at properties/code/pattern)"),
    "backreference pattern": (
        {"type": "string", "description": "Code", "pattern": r"^(a)\1$"},
        "schema: pattern '^(a)\\\\1$' uses a backreference, which has no linear-time matcher "
        "(at properties/code/pattern)"),
    "recursive $ref": (
        {"type": "object", "description": "Code", "properties": {"inner": {"$ref": "#/properties/code"}}},
        "schema: a recursive $ref: properties/code/properties/inner/$ref leads back to a schema it is part of"),
    "recursive $dynamicRef": (
        {"type": "object", "description": "Code", "properties": {"inner": {"$dynamicRef": "#/properties/code"}}},
        "schema: a recursive $dynamicRef: properties/code/properties/inner/$dynamicRef leads back to a schema it is "
        "part of"),
    "nested $id": (
        {"$id": "http://example.com/code.json", "$ref": "#/x", "description": "Code"},
        "schema: $id 'http://example.com/code.json' makes a schema resource inside the schema, whose references are "
        "not read (at properties/code/$id)"),
    "dangling $ref": (
        {"$ref": "#/$defs/missing", "description": "Code"},
        "schema: $ref '#/$defs/missing' points to nothing in the schema (at properties/code/$ref)"),
    "remote $ref": (
        {"$ref": "https://example.com/code.json", "description": "Code"},
        "schema: $ref 'https://example.com/code.json' is not a local reference to a #/... JSON pointer "
        "(at properties/code/$ref)"),
    "too deep": (
        deep(MAX_SCHEMA_DEPTH),
        f"schema: subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels (at {DEEP_AT})"),
}
INVALID_FORMAT = {"type": "string", "description": "Code", "format": 7}
INVALID_FORMAT_REASON = "7 is not of type 'string' (at properties/code/format)"


def parameters(code: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"code": code}, "required": ["code"]}


def row(code: dict[str, Any], argument: Any = CATASTROPHIC_ARGUMENT) -> dict[str, Any]:
    tool = {"name": "lookup", "description": "Look up a code.", "parameters": parameters(code)}
    return {"tools": [{"type": "function", "function": tool}], "messages": [
        {"role": "user", "content": "Look up the code."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": json.dumps({"code": argument})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": 1}'},
        {"role": "assistant", "content": "Done."}]}


def verdict_of(code: dict[str, Any], argument: Any = CATASTROPHIC_ARGUMENT) -> list[tuple[str, str]]:
    return [(p.check, p.reason) for p in score_sample(sample_from_row(row(code, argument), "openai", 0))]


# ------------------------------------------------------------------------------------------- the pattern rule


@pytest.mark.parametrize(("pattern", "problem"), [
    ("^[A-Z]{3}$", None),
    ("^(a+)+$", None),  # catastrophic in Python's re, linear in RE2
    (r"^\u00e9+$", None),  # ECMA-262's \uXXXX escape
    (r"^\d+\w*$", None),
    ("[", "pattern '[' is not a valid regular expression: unterminated character set at position 0"),
    ("(a", "pattern '(a' is not a valid regular expression: missing ), unterminated subpattern at position 0"),
    ("(?=a)", "pattern '(?=a)' uses a lookahead, which has no linear-time matcher"),
    ("(?!a)b", "pattern '(?!a)b' uses a lookahead, which has no linear-time matcher"),
    ("(?<=a)b", "pattern '(?<=a)b' uses a lookbehind, which has no linear-time matcher"),
    ("(?<!a)b", "pattern '(?<!a)b' uses a lookbehind, which has no linear-time matcher"),
    (r"(a)\1", "pattern '(a)\\\\1' uses a backreference, which has no linear-time matcher"),
    ("(?P<x>a)(?P=x)", "pattern '(?P<x>a)(?P=x)' uses a named backreference, which has no linear-time matcher"),
    ("(?>a+)b", "pattern '(?>a+)b' uses an atomic group, which has no linear-time matcher"),
    ("a++b", "pattern 'a++b' uses a possessive quantifier, which has no linear-time matcher"),
    ("a{1001}", "pattern 'a{1001}' uses a repetition count over 1000, which has no linear-time matcher"),
    ("\ud800", "pattern '\\ud800' is not a valid regular expression: it holds a lone surrogate"),
])
def test_pattern_rule(pattern: str, problem: str | None) -> None:
    assert pattern_problem(pattern) == problem


def test_catastrophic_patterns_match_in_linear_time() -> None:
    assert not search("^(a+)+$", "a" * 100_000 + "!")
    assert search("^(a+)+$", "a" * 100_000)
    assert search(r"^\u00e9$", "é") and not search(r"^\d$", "٣")  # \d is ASCII, as in ECMA-262
    assert not search("^a$", "\ud800")  # a lone surrogate is read, not raised on
    validator = safe_validator({"type": "object", "properties": {"c": {"type": "string", "pattern": "^(a+)+$"}},
                                "patternProperties": {"^(x+)+$": {"type": "integer"}}})
    assert [e.message for e in validator.iter_errors({"c": CATASTROPHIC_ARGUMENT, "x" * 40: "s"})] == [
        f"{CATASTROPHIC_ARGUMENT!r} does not match '^(a+)+$'", "'s' is not of type 'integer'"]
    # the validator never runs a pattern it has no linear-time matcher for, even when handed one
    assert [e.message for e in safe_validator({"pattern": "(?=a)"}).iter_errors("a")] == [
        "pattern '(?=a)' uses a lookahead, which has no linear-time matcher"]


def test_the_regex_format_is_compiled_never_matched() -> None:
    validator = safe_validator({"type": "string", "format": "regex"})
    assert not list(validator.iter_errors("^(a+)+$")) and not list(validator.iter_errors("(?=a)"))
    assert [e.message for e in validator.iter_errors("[")] == ["'[' is not a 'regex'"]


def test_schema_hazards() -> None:
    assert schema_hazard(parameters({"type": "string", "pattern": "^(a+)+$"})) is None
    assert schema_hazard(deep(MAX_SCHEMA_DEPTH - 2)) is None
    tree = {"$defs": {"node": {"type": "object", "properties": {"children": {
        "type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}
    assert schema_hazard(tree) == "a recursive $ref: $defs/node/properties/children/items/$ref leads back to a " \
                                  "schema it is part of"
    assert schema_hazard({"$ref": "#"}) == "a recursive $ref: $ref leads back to a schema it is part of"
    assert schema_hazard({"patternProperties": {"([": {}}}) == (
        "patternProperties name: pattern '([' is not a valid regular expression: unterminated character set at "
        "position 1 (at patternProperties)")
    # $refs shared by many parts are walked once: 2^60 paths, one visit each
    shared = {"$defs": {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
                        for i in range(30)}, "$ref": "#/$defs/d0"}
    shared["$defs"]["d30"] = {"type": "string"}
    assert schema_hazard(shared) is None
    assert schema_problem(parameters({"type": "string", "pattern": "["})) == (
        "pattern '[' is not a valid regular expression: unterminated character set at position 0 "
        "(at properties/code/pattern)")


# --------------------------------------------------------------------------------------------- toolace verify


def test_verify_gives_each_hostile_row_its_verdict_and_exits_0(tmp_path: Path) -> None:
    good = row({"type": "string", "description": "Code"}, "abc")
    rows = [row(code) for code, _ in HOSTILE.values()]
    rows += [row({"type": "string", "description": "Code", "pattern": "^(a+)+$"}), row(INVALID_FORMAT), good]
    data = tmp_path / "hostile.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["verify", str(data), "--output", str(out)])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["index"] for v in verdicts] == list(range(len(rows)))
    expected = [[{"check": "tool_schema_v1", "reason": f"tool lookup: parameters {reason}"}]
                for _, reason in HOSTILE.values()]
    expected += [
        [{"check": "argument_values_v1", "reason": f"lookup.code: {CATASTROPHIC_ARGUMENT!r} does not match '^(a+)+$'"}],
        [{"check": "tool_schema_v1",
          "reason": f"tool lookup: parameters not a valid JSON Schema: {INVALID_FORMAT_REASON}"}],
        []]
    assert [v["failures"] for v in verdicts] == expected
    assert [v["passed"] for v in verdicts] == [False] * (len(rows) - 1) + [True]


# ------------------------------------------------------------------------------------- the rule layer of a run


@pytest.mark.parametrize("case", list(HOSTILE))
def test_rule_layer_verdicts(case: str) -> None:
    code, reason = HOSTILE[case]
    assert verdict_of(code) == [("tool_schema_v1", f"tool lookup: parameters {reason}")]


def test_rule_layer_catastrophic_pattern_and_invalid_format() -> None:
    catastrophic = {"type": "string", "description": "Code", "pattern": "^(a+)+$"}
    assert verdict_of(catastrophic) == [
        ("argument_values_v1", f"lookup.code: {CATASTROPHIC_ARGUMENT!r} does not match '^(a+)+$'")]
    assert verdict_of(catastrophic, "aaaa") == []
    assert verdict_of(INVALID_FORMAT) == [
        ("tool_schema_v1", f"tool lookup: parameters not a valid JSON Schema: {INVALID_FORMAT_REASON}")]
    assert verdict_of({"type": "string", "description": "Code", "format": "date"}, "2024-13-45") == [
        ("argument_values_v1", "lookup.code: '2024-13-45' is not a 'date'")]


def test_our_dialogs_are_judged_by_the_same_rules() -> None:
    def dialog(parameters: dict[str, Any], result: dict[str, Any]) -> Dialog:
        tool = APISpec(api_id="a", name="lookup", description="Look up a code.", parameters=parameters,
                       result_schema=result, domain="d", node_ids=[], operators=[])
        return Dialog(dialog_id="d1", dialog_type="single", domain="d", tools=[tool], apis_used=["lookup"], turns=[
            Turn(role="user", content="Look up aaa."),
            Turn(role="assistant", tool_calls=[ToolCall(id="c1", name="lookup",
                                                        arguments={"code": CATASTROPHIC_ARGUMENT})]),
            Turn(role="tool", tool_call_id="c1", name="lookup", content='{"ok": "' + CATASTROPHIC_ARGUMENT + '"}'),
            Turn(role="assistant", content="It is done.")])

    ok = {"type": "object", "properties": {"ok": {"type": "string"}}}
    failures = score_dialog(dialog(parameters(HOSTILE["invalid pattern"][0]), ok), 2000)
    assert [(f.check, f.reason) for f in failures] == [
        ("tool_schema_v1", f"tool lookup: parameters {HOSTILE['invalid pattern'][1]}")]
    catastrophic = {"type": "object", "properties": {"ok": {"type": "string", "pattern": "^(a+)+$"}}}
    failures = score_dialog(dialog(parameters({"type": "string", "description": "Code"}), catastrophic), 2000)
    assert [(f.check, f.reason) for f in failures] == [
        ("tool_result_schema_v1",
         f"result of lookup disagrees with its result schema: {CATASTROPHIC_ARGUMENT!r} does not match '^(a+)+$'")]
    recursive = {"type": "object", "properties": {"ok": {"$ref": "#/properties/ok"}}}
    failures = score_dialog(dialog(parameters({"type": "string", "description": "Code"}), recursive), 2000)
    assert [(f.check, f.reason) for f in failures] == [
        ("tool_schema_v1", "tool lookup: result schema: a recursive $ref: properties/ok/$ref leads back to a schema "
                           "it is part of")]


# ------------------------------------------------------------------------------------------------ import-apis


@pytest.mark.parametrize("case", list(HOSTILE))
def test_import_of_function_lists_rejects_hostile_schemas(case: str) -> None:
    code, reason = HOSTILE[case]
    entry = {"name": "lookup", "description": "Look up a code.", "parameters": parameters(code)}
    good = {"name": "find", "description": "Find a code.", "parameters": parameters({"type": "string"})}
    bad, fine = apis_from_function_list([entry, good], "tools.json")
    assert fine.accepted
    assert bad.rejected_by == SCHEMA_CHECK and bad.reason == f"tools.json: lookup: parameters {reason}"


def test_import_of_function_lists_invalid_format_and_catastrophic_pattern() -> None:
    entries = [{"name": "lookup", "description": "Look up.", "parameters": parameters(INVALID_FORMAT)},
               {"name": "find", "description": "Find.",
                "parameters": parameters({"type": "string", "pattern": "^(a+)+$"})}]
    invalid, catastrophic = apis_from_function_list(entries, "tools.json")
    assert invalid.rejected_by == SCHEMA_CHECK
    assert invalid.reason == "tools.json: lookup: not a valid JSON Schema: 7 is not of type 'string'"
    assert catastrophic.accepted  # RE2 matches it in linear time


def test_import_of_openapi_documents_rejects_patterns_without_a_linear_time_matcher() -> None:
    def op(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": name, "parameters": [{"name": "q", "in": "query", "schema": schema}],
                        "responses": {}}}

    doc = {"openapi": "3.0.0", "info": {"title": "t"}, "paths": {
        "/a": op("invalid", {"type": "string", "pattern": "["}),
        "/b": op("lookahead", {"type": "string", "pattern": "(?=a)"}),
        "/c": op("catastrophic", {"type": "string", "pattern": "^(a+)+$"}),
        "/d": op("format", {"type": "string", "format": 7})}}
    apis = {a.name: a for a in apis_from_openapi(doc, "t.json")}
    assert apis["catastrophic"].accepted
    assert {n: (a.rejected_by, a.reason) for n, a in apis.items() if n != "catastrophic"} == {
        "invalid": (SCHEMA_CHECK, "t.json: GET /a (operationId invalid): not a valid JSON Schema: pattern '[' is not "
                                  "a valid regular expression: unterminated character set at position 0"),
        "lookahead": (SCHEMA_CHECK, "t.json: GET /b (operationId lookahead): not a valid JSON Schema: pattern "
                                    "'(?=a)' uses a lookahead, which has no linear-time matcher"),
        "format": (SCHEMA_CHECK, "t.json: GET /d (operationId format): not a valid JSON Schema: 7 is not of type "
                                 "'string'")}


# ---------------------------------------------------------------------------------------------- API synthesis


def spec(code: dict[str, Any]) -> APISpec:
    return APISpec(api_id="a", name="lookup", description="Look up a code.", parameters=parameters(code),
                   result_schema={"type": "object", "properties": {"ok": {"type": "integer"}}}, domain="d",
                   node_ids=[], operators=[])


@pytest.mark.parametrize("case", list(HOSTILE))
def test_api_synthesis_admission_rejects_hostile_schemas(case: str) -> None:
    code, reason = HOSTILE[case]
    assert check_definition(spec(code)) == f"parameters {reason}"


def test_api_synthesis_invalid_format_and_catastrophic_pattern() -> None:
    assert check_definition(spec(INVALID_FORMAT)) == f"parameters is not a valid JSON Schema: {INVALID_FORMAT_REASON}"
    assert check_definition(spec({"type": "string", "description": "Code", "pattern": "^(a+)+$"})) is None


def test_synthesised_patterns_without_a_linear_time_matcher_are_left_out() -> None:
    from schemas.llm_outputs import ConstrainedAPI
    from tests.test_api_synthesis import RESULT, constraints, param, plan

    answer = ConstrainedAPI.model_validate({
        "name": "lookup", "description": "Look up a code.", "result": RESULT, "parameters": [
            {**param("invalid"), **constraints(pattern="[")},
            {**param("lookahead"), **constraints(pattern="(?=a)b")},
            {**param("catastrophic"), **constraints(pattern="^(a+)+$")}]})
    props = to_api_spec(answer, plan(["add_constraints"]), None).parameters["properties"]
    assert "pattern" not in props["invalid"] and "pattern" not in props["lookahead"]
    assert props["catastrophic"]["pattern"] == "^(a+)+$"


def test_verify_writes_verdicts_of_rows_holding_lone_surrogates(tmp_path: Path) -> None:
    line = json.dumps(row({"type": "strin\ud800", "description": "Code"}, "x") | {"id": "\ud800"})
    assert "\\ud800" in line  # JSON text: the escape, which json.loads reads as a lone surrogate
    data = tmp_path / "surrogates.jsonl"
    data.write_text(line + "\n")
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["verify", str(data), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == (
        '{"index":0,"id":"\\ud800","passed":false,"failures":[{"check":"tool_schema_v1",'
        '"reason":"tool lookup: parameters unknown type name(s) \'strin\\\\ud800\'"}]}\n')
