"""The rule layer on format-neutral samples: the checks that data we did not make needs."""

from __future__ import annotations

from typing import Any

from schemas.records import ToolCall
from schemas.samples import Problem, Sample, SampleTurn, ToolSpec
from tasks.formats.call_format import TOOLACE_SYSTEM_PROMPT
from tasks.verification.rules import RuleLimits, score_sample

BFCL_TOOL = ToolSpec(name="Market Trends API", description="Market trends.", parameters={
    "type": "dict", "properties": {
        "trend_type": {"type": "string", "enum": ["MARKET_INDEXES", "MOST_ACTIVE"], "description": "Trend"},
        "ratio": {"type": "float", "description": "A ratio", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "str"}, "description": "Tags"},
        "when": {"type": "string", "format": "date", "description": "Day"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "Code"},
        "opts": {"type": "dict", "properties": {"depth": {"type": "int", "description": "d"}},
                 "required": ["depth"], "description": "Options"}},
    "required": ["trend_type"]}, extra={"required": None})


def sample(*turns: SampleTurn, tools: list[ToolSpec] | None = None, system: str | None = None) -> Sample:
    return Sample(index=0, id="s", format="toolace", tools=tools if tools is not None else [BFCL_TOOL],
                  turns=list(turns), system=system)


def user(text: str = "Show me market indexes") -> SampleTurn:
    return SampleTurn(role="user", content=text)


def calls(*pairs: tuple[str, dict[str, Any]], text: str | None = None) -> SampleTurn:
    return SampleTurn(role="assistant", call_text=text,
                      tool_calls=[ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(pairs)])


def checks(s: Sample, limits: RuleLimits | None = None) -> list[str]:
    return [f.check for f in score_sample(s, limits)]


def reason(s: Sample, check: str) -> str:
    return next(f.reason for f in score_sample(s) if f.check == check)


def test_call_only_sample_in_the_bfcl_dialect_passes() -> None:
    good = calls(("Market Trends API", {"trend_type": "MARKET_INDEXES", "ratio": 2, "tags": ["a"],
                                        "when": "2025-01-01", "code": "USD", "opts": {"depth": 3}}))
    assert checks(sample(user(), good)) == []


def test_argument_values_in_the_dialect() -> None:
    for args, where in [({"trend_type": "X"}, "trend_type"), ({"trend_type": "MOST_ACTIVE", "ratio": "2"}, "ratio"),
                        ({"trend_type": "MOST_ACTIVE", "ratio": -1}, "ratio"),
                        ({"trend_type": "MOST_ACTIVE", "tags": [1]}, "tags/0"),
                        ({"trend_type": "MOST_ACTIVE", "when": "01/02/2025"}, "when"),
                        ({"trend_type": "MOST_ACTIVE", "code": "usd"}, "code"),
                        ({"trend_type": "MOST_ACTIVE", "opts": {"depth": 1.5}}, "opts/depth")]:
        s = sample(user(), calls(("Market Trends API", args)))
        assert checks(s) == ["argument_values_v1"], args
        assert reason(s, "argument_values_v1").startswith(f"Market Trends API.{where}:")
    s = sample(user(), calls(("Market Trends API", {"trend_type": "MOST_ACTIVE", "opts": {}})))
    assert "depth" in reason(s, "argument_values_v1")  # nested required


def test_required_unknown_and_unknown_tool() -> None:
    s = sample(user(), calls(("Market Trends API", {"from": "x"}), ("Other API", {})))
    assert checks(s) == ["tool_name_exists_v1", "required_params_v1", "unknown_params_v1"]
    assert "Other API" in reason(s, "tool_name_exists_v1")


def test_tool_definition_clarity() -> None:
    no_desc = BFCL_TOOL.model_copy(update={"description": " "})
    assert "has no description" in reason(sample(user(), calls(("Market Trends API", {"trend_type": "MOST_ACTIVE"})),
                                                 tools=[no_desc]), "tool_fields_v1")
    typo = ToolSpec(name="f", description="F.", parameters={"type": "dict", "properties": {
        "a": {"type": "strnig", "description": "A"}}})
    s = sample(user(), calls(("f", {"a": "x"})), tools=[typo])
    assert checks(s) == ["tool_schema_v1"]
    assert "'strnig'" in reason(s, "tool_schema_v1")
    dangling = ToolSpec(name="f", description="F.", parameters={"type": "object", "properties": {},
                                                                "required": ["a"]})
    assert "not defined" in reason(sample(user(), calls(("f", {})), tools=[dangling]), "tool_schema_v1")
    untyped = ToolSpec(name="f", description="F.", parameters={"type": "object", "properties": {"a": {}}})
    assert "has no type" in reason(sample(user(), calls(("f", {})), tools=[untyped]), "tool_fields_v1")


def test_read_problems_come_first_and_unreadable_samples_stop_there() -> None:
    s = sample(user(), SampleTurn(role="assistant", call_text="[f(a=", call_error="not a Python expression"))
    assert checks(s) == ["call_syntax_v1"]
    broken = Sample(index=3, id="3", format="toolace", problems=[Problem(check="sample_json_v1", reason="truncated")])
    assert checks(broken) == ["sample_json_v1"]


def test_argument_length() -> None:
    s = sample(user(), calls(("Market Trends API", {"trend_type": "MOST_ACTIVE", "tags": ["x" * 5_000_000]})))
    assert checks(s) == ["argument_length_v1"]
    assert "5000000 characters" in reason(s, "argument_length_v1")
    assert checks(s, RuleLimits(max_argument_chars=6_000_000)) == []


def test_output_format_follows_the_system_prompt() -> None:
    system = TOOLACE_SYSTEM_PROMPT + "[]"
    args = {"trend_type": "MOST_ACTIVE"}
    bare = calls(("Market Trends API", args), text='[Market Trends API(trend_type="MOST_ACTIVE")]')
    chatty = calls(("Market Trends API", args), text='Sure! [Market Trends API(trend_type="MOST_ACTIVE")]')
    assert checks(sample(user(), bare, system=system)) == []
    assert checks(sample(user(), chatty, system=system)) == ["output_format_v1"]
    assert checks(sample(user(), chatty)) == []  # no format asked for


def test_completeness_and_tool_turns() -> None:
    call = calls(("Market Trends API", {"trend_type": "MOST_ACTIVE"}))
    result = SampleTurn(role="tool", tool_call_id="c0", name="Market Trends API", content='{"ok": true}')
    answer = SampleTurn(role="assistant", content="Here they are.")
    assert checks(sample(user(), call, result, answer)) == []
    assert checks(sample(user(), call, result)) == ["response_complete_v1"]
    stray = SampleTurn(role="tool", tool_call_id="zz", name="Market Trends API", content="{}")
    assert checks(sample(user(), answer, stray, answer)) == ["tool_turn_follows_call_v1"]
    assert "no turns" in reason(sample(), "role_order_v2")
