"""Tests for tasks.verification.rules: every rule check on hand-built dialogs, and the keep/drop decision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.records import APISpec, Dialog, DialogType, ToolCall, Turn
from tasks.verification.rules import RULE_CHECKS, Context, Failure, RuleLimits, decide, sample_from_dialog, score_dialog

MAX_CHARS = 2000

FORECAST_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "description": "Days ahead"},
        "date": {"type": "string", "format": "date", "description": "First day"},
        "stops": {
            "type": "array", "description": "Stops on the way",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "hours": {"type": "integer", "minimum": 0}},
                "required": ["name"],
            },
        },
    },
    "required": ["city", "days"],
}
FORECAST_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {"temperature": {"type": "number"}, "summary": {"type": "string"}},
    "required": ["temperature", "summary"],
}


def api(name: str, parameters: dict[str, Any] | None = None, result: dict[str, Any] | None = None) -> APISpec:
    return APISpec(api_id=f"api-{name}", name=name, description=f"The {name} API.",
                   parameters=parameters or FORECAST_PARAMS, result_schema=result or FORECAST_RESULT,
                   domain="Weather", node_ids=["n1"], operators=["base"])


FORECAST = api("get_forecast")
CONVERT = api("convert_temperature",
              {"type": "object", "properties": {"value": {"type": "number", "description": "Degrees"}},
               "required": ["value"]},
              {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]})

GOOD_ARGS: dict[str, Any] = {
    "city": "Lisbon", "unit": "celsius", "days": 3, "date": "2024-06-01",
    "stops": [{"name": "Porto", "hours": 2}, {"name": "Faro"}],
}
GOOD_RESULT = json.dumps({"temperature": 21.5, "summary": "Sunny"})


def user(text: str = "What is the forecast for Lisbon for 3 days?") -> Turn:
    return Turn(role="user", content=text)


def answer(text: str = "It will be sunny, around 21.5 degrees.") -> Turn:
    return Turn(role="assistant", content=text)


def call(*calls: ToolCall) -> Turn:
    return Turn(role="assistant", tool_calls=list(calls))


def tc(call_id: str = "c1", name: str = "get_forecast", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments or dict(GOOD_ARGS))


def result(call_id: str = "c1", name: str = "get_forecast", content: str = GOOD_RESULT) -> Turn:
    return Turn(role="tool", tool_call_id=call_id, name=name, content=content)


def dialog(turns: list[Turn], dialog_type: DialogType = "single", tools: list[APISpec] | None = None) -> Dialog:
    return Dialog(dialog_id="d1", dialog_type=dialog_type, domain="Weather", tools=tools or [FORECAST, CONVERT],
                  turns=turns, apis_used=["get_forecast"])


def single_dialog(arguments: dict[str, Any] | None = None, content: str = GOOD_RESULT) -> Dialog:
    return dialog([user(), call(tc(**(arguments if arguments is not None else GOOD_ARGS))), result(content=content),
                   answer()])


def checks(d: Dialog, max_chars: int = MAX_CHARS) -> list[str]:
    return [f.check for f in score_dialog(d, max_chars)]


def reason_of(d: Dialog, check: str, max_chars: int = MAX_CHARS) -> str:
    return next(f.reason for f in score_dialog(d, max_chars) if f.check == check)


# --------------------------------------------------------------------------------------------- valid dialogs


def test_rule_check_names() -> None:
    assert [c.name for c in RULE_CHECKS] == [
        "tool_fields_v1", "tool_schema_v1", "call_syntax_v1", "tool_name_exists_v1", "required_params_v1",
        "unknown_params_v1", "argument_values_v1", "argument_length_v1", "tool_result_schema_v1", "role_order_v2",
        "tool_turn_follows_call_v1", "call_response_names_v1", "output_format_v1", "non_empty_turns_v1",
        "response_length_v1", "invalid_characters_v1", "single_language_v1", "response_complete_v1",
        "dialog_type_v2",
    ]


def test_valid_dialog_passes_every_check() -> None:
    d = single_dialog()
    assert score_dialog(d, MAX_CHARS) == []
    ctx = Context.of(sample_from_dialog(d), RuleLimits())
    for check in RULE_CHECKS:
        assert check.run(ctx) is None, check.name


def test_valid_minimal_arguments() -> None:
    assert score_dialog(single_dialog({"city": "Oslo", "days": 1}), MAX_CHARS) == []


# --------------------------------------------------------------------------------------------- tool calls


def test_tool_name_exists() -> None:
    d = dialog([user(), call(tc(name="get_weather")), result(name="get_weather"), answer()])
    assert checks(d) == ["tool_name_exists_v1"]
    assert "get_weather" in reason_of(d, "tool_name_exists_v1")


def test_required_params() -> None:
    args = dict(GOOD_ARGS)
    del args["city"]
    d = single_dialog(args)
    assert checks(d) == ["required_params_v1"]
    assert "city" in reason_of(d, "required_params_v1")


def test_unknown_params() -> None:
    d = single_dialog({**GOOD_ARGS, "colour": "blue"})
    assert checks(d) == ["unknown_params_v1"]
    assert "colour" in reason_of(d, "unknown_params_v1")


@pytest.mark.parametrize(("bad", "where"), [
    ({"days": "three"}, "get_forecast.days"),  # wrong type
    ({"city": 12}, "get_forecast.city"),  # wrong type
    ({"unit": "kelvin"}, "get_forecast.unit"),  # not in enum
    ({"days": 0}, "get_forecast.days"),  # below minimum
    ({"days": 8}, "get_forecast.days"),  # above maximum
    ({"date": "2024-13-45"}, "get_forecast.date"),  # not a date
    ({"date": "next tuesday"}, "get_forecast.date"),  # not a date
    ({"stops": [{"name": "Porto", "hours": -1}]}, "get_forecast.stops/0/hours"),  # nested range
    ({"stops": [{"name": "Porto"}, {"name": 5}]}, "get_forecast.stops/1/name"),  # nested type
    ({"stops": [{"hours": 1}]}, "get_forecast.stops/0"),  # nested required
    ({"stops": "Porto"}, "get_forecast.stops"),  # array expected
])
def test_argument_values(bad: dict[str, Any], where: str) -> None:
    d = single_dialog({**GOOD_ARGS, **bad})
    assert checks(d) == ["argument_values_v1"]
    assert reason_of(d, "argument_values_v1").startswith(where + ":")


def test_argument_values_checks_every_call() -> None:
    d = dialog([user(), call(tc("c1"), tc("c2", unit="kelvin", city="Oslo", days=2)),
                result("c1"), result("c2"), answer()], dialog_type="parallel")
    assert checks(d) == ["argument_values_v1"]


# --------------------------------------------------------------------------------------------- tool results


@pytest.mark.parametrize("content", [
    "not json at all",
    json.dumps({"temperature": 20}),  # misses summary
    json.dumps({"temperature": "warm", "summary": "ok"}),  # wrong type
    json.dumps(["temperature", 20]),  # not an object
])
def test_tool_result_schema(content: str) -> None:
    d = single_dialog(content=content)
    assert checks(d) == ["tool_result_schema_v1"]
    assert "get_forecast" in reason_of(d, "tool_result_schema_v1")


# --------------------------------------------------------------------------------------------- role order


def test_role_order_tool_turn_without_call() -> None:
    d = dialog([user("Hi"), result("c9"), answer("Hello!")], dialog_type="non_tool")
    assert checks(d) == ["tool_turn_follows_call_v1"]
    assert "without a matching call" in reason_of(d, "tool_turn_follows_call_v1")


def test_role_order_starts_with_assistant() -> None:
    d = dialog([answer("Hello, how can I help?"), user("Hi"), answer("Hello!")], dialog_type="non_tool")
    assert checks(d) == ["role_order_v2"]
    assert "start with a user turn" in reason_of(d, "role_order_v2")


def test_role_order_call_without_response() -> None:
    d = dialog([user(), call(tc()), answer()])
    assert checks(d) == ["role_order_v2"]
    assert "c1" in reason_of(d, "role_order_v2")


def test_role_order_one_of_two_parallel_calls_unanswered() -> None:
    d = dialog([user(), call(tc("c1"), tc("c2")), result("c1"), answer()], dialog_type="parallel")
    assert checks(d) == ["role_order_v2"]
    assert "c2" in reason_of(d, "role_order_v2")


def test_role_order_ends_with_call() -> None:
    d = dialog([user(), call(tc())])
    assert "response_complete_v1" in checks(d)
    assert "ends with a call" in reason_of(d, "response_complete_v1")


def test_role_order_ends_with_user() -> None:
    d = dialog([user("Hi"), answer("Hello"), user("Bye")], dialog_type="non_tool")
    assert checks(d) == ["role_order_v2"]


def test_role_order_two_users_in_a_row() -> None:
    d = dialog([user("Hi"), user("Hello?"), answer("Hello!")], dialog_type="non_tool")
    assert checks(d) == ["role_order_v2"]
    assert "two user turns" in reason_of(d, "role_order_v2")


def test_role_order_duplicate_response() -> None:
    d = dialog([user(), call(tc()), result(), result(), answer()])
    assert checks(d) == ["tool_turn_follows_call_v1"]
    assert "second tool response" in reason_of(d, "tool_turn_follows_call_v1")


def test_role_order_empty_dialog() -> None:
    assert "role_order_v2" in checks(dialog([], dialog_type="non_tool"))


# --------------------------------------------------------------------------------------------- other checks


def test_call_response_names() -> None:
    d = dialog([user(), call(tc()), result(name="get_weather"), answer()])
    assert checks(d) == ["call_response_names_v1"]
    reason = reason_of(d, "call_response_names_v1")
    assert "get_weather" in reason and "get_forecast" in reason


@pytest.mark.parametrize("turns", [
    [user("   "), answer("Hello!")],
    [user("Hi"), answer("")],
    [user("Hi"), Turn(role="assistant", content=None)],
])
def test_non_empty_turns(turns: list[Turn]) -> None:
    assert checks(dialog(turns, dialog_type="non_tool")) == ["non_empty_turns_v1"]


def test_call_turn_without_content_is_not_empty() -> None:
    assert "non_empty_turns_v1" not in checks(single_dialog())


def test_response_length() -> None:
    d = dialog([user("Tell me a story"), answer("x" * 21)], dialog_type="non_tool")
    assert checks(d, max_chars=20) == ["response_length_v1"]
    assert checks(d, max_chars=21) == []
    assert "20" in reason_of(d, "response_length_v1", max_chars=20)


def test_response_length_ignores_user_turns() -> None:
    d = dialog([user("y" * 100), answer("short")], dialog_type="non_tool")
    assert checks(d, max_chars=20) == []


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x1b", "\x7f", "\ufffd"])
def test_invalid_characters(bad: str) -> None:
    d = dialog([user(f"Hi{bad} there"), answer("Hello!")], dialog_type="non_tool")
    assert checks(d) == ["invalid_characters_v1"]


def test_newlines_and_tabs_are_valid_characters() -> None:
    d = dialog([user("Hi\nthere\tfriend\r\n"), answer("Hello!\n- one\n- two")], dialog_type="non_tool")
    assert checks(d) == []


@pytest.mark.parametrize("text", [
    "Il fera beau à Lisbonne, environ 21 degrés.",
    "Es wird sonnig, die Straße ist trocken.",
    "Будет солнечно, около 21 градуса.",
    "明天里斯本晴天，大约二十一度。",
])
def test_single_language_accepts_one_script(text: str) -> None:
    d = dialog([user("?"), answer(text)], dialog_type="non_tool")
    assert "single_language_v1" not in checks(d)


@pytest.mark.parametrize("text", [
    "It will be sunny, около 21 градуса.",
    "It will be sunny 明天晴天.",
    "Il fera beau, καλός καιρός.",
])
def test_single_language_rejects_mixed_scripts(text: str) -> None:
    d = dialog([user("?"), answer(text)], dialog_type="non_tool")
    assert checks(d) == ["single_language_v1"]


def test_single_language_only_judges_assistant() -> None:
    d = dialog([user("Weather in 東京 please"), answer("It is sunny in Tokyo.")], dialog_type="non_tool")
    assert checks(d) == []


def test_single_language_accepts_plain_japanese() -> None:
    """Japanese is one language written with kanji, hiragana and katakana together."""
    d = dialog([user("?"), answer("明日のリスボンは晴れです。")], dialog_type="non_tool")
    assert "single_language_v1" not in checks(d)


def test_single_language_accepts_micro_sign_in_english() -> None:
    d = dialog([user("?"), answer("Take 50 µg once a day.")], dialog_type="non_tool")
    assert "single_language_v1" not in checks(d)


# --------------------------------------------------------------------------------------------- dialog types


def _two_calls() -> list[Turn]:
    return [user(), call(tc("c1"), tc("c2", city="Oslo", days=2)), result("c1"), result("c2"), answer()]


def _dependent() -> list[Turn]:
    return [user(), call(tc("c1")), result("c1"), call(tc("c2", name="convert_temperature", value=21.5)),
            result("c2", name="convert_temperature", content='{"value": 70.7}'), answer("About 70.7 F.")]


def _clarification() -> list[Turn]:
    return [user("What will the weather be?"), answer("Which city, and for how many days?"),
            user("Lisbon, 3 days"), call(tc()), result(), answer()]


VALID_BY_TYPE: dict[DialogType, list[Turn]] = {
    "single": [user(), call(tc()), result(), answer()],
    "parallel": _two_calls(),
    "dependent": _dependent(),
    "non_tool": [user("Hello"), answer("Hi, how can I help?")],
    "clarification": _clarification(),
}


@pytest.mark.parametrize("kind", list(VALID_BY_TYPE))
def test_dialog_type_valid(kind: DialogType) -> None:
    assert score_dialog(dialog(VALID_BY_TYPE[kind], dialog_type=kind), MAX_CHARS) == []


@pytest.mark.parametrize(("kind", "turns", "phrase"), [
    ("non_tool", [user(), call(tc()), result(), answer()], "non-tool dialog holds a function call"),
    ("single", [user("Hello"), answer("Hi")], "holds no function call"),
    ("single", _two_calls(), "makes 2 calls in one turn"),
    ("parallel", [user(), call(tc()), result(), answer()], "only one call"),
    ("parallel", [user("Hello"), answer("Hi")], "holds no function call"),
    ("dependent", [user("Hello"), answer("Hi")], "holds no function call"),
    ("clarification", [user(), call(tc()), result(), answer()], "calls before asking"),
    ("clarification", [user("Weather?"), answer("Which city?"), user("Lisbon"), answer("Sunny.")],
     "holds no function call"),
    ("dependent", [user(), call(tc()), result(), answer()], "fewer than two steps"),
    ("dependent", [user(), call(tc("c1")), result("c1"), call(tc("c2")), result("c2"), answer()], "nothing new"),
])
def test_dialog_type_fails(kind: DialogType, turns: list[Turn], phrase: str) -> None:
    d = dialog(turns, dialog_type=kind)
    assert checks(d) == ["dialog_type_v2"]
    assert phrase in reason_of(d, "dialog_type_v2")


# --------------------------------------------------------------------------------------------- decide


def test_multi_turn_dialog_type() -> None:
    turns = [user("Hello"), answer("Hi, how can I help?"), user(), call(tc()), result(), answer()]
    good = dialog(turns, dialog_type="multi_turn")
    good.segments = ["non_tool", "single"]
    assert score_dialog(good, MAX_CHARS) == []
    short = dialog(turns[:2] + turns[3:], dialog_type="multi_turn")
    short.segments = ["non_tool", "single"]
    assert "only 1 user turns" in reason_of(short, "dialog_type_v2")
    no_call = dialog([user("Hello"), answer("Hi"), user("Bye"), answer("Bye!")], dialog_type="multi_turn")
    no_call.segments = ["non_tool", "single"]
    assert "needs 1 calling turns" in reason_of(no_call, "dialog_type_v2")
    one_part = dialog(turns, dialog_type="multi_turn")
    one_part.segments = ["single"]
    assert "fewer than two parts" in reason_of(one_part, "dialog_type_v2")


def test_decide_rejects_with_first_failure() -> None:
    args = dict(GOOD_ARGS)
    del args["city"]
    d = dialog([user(), call(tc(**{**args, "colour": "red"})), answer()])
    failures = score_dialog(d, MAX_CHARS)
    assert [f.check for f in failures] == ["required_params_v1", "unknown_params_v1", "role_order_v2"]
    decided = decide(d, failures)
    assert decided is d
    assert decided.status == "rejected"
    assert decided.rejected_by == "required_params_v1"
    assert decided.reason == failures[0].reason


def test_decide_keeps_dialog_without_failures() -> None:
    d = single_dialog()
    decided = decide(d, score_dialog(d, MAX_CHARS))
    assert decided.accepted
    assert decided.rejected_by is None and decided.reason is None


def test_decide_does_not_overwrite_earlier_rejection() -> None:
    d = single_dialog()
    d.reject("structured_output_v1", "no answer")
    decided = decide(d, [Failure(check="role_order_v2", reason="bad order")])
    assert decided.rejected_by == "structured_output_v1"
    assert decided.reason == "no answer"


def test_verify_dialogs_leaves_the_callers_dialogs_unchanged() -> None:
    """verify_dialogs decides copies: the dialogs it was given keep their status and raw outputs."""
    import asyncio

    from tasks.verification.dialogs import verify_dialogs

    good = single_dialog()
    bad = single_dialog(arguments={**GOOD_ARGS, "days": "three"}).model_copy(update={"dialog_id": "d2"})
    good.raw_outputs.append("generation output")
    decided, rows = asyncio.run(verify_dialogs([good, bad], None, RuleLimits(max_assistant_chars=MAX_CHARS)))
    assert [d.status for d in decided] == ["accepted", "rejected"]
    assert decided[1].rejected_by == "argument_values_v1"
    assert bad.status == "accepted" and bad.rejected_by is None
    assert decided[0].raw_outputs == ["generation output"] and decided[0].raw_outputs is not good.raw_outputs
    assert [r["passed"] for r in rows] == [True, False]
