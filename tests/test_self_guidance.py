"""Self-guidance logic: bounds calibration, verdicts, instructions, probes and the per-dialog record."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.records import APISpec, Dialog, ToolCall, Turn
from tasks.dialogs.self_guidance import (
    GuidanceRecord,
    GuidanceRound,
    LossBounds,
    append_round,
    apply_record,
    calibrate_bounds,
    fixed_bounds,
    guidance_instruction,
    judge,
    quantile,
    start_record,
)
from tasks.evaluation.bfcl_eval import Answer, bfcl_parameters, build_messages, item_from_dialog, score_item
from tasks.formats.call_format import render_calls


def api(name: str) -> APISpec:
    return APISpec(api_id=name, name=name, description=f"Does {name.replace('_', ' ')}.",
                   parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                   result_schema={"type": "object", "properties": {"temp": {"type": "number"}}},
                   domain="Weather", node_ids=["n1"], operators=[])


def dialog(turns: list[Turn], dialog_type: str = "single") -> Dialog:
    return Dialog(dialog_id="d1", dialog_type=dialog_type, domain="Weather",
                  tools=[api("get_weather"), api("get_forecast")], turns=turns)


FIRST_CALLS = [ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"}),
               ToolCall(id="c2", name="get_weather", arguments={"city": "Bergen"})]


def tool_dialog() -> Dialog:
    return dialog([
        Turn(role="user", content="Hi there"),
        Turn(role="assistant", content="Hello! How can I help?"),
        Turn(role="user", content="Weather in Oslo and Bergen?"),
        Turn(role="assistant", tool_calls=FIRST_CALLS),
        Turn(role="tool", tool_call_id="c1", name="get_weather", content=json.dumps({"temp": 3})),
        Turn(role="tool", tool_call_id="c2", name="get_weather", content=json.dumps({"temp": 5})),
        Turn(role="assistant", content="Oslo is 3 degrees, Bergen 5."),
        Turn(role="user", content="And tomorrow in Oslo?"),
        Turn(role="assistant", tool_calls=[ToolCall(id="c3", name="get_forecast", arguments={"city": "Oslo"})]),
    ], dialog_type="multi_turn")


# ------------------------------------------------------------------------------------------------ probes


def test_probe_item_is_the_first_request_as_bfcl_asks_it() -> None:
    d = tool_dialog()
    item = item_from_dialog(d)
    assert item is not None
    assert item.category == "parallel_multiple" and item.kind == "parallel_multiple"
    assert item.question == [[{"role": "user", "content": "Hi there"},
                              {"role": "assistant", "content": "Hello! How can I help?"},
                              {"role": "user", "content": "Weather in Oslo and Bergen?"}]]
    assert item.possible_answer == [{"get_weather": {"city": ["Oslo"]}}, {"get_weather": {"city": ["Bergen"]}}]
    assert [f["name"] for f in item.functions] == ["get_weather", "get_forecast"]
    assert item.functions[0]["parameters"]["type"] == "dict"  # BFCL's type names
    messages = build_messages(item)
    assert messages[0]["role"] == "system" and "get_forecast" in messages[0]["content"]
    assert all(render_calls(FIRST_CALLS) not in m["content"] for m in messages)


@pytest.mark.parametrize(("answer", "correct"), [
    ('[get_weather(city="Bergen"), get_weather(city="Oslo")]', True),  # order-free, as BFCL's parallel checker
    ('[get_weather(city="oslo"), get_weather(city="Bergen")]', True),  # BFCL standardises strings
    ('[get_weather(city="Oslo")]', False),
    ('[get_forecast(city="Oslo"), get_weather(city="Bergen")]', False),
    ("It is cold in Oslo.", False),
])
def test_probe_answers_are_judged_by_the_bfcl_checker(answer: str, correct: bool) -> None:
    item = item_from_dialog(tool_dialog())
    assert item is not None
    assert score_item(item, Answer(answer)).verdict.valid is correct


def test_probe_with_one_call_among_several_tools_is_a_multiple_item() -> None:
    d = dialog([Turn(role="user", content="Weather in Oslo?"), Turn(role="assistant", tool_calls=FIRST_CALLS[:1])])
    item = item_from_dialog(d)
    assert item is not None and item.category == "multiple"
    assert item.question == [[{"role": "user", "content": "Weather in Oslo?"}]]
    assert score_item(item, Answer('[get_weather(city="Oslo")]')).verdict.valid


def test_non_tool_dialog_has_no_probe() -> None:
    d = dialog([Turn(role="user", content="Tell me a joke"), Turn(role="assistant", content="Why did ...")],
               dialog_type="non_tool")
    assert item_from_dialog(d) is None
    assert item_from_dialog(dialog([])) is None


def test_bfcl_parameters_rename_types_at_every_level() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "number"}, "k": {"type": "integer"},
        "opts": {"type": "object", "properties": {"w": {"type": "number"}}},
        "tags": {"type": "array"}, "points": {"type": "array", "items": {"type": "number"}}}}
    converted = bfcl_parameters(schema)
    assert converted["type"] == "dict"
    props = converted["properties"]
    assert props["n"]["type"] == "float" and props["k"]["type"] == "integer"
    assert props["opts"] == {"type": "dict", "properties": {"w": {"type": "float"}}}
    assert props["tags"]["items"] == {"type": "any"} and props["points"]["items"] == {"type": "float"}
    assert schema["properties"]["n"]["type"] == "number"  # the input is not changed


# ------------------------------------------------------------------------------------------- calibration


def test_quantile_linear_interpolation() -> None:
    data = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert quantile(data, 0.0) == 1.0
    assert quantile(data, 1.0) == 5.0
    assert quantile(data, 0.5) == 3.0
    assert quantile(data, 0.25) == 2.0
    assert quantile(data, 0.9) == pytest.approx(4.6)
    assert quantile([1.0, 2.0], 0.5) == 1.5
    assert quantile([7.0], 0.3) == 7.0
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile(data, 1.5)


def test_quantile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    data = [0.31, 1.7, 0.92, 2.4, 0.05, 1.1, 0.66]
    for q in (0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0):
        assert quantile(data, q) == pytest.approx(float(np.quantile(data, q)))


def test_calibrate_on_known_data() -> None:
    losses = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    correct = [True, True, True, True, False, True, False, False, False, False]
    bounds = calibrate_bounds(losses, correct)
    assert bounds.source == "calibrated"
    assert bounds.lower == pytest.approx(0.6)  # median of the correct ones: 0.2 0.4 0.6 0.8 1.2
    assert bounds.upper == pytest.approx(1.82)  # q0.9 of all ten
    assert bounds.probe_size == 10
    assert bounds.probe_correct == 5
    assert "correctly answered" in bounds.method and "q0.9" in bounds.method


def test_calibrate_other_quantiles() -> None:
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    bounds = calibrate_bounds(losses, [True] * 5, lower_quantile=0.25, upper_quantile=1.0)
    assert (bounds.lower, bounds.upper) == (2.0, 5.0)


def test_calibrate_falls_back_when_few_are_correct() -> None:
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    bounds = calibrate_bounds(losses, [False, False, True, False, False])
    assert bounds.lower == pytest.approx(2.0)  # q0.25 of all losses
    assert bounds.upper == pytest.approx(4.6)
    assert bounds.probe_correct == 1
    assert "only 1 probe(s) answered correctly" in bounds.method and "q0.25 of all" in bounds.method
    none_right = calibrate_bounds(losses, [False] * 5)
    assert none_right.lower == pytest.approx(2.0) and "only 0" in none_right.method


def test_calibrate_ignores_missing_losses_and_says_so() -> None:
    bounds = calibrate_bounds([1.0, None, 2.0, 3.0, float("nan"), 4.0], [True, True, True, False, True, False])
    assert bounds.probe_size == 4
    assert bounds.probe_correct == 2
    assert bounds.lower == pytest.approx(1.5)
    assert "2 probe(s) without a loss ignored" in bounds.method


def test_tiny_probe_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        calibrate_bounds([1.0, 2.0, 3.0], [True, True, False])
    with pytest.raises(ValueError, match="only 3 probe"):
        calibrate_bounds([1.0, 2.0, None, 3.0], [True, True, True, False])
    with pytest.raises(ValueError):
        calibrate_bounds([], [])
    with pytest.raises(ValueError, match="at least 8"):
        calibrate_bounds([1.0, 2.0, 3.0, 4.0, 5.0], [True] * 5, min_probe=8)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="4 losses but 3"):
        calibrate_bounds([1.0, 2.0, 3.0, 4.0], [True, True, False])
    with pytest.raises(ValueError, match="lower_quantile"):
        calibrate_bounds([1.0, 2.0, 3.0, 4.0], [True] * 4, lower_quantile=-0.1)


def test_crossed_bounds_are_widened_to_the_largest_loss() -> None:
    # the correct answers are the high-loss ones: q0.5 of correct (4.5) is above q0.5 of all (3.0)
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    bounds = calibrate_bounds(losses, [False, False, False, True, True], upper_quantile=0.5)
    assert bounds.lower == pytest.approx(4.5)
    assert bounds.upper == pytest.approx(5.0)
    assert "widened to the largest probe loss" in bounds.method


def test_crossed_bounds_with_no_room_get_a_margin() -> None:
    equal = calibrate_bounds([2.0, 2.0, 2.0, 2.0], [True] * 4)
    assert equal.lower == pytest.approx(2.0)
    assert equal.upper == pytest.approx(2.1)  # 5% of the lower bound
    assert "widened to lower + max(" in equal.method
    top = calibrate_bounds([0.0, 0.0, 4.0, 4.0, 4.0], [False, False, True, True, True], lower_quantile=1.0)
    assert top.lower == pytest.approx(4.0)
    assert top.upper == pytest.approx(5.0)  # a quarter of the spread 0..4
    zero = calibrate_bounds([0.0] * 4, [True] * 4)
    assert zero.upper == pytest.approx(0.01)
    assert all(b.lower < b.upper for b in (equal, top, zero))


# -------------------------------------------------------------------------------------------- the bounds


def test_fixed_bounds() -> None:
    bounds = fixed_bounds(0.5, 1.5)
    assert (bounds.lower, bounds.upper, bounds.source) == (0.5, 1.5, "fixed")
    assert bounds.probe_size == 0 and bounds.probe_correct == 0
    assert "fixed" in bounds.method


@pytest.mark.parametrize(("lower", "upper"), [(1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_bounds_must_be_ordered_and_finite(lower: float, upper: float) -> None:
    with pytest.raises(ValidationError):
        fixed_bounds(lower, upper)


def test_bounds_round_trip_as_json() -> None:
    bounds = calibrate_bounds([1.0, 2.0, 3.0, 4.0, 5.0], [True, True, False, False, True])
    assert LossBounds.model_validate_json(bounds.model_dump_json()) == bounds


@pytest.mark.parametrize(("loss", "verdict"), [
    (0.0, "too_easy"), (0.999, "too_easy"), (1.0, "in_range"), (1.5, "in_range"), (2.0, "in_range"),
    (2.0001, "too_hard"), (50.0, "too_hard"), (None, "unscored"), (float("nan"), "unscored"),
])
def test_judge_on_edges(loss: float | None, verdict: str) -> None:
    assert judge(loss, fixed_bounds(1.0, 2.0)) == verdict


# ------------------------------------------------------------------------------------------ instructions

NAMES = ["get_weather", "get_forecast", "convert_units"]


def test_instructions_differ_per_verdict() -> None:
    easy = guidance_instruction("too_easy", "single", NAMES)
    hard = guidance_instruction("too_hard", "single", NAMES)
    assert easy and hard and easy != hard
    assert "too easy" in easy and "further from the function descriptions" in easy and "indirectly" in easy
    assert "too hard" in hard and "simpler" in hard and "every required value stated plainly" in hard
    assert guidance_instruction("in_range", "single", NAMES) == ""
    assert guidance_instruction("unscored", "parallel", NAMES) == ""
    with pytest.raises(ValueError, match="unknown verdict"):
        guidance_instruction("meh", "single", NAMES)


def test_too_easy_asks_for_more_apis_where_the_type_allows() -> None:
    parallel = guidance_instruction("too_easy", "parallel", NAMES)
    assert "more calls" in parallel and "three different values" in parallel
    assert all(name in parallel for name in NAMES)
    multi = guidance_instruction("too_easy", "multi_turn", NAMES)
    assert "more than one of the offered functions" in multi and "get_forecast" in multi
    dependent = guidance_instruction("too_easy", "dependent", NAMES)
    assert "without saying that one result feeds the other" in dependent
    single = guidance_instruction("too_easy", "single", NAMES)
    assert "more calls" not in single and "get_weather" not in single  # one call stays one call
    assert guidance_instruction("too_easy", "parallel", []).count("offered functions:") == 0


def test_clarification_keeps_its_missing_value() -> None:
    for verdict in ("too_easy", "too_hard"):
        assert "leave out the one value" in guidance_instruction(verdict, "clarification", NAMES)
    assert "leave out" not in guidance_instruction("too_hard", "single", NAMES)


def test_non_tool_instructions() -> None:
    easy = guidance_instruction("too_easy", "non_tool", NAMES)
    hard = guidance_instruction("too_hard", "non_tool", NAMES)
    assert "none of them can do" in easy and "get_weather" in easy
    assert "unrelated" in hard and "simpler" in hard.lower()


# ---------------------------------------------------------------------------------------------- records


def test_record_rounds_and_final_verdict() -> None:
    bounds = fixed_bounds(1.0, 2.0)
    record = start_record(bounds, 0.4)
    assert record.rounds == [GuidanceRound(round=0, loss=0.4, verdict="too_easy", change="")]
    assert record.final_verdict == "too_easy"
    change = record.next_instruction("parallel", NAMES)
    assert "too easy" in change
    record.add_round(2.5, change)
    assert record.final_verdict == "too_hard"
    record.add_round(None, "retry", verdict="rejected (x_v1): previous version kept")
    assert record.final_verdict == "too_hard"  # a failed regeneration leaves the verdict as it was
    later = append_round(record, 1.5, record.next_instruction("parallel", NAMES))
    assert len(record.rounds) == 3 and len(later.rounds) == 4  # append_round copies
    assert later.final_verdict == "in_range"
    assert [r.round for r in later.rounds] == [0, 1, 2, 3]
    assert later.losses == [0.4, 2.5, None, 1.5]
    assert later.rewrites == 3
    assert later.next_instruction("parallel", NAMES) == ""
    assert GuidanceRecord.model_validate_json(later.model_dump_json()) == later


def test_record_without_bounds_is_unscored() -> None:
    record = start_record(None, 0.7)
    assert record.final_verdict == "unscored"
    assert record.next_instruction("single", NAMES) == ""
    assert GuidanceRecord().next_instruction("single", NAMES) == ""


def test_apply_record_writes_the_dialog_fields() -> None:
    record = start_record(fixed_bounds(1.0, 2.0), 0.5)
    record.add_round(1.2, record.next_instruction("multi_turn", NAMES))
    d = apply_record(tool_dialog(), record)
    assert d.losses == [0.5, 1.2]
    assert d.guidance_rounds == 1
    assert d.complexity_loss == 1.2
    assert d.guidance is not None and d.guidance["final_verdict"] == "in_range"
    assert d.guidance["bounds"]["source"] == "fixed"
    assert d.guidance["rounds"][1]["change"].startswith("The last version was too easy")
    json.dumps(d.guidance)


def test_apply_record_keeps_the_loss_of_the_version_kept() -> None:
    record = start_record(fixed_bounds(1.0, 2.0), 0.5)
    record.add_round(None, "harder", verdict="rejected (agent_v1): previous version kept")
    d = apply_record(tool_dialog(), record)
    assert d.complexity_loss == 0.5
    assert d.losses == [0.5, None]
    assert d.guidance_rounds == 1
    assert d.guidance is not None and d.guidance["final_verdict"] == "too_easy"
