"""Property-based fuzzing (issue 19, item 4): random and hostile rows, tool lists, call strings and schemas thrown at
the call parser, the rule layer and the format readers. No exception escapes, and every call returns within
``deadline``. Derandomized, so CI sees the same examples every run; a crash found once is kept as an ``@example``."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.records import ToolCall
from schemas.samples import FORMATS, Problem, Sample, SampleTurn, ToolSpec
from tasks.apis.schema_validity import schema_problem
from tasks.formats.call_parsing import CallParseError, parse_calls, parse_json_calls
from tasks.formats.dataset_formats import TOOL_LIST_MARKER, detect_format, sample_from_row
from tasks.verification.datasets import verify_stream
from tasks.verification.rules import RULE_CHECKS, Context, RuleLimits, score_sample
from toolace.safe_patterns import safe_validator, schema_hazard

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------------------ strategies

HOSTILE_PATTERNS = ["[", "(", "^(a+)+$", "(a|aa)+$", "(?=a)", "(?<!x)y", r"(a)\1", "(?P<n>a)(?P=n)", "a{1001}",
                    "a++", "(?>a)", r"\u00e9", "\ud800", "", ".*" * 50, "(" * 300 + ")" * 300, "[[:alpha:]]", r"\p{L}"]
HOSTILE_TEXTS = ["a" * 40 + "!", "", "\x00", "\ud800", "é" * 30, "[", "{", '"', "\\", "nan", "1e999", "-0"]
KEYWORDS = ["type", "properties", "items", "required", "pattern", "patternProperties", "$ref", "$defs", "anyOf",
            "oneOf", "allOf", "not", "enum", "const", "format", "minimum", "maximum", "minLength", "maxLength",
            "additionalProperties", "description", "default", "prefixItems", "if", "then", "else", "dependencies",
            "propertyNames", "contains", "minItems", "uniqueItems", "multipleOf", "$id", "$anchor", "$dynamicRef",
            "$dynamicAnchor", "$recursiveRef", "definitions", "dependentSchemas", "unevaluatedProperties"]
TYPES = ["string", "integer", "number", "boolean", "object", "array", "null", "dict", "float", "str", "int", "list",
         "tuple", "any", "bogus"]
REFS = ["#", "#/properties/a", "#/$defs/a", "#/$defs/missing", "#/items", "http://example.com/s.json", "#a", "#/",
        "#/definitions/a", "s.json", "#x"]
FORMATS_NAMED = ["date", "date-time", "time", "email", "uri", "uuid", "regex", "ipv4", "ipv6", "hostname",
                 "json-pointer", "duration", "no-such-format"]

# any code point, lone surrogates included: JSON's "\ud800" escape reads as one
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | any_text | st.sampled_from(HOSTILE_TEXTS))
def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A named function, not a lambda: Hypothesis describes a recursive strategy's lambda by searching
    ``sys.modules`` for its source, which fails when another thread imports at that moment."""
    return st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4)


json_values = st.recursive(scalars, _containers, max_leaves=20)


def _keyword_value(key: str, schemas: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value for a schema keyword: mostly of the right shape, sometimes anything."""
    shaped: dict[str, st.SearchStrategy[Any]] = {
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), max_size=3),
        "properties": st.dictionaries(st.sampled_from(["a", "b", "code", "$ref", "pattern"]), schemas, max_size=3),
        "$defs": st.dictionaries(st.sampled_from(["a", "b"]), schemas, max_size=2),
        "patternProperties": st.dictionaries(st.sampled_from(HOSTILE_PATTERNS), schemas, max_size=2),
        "items": schemas | st.lists(schemas, max_size=2),
        "required": st.lists(st.sampled_from(["a", "b", "code", "x"]), max_size=3),
        "pattern": st.sampled_from(HOSTILE_PATTERNS) | st.text(max_size=12),
        "$ref": st.sampled_from(REFS),
        "$dynamicRef": st.sampled_from(REFS),
        "$recursiveRef": st.sampled_from(REFS),
        "$id": st.sampled_from(["http://example.com/s.json", "s.json", "#x", "", "urn:x"]),
        "$anchor": st.sampled_from(["a", "x"]),
        "$dynamicAnchor": st.sampled_from(["a", "x"]),
        "definitions": st.dictionaries(st.sampled_from(["a", "b"]), schemas, max_size=2),
        "format": st.sampled_from(FORMATS_NAMED) | scalars,
        "enum": st.lists(scalars, max_size=3),
    }
    for key_of_list in ("anyOf", "oneOf", "allOf", "prefixItems"):
        shaped[key_of_list] = st.lists(schemas, max_size=3)
    for key_of_schema in ("not", "additionalProperties", "if", "then", "else", "propertyNames", "contains"):
        shaped[key_of_schema] = schemas | st.booleans()
    return shaped.get(key, scalars) | json_values if key in shaped else scalars | json_values


@st.composite
def _schema_node(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(KEYWORDS), max_size=5, unique=True))
    return {key: draw(_keyword_value(key, children)) for key in keys}


schemas = st.recursive(st.builds(dict) | st.booleans(), _schema_node, max_leaves=12)
object_schemas = st.builds(lambda props, required, extra: {"type": "object", "properties": props,
                                                           "required": required, **extra},
                           st.dictionaries(st.sampled_from(["a", "b", "code"]), schemas, max_size=3),
                           st.lists(st.sampled_from(["a", "b", "code", "x"]), max_size=3),
                           st.dictionaries(st.sampled_from(["$defs", "patternProperties", "additionalProperties"]),
                                           schemas, max_size=1))
arguments = st.dictionaries(st.sampled_from(["a", "b", "code", "x", ""]), json_values, max_size=4)

CALL_FRAGMENTS = ["[", "]", "(", ")", "{", "}", ",", "=", '"', "'", "f", "get_weather", "city", "Oslo", "1", "-",
                  "True", "None", "null", "```", "```python\n", "\n", " ", "**", "lambda", ".", "a.b", "from", "=",
                  "Market Trends API", "/x", "f'{x}'", "1e999", "\\", "\ud800", "\x00", "#", "[" * 60, "]" * 60]
call_texts = (st.lists(st.sampled_from(CALL_FRAGMENTS), max_size=30).map("".join) | st.text(max_size=200)
              | st.builds(lambda name, args: f"[{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})]",
                          st.sampled_from(["f", "get_weather", "Market Trends API", "a.b", "1bad", "class"]),
                          st.dictionaries(st.sampled_from(["a", "from", "city", "x y"]), json_values, max_size=3)))
tool_names = st.lists(st.sampled_from(["f", "get_weather", "Market Trends API", "/x", "", "a.b", "class", "(", "["])
                      | st.text(max_size=10), max_size=4)


def _tool(name: str, parameters: Any, result: Any) -> ToolSpec:
    return ToolSpec(name=name, description="A tool.", parameters=parameters if isinstance(parameters, dict) else {},
                    result_schema=result if isinstance(result, dict) else None)


tools = st.lists(st.builds(_tool, st.sampled_from(["f", "g", "get_weather", ""]), object_schemas | schemas,
                           st.none() | object_schemas | schemas), max_size=3)


@st.composite
def turns(draw: st.DrawFn) -> list[SampleTurn]:
    out: list[SampleTurn] = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        role = draw(st.sampled_from(["user", "assistant", "tool", "system"]))
        content = draw(st.none() | st.text(max_size=60) | st.sampled_from(HOSTILE_TEXTS))
        if role == "assistant":
            calls = draw(st.lists(st.builds(ToolCall, id=st.sampled_from([f"c{i}_0", f"c{i}_1", "c1_0"]),
                                            name=st.sampled_from(["f", "g", "get_weather", "missing"]),
                                            arguments=arguments), max_size=2))
            out.append(SampleTurn(role=role, content=content, tool_calls=calls,
                                  call_text=draw(st.none() | call_texts),
                                  call_error=draw(st.none() | st.sampled_from(["bad call"]))))
        elif role == "tool":
            result = draw(st.none() | st.text(max_size=30) | json_values.map(json.dumps))
            out.append(SampleTurn(role=role, content=result,
                                  tool_call_id=draw(st.sampled_from(["c1_0", "c0_0", "nope"])),
                                  name=draw(st.none() | st.sampled_from(["f", "g", "get_weather"]))))
        elif role == "user":
            out.append(SampleTurn(role=role, content=content))
    return out


samples = st.builds(lambda tools_, turns_, system, dialog_type, problems: Sample(
    index=0, id="s", format="openai", tools=tools_, turns=turns_, system=system, dialog_type=dialog_type,
    problems=problems),
    tools, turns(), st.none() | st.sampled_from(["Answer in the format of [func1(params)]", ""]) | st.text(max_size=20),
    st.none() | st.sampled_from(["single", "parallel", "dependent", "non_tool", "clarification", "multi_turn", "x"]),
    st.lists(st.builds(Problem, check=st.sampled_from(["tools_json_v1", "sample_json_v1"]), reason=st.just("r")),
             max_size=1))


# --------------------------------------------------------------------------------------------- the call parser


@FUZZ
@given(text=call_texts, names=tool_names)
@example(text="[" * 60 + "f()" + "]" * 60, names=[])
@example(text="[Market Trends API(from='2024', city=1e999)]", names=["Market Trends API"])
@example(text="```python\n[f(a=-1)]```", names=["f", ""])
def test_call_parser_only_raises_call_parse_errors(text: str, names: list[str]) -> None:
    try:
        calls = parse_calls(text, names)
    except CallParseError as exc:
        assert str(exc)
    else:
        assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) for c in calls)


@FUZZ
@given(value=json_values | call_texts | json_values.map(json.dumps))
@example(value='[{"name": "f", "arguments": "{"}]')
@example(value={"f": 1})
def test_json_call_parser_only_raises_call_parse_errors(value: Any) -> None:
    try:
        calls = parse_json_calls(value)
    except CallParseError as exc:
        assert str(exc)
    else:
        assert all(isinstance(c, ToolCall) for c in calls)


# ------------------------------------------------------------------------------------------------- the schemas


@FUZZ
@given(schema=schemas, instance=json_values)
@example(schema={"pattern": "^(a+)+$"}, instance="a" * 40 + "!")
@example(schema={"properties": {"a": {"$ref": "#"}}}, instance={"a": {"a": 1}})
@example(schema={"patternProperties": {"(?=a)": {}}}, instance={"a": 1})
# found by this test: jsonschema recursed without end on a $dynamicRef cycle, and raised PointerToNowhere on a "#/..."
# reference under a nested $id (resolved against that $id, not the root): both are schema hazards now
@example(schema={"$defs": {"a": {"$dynamicRef": "#/$defs/a"}}, "$ref": "#/$defs/a"}, instance=1)
@example(schema={"properties": {"a": {"$id": "http://example.com/", "$ref": "#/x"}}, "x": {}}, instance={"a": 1})
def test_schema_checks_and_safe_validation_never_raise(schema: Any, instance: Any) -> None:
    problem = schema_problem(schema)
    assert problem is None or isinstance(problem, str)
    hazard = schema_hazard(schema)
    if problem is None and hazard is None and isinstance(schema, dict):  # what the rule layer validates with
        errors = list(safe_validator(schema).iter_errors(instance))
        assert all(isinstance(e.message, str) for e in errors)


# ------------------------------------------------------------------------------------------------ the rule layer


@FUZZ
@given(sample=samples)
@example(sample=Sample(index=0, id="s", tools=[ToolSpec(name="f", parameters={
    "type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}})], turns=[
    SampleTurn(role="user", content="?"),
    SampleTurn(role="assistant", tool_calls=[ToolCall(id="c", name="f", arguments={"a": "a" * 40 + "!"})])]))
@example(sample=Sample(index=0, id="s", tools=[ToolSpec(name="f", parameters={
    "type": "object", "properties": {"a": {"type": "string", "pattern": "["}}})], turns=[
    SampleTurn(role="user", content="?"),
    SampleTurn(role="assistant", tool_calls=[ToolCall(id="c", name="f", arguments={"a": "x"})])]))
def test_every_rule_check_returns_a_reason_or_none(sample: Sample) -> None:
    ctx = Context.of(sample, RuleLimits())
    for check in RULE_CHECKS:
        reason = check.run(ctx)
        assert reason is None or (isinstance(reason, str) and reason), check.name
    failures = score_sample(sample)
    assert all(isinstance(f, Problem) for f in failures)


# ---------------------------------------------------------------------------------------------- the format readers


def _with(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**base, **overrides}


_OPENAI = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
           "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
               {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}
_TOOLACE = {"system": f"{TOOL_LIST_MARKER}\n[{{\"name\": \"f\", \"parameters\": {{}}}}]",
            "conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "[f()]"}]}
_SHAREGPT = {"tools": "[]", "conversations": [{"from": "human", "value": "hi"},
                                              {"from": "function_call", "value": '{"name": "f", "arguments": {}}'}]}
_XLAM = {"query": "hi", "tools": '[{"name": "f", "parameters": {}}]', "answers": '[{"name": "f", "arguments": {}}]'}
_BFCL = {"question": [[{"role": "user", "content": "hi"}]], "function": [{"name": "f", "parameters": {}}],
         "ground_truth": [{"f": {}}]}
BASES = [_OPENAI, _TOOLACE, _SHAREGPT, _XLAM, _BFCL]
FIELDS = ["tools", "messages", "conversations", "system", "query", "answers", "question", "function", "ground_truth",
          "id", "dialog_type", "segments"]


@st.composite
def hostile_rows(draw: st.DrawFn) -> Any:
    """A row of one format with some fields replaced by random values (or JSON text of them), or anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    base = draw(st.sampled_from(BASES))
    field_values = json_values | json_values.map(json.dumps) | call_texts | st.lists(
        st.dictionaries(st.sampled_from(["role", "from", "value", "content", "tool_calls", "name", "function",
                                         "arguments", "tool_call_id", "parameters"]),
                        json_values | call_texts | st.sampled_from(["user", "assistant", "tool", "human", "gpt",
                                                                    "function_call", "observation"]), max_size=5),
        max_size=4)
    overrides = draw(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3))
    return _with(base, overrides)


@FUZZ
@given(row=hostile_rows(), fmt=st.sampled_from(["auto", *FORMATS]))
# found by this test: a lone surrogate (JSON's "\ud800") in a row made `toolace verify` fail writing its verdict
@example(row={**_OPENAI, "id": "\ud800"}, fmt="auto")
@example(row={"messages": "[{"}, fmt="auto")
@example(row={"conversations": [None, 1]}, fmt="toolace")
def test_format_readers_always_give_a_sample(row: Any, fmt: str) -> None:
    sample = sample_from_row(row, fmt, 3)  # type: ignore[arg-type]
    assert isinstance(sample, Sample) and sample.index == 3
    if isinstance(row, dict):
        assert detect_format(row) in (None, *FORMATS)
    out = io.StringIO()  # what `toolace verify` does with it: the rule layer, then one verdict line
    summary = verify_stream(iter([sample]), out)
    assert summary["samples"] == 1 and json.loads(out.getvalue())["index"] == 3
