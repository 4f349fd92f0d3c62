"""Tests for the Great Expectations suites on a published dataset (schemas.suites, tasks.verification.expectations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pytest

from schemas.records import APISpec, Dialog, DialogType, ToolCall, Turn
from schemas.suites import SAMPLES_SUITE, SUMMARY_SUITE, SuiteBounds, mix_expectation
from tasks.dataset.rows import toolace_row
from tasks.verification.expectations import SuiteOutcome, check_published, sample_records
from toolace.config import RunConfig

PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "description": "Days ahead"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
    },
    "required": ["city", "days"],
}
RESULT: dict[str, Any] = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
GOOD_RESULT = json.dumps({"summary": "Sunny, 21 degrees"})
BOUNDS = SuiteBounds(dialog_mix={"single": 0.5, "parallel": 0.5}, max_assistant_chars=2000)
ACCEPTANCE = {"generated": 5, "accepted": 4}


def api(name: str) -> APISpec:
    return APISpec(api_id=f"api-{name}", name=name, description=f"The {name} API.", parameters=PARAMS,
                   result_schema=RESULT, domain="Weather", node_ids=["n1"], operators=["base"])


FORECAST, ALERTS = api("get_forecast"), api("get_alerts")


def dialog(dialog_id: str, kind: DialogType = "single", days: Any = 3, answer: str = "It will be sunny.",
           tools: list[APISpec] | None = None) -> Dialog:
    calls = [ToolCall(id="c1", name="get_forecast", arguments={"city": "Lisbon", "days": days})]
    if kind == "parallel":
        calls.append(ToolCall(id="c2", name="get_forecast", arguments={"city": "Porto", "days": 2, "unit": "celsius"}))
    turns = [Turn(role="user", content="What is the forecast for Lisbon?"), Turn(role="assistant", tool_calls=calls)]
    turns += [Turn(role="tool", tool_call_id=c.id, name=c.name, content=GOOD_RESULT) for c in calls]
    turns.append(Turn(role="assistant", content=answer))
    return Dialog(dialog_id=dialog_id, dialog_type=kind, domain="Weather", tools=tools or [FORECAST, ALERTS],
                  turns=turns, segments=[kind], apis_used=["get_forecast"])


def good_dialogs() -> list[Dialog]:
    return [dialog("d0"), dialog("d1"), dialog("d2", "parallel"), dialog("d3", "parallel")]


def rows_of(dialogs: list[Dialog]) -> list[dict[str, Any]]:
    return [toolace_row(d) for d in dialogs]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[SuiteOutcome, Path]:
    docs = tmp_path_factory.mktemp("run") / "dataset" / "data_docs"
    return check_published(rows_of(good_dialogs()), ACCEPTANCE, BOUNDS, str(docs)), docs


# ------------------------------------------------------------------------------------------- no GX needed


def test_share_bounds_round_outward_for_small_datasets() -> None:
    bounds = SuiteBounds(dialog_mix={"single": 0.3, "parallel": 0.7}, max_assistant_chars=100)
    assert bounds.share_bounds()["single"] == pytest.approx((0.05, 0.55))
    assert bounds.share_bounds(rows=3)["single"] == pytest.approx((0.0, 2 / 3))
    assert bounds.share_bounds(rows=20)["single"] == pytest.approx((0.05, 0.55))
    assert bounds.share_bounds(rows=3)["non_tool"] == pytest.approx((0.0, 1 / 3))  # not in the mix: expected 0
    assert bounds.share_bounds(rows=0)["single"] == (0.0, 1.0)


def test_bounds_from_config() -> None:
    config = RunConfig(candidate_tools=3, max_segments=3, max_assistant_chars=1500)
    bounds = SuiteBounds.from_config(config, min_acceptance_rate=0.1)
    assert bounds.max_tools == 6 and bounds.max_assistant_chars == 1500 and bounds.min_acceptance_rate == 0.1
    assert sum(bounds.expected_shares().values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        SuiteBounds(dialog_mix={"single": 0.0}, max_assistant_chars=100)


def test_sample_records_derive_the_columns() -> None:
    records, problems = sample_records(rows_of([dialog("d0", "parallel", answer="")]), BOUNDS)
    assert records == [{"id": "d0", "dialog_type": "parallel", "n_tools": 2, "n_turns": 5, "max_assistant_chars": 0,
                        "empty_turns": 1, "calls_valid": True, "chat_format_ok": True, "chat_templates_ok": True}]
    assert problems == {}


# ------------------------------------------------------------------------------------------------ GX runs


def test_good_dataset_passes_every_expectation(good: tuple[SuiteOutcome, Path]) -> None:
    outcome, _ = good
    assert outcome.success, outcome.failed
    assert [r.expectation for r in outcome.results] == BOUNDS.expectation_names()
    assert outcome.result("gx_row_count_v1").observed == 4
    assert outcome.result("gx_acceptance_rate_v1").observed == pytest.approx(0.8)
    assert outcome.result(mix_expectation("single")).observed == pytest.approx(0.5)
    assert outcome.result("gx_tool_count_v1").details == {"min_value": 1, "max_value": 16}


def test_data_docs_written_next_to_the_dataset(good: tuple[SuiteOutcome, Path]) -> None:
    outcome, docs = good
    assert outcome.data_docs_index == str(docs / "index.html")
    html = (docs / "index.html").read_text(encoding="utf-8")
    assert SAMPLES_SUITE in html and SUMMARY_SUITE in html


def test_data_docs_to_an_fsspec_url() -> None:
    url = "memory://toolace-docs/run-1/dataset/data_docs"
    outcome = check_published([], {"generated": 0, "accepted": 0}, BOUNDS, url)
    assert outcome.data_docs_index == f"{url}/index.html"
    fs = fsspec.filesystem("memory")
    assert fs.exists("/toolace-docs/run-1/dataset/data_docs/index.html")
    assert not outcome.success and "gx_row_count_v1" in outcome.failed  # 0 rows: fails, no crash


def _bad(case: str) -> tuple[list[Dialog], dict[str, int], set[str]]:
    dialogs = good_dialogs()
    if case == "duplicate_id":
        dialogs[1] = dialog("d0")
        return dialogs, ACCEPTANCE, {"gx_unique_ids_v1"}
    if case == "empty_turn":
        dialogs[0] = dialog("d0", answer="   ")
        return dialogs, ACCEPTANCE, {"gx_non_empty_turns_v1"}
    if case == "too_many_tools":
        dialogs[0] = dialog("d0", tools=[FORECAST] + [api(f"tool_{i}") for i in range(16)])
        return dialogs, ACCEPTANCE, {"gx_tool_count_v1"}
    if case == "invalid_call":
        dialogs[0] = dialog("d0", days="three")
        return dialogs, ACCEPTANCE, {"gx_calls_valid_v1"}
    if case == "mix_out_of_bounds":
        return [dialog(f"d{i}") for i in range(4)], ACCEPTANCE, {mix_expectation("single"),
                                                                 mix_expectation("parallel")}
    if case == "acceptance_under_floor":
        return dialogs, {"generated": 40, "accepted": 4}, {"gx_acceptance_rate_v1"}
    if case == "too_long":
        dialogs[2] = dialog("d2", "parallel", answer="x" * 2001)
        return dialogs, ACCEPTANCE, {"gx_assistant_length_v1"}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["duplicate_id", "empty_turn", "too_many_tools", "invalid_call", "mix_out_of_bounds",
                                  "acceptance_under_floor", "too_long"])
def test_each_defect_fails_its_expectation(case: str) -> None:
    dialogs, acceptance, expected = _bad(case)
    outcome = check_published(rows_of(dialogs), acceptance, BOUNDS, None)
    assert not outcome.success
    assert set(outcome.failed) == expected
    assert outcome.data_docs_index is None


def test_failure_details_name_the_sample() -> None:
    dialogs = good_dialogs()
    dialogs[1] = dialog("d0")
    dialogs[2] = dialog("d2", "parallel", days="three")
    outcome = check_published(rows_of(dialogs), ACCEPTANCE, BOUNDS, None)
    assert set(outcome.result("gx_unique_ids_v1").details["unexpected_ids"]) == {"d0"}
    assert outcome.result("gx_unique_ids_v1").observed == 2
    calls = outcome.result("gx_calls_valid_v1")
    assert calls.details["unexpected_ids"] == ["d2"]
    assert list(calls.details["call_problems"]) == ["d2"]
    assert calls.details["call_problems"]["d2"][0].startswith("argument_values_v1: get_forecast.days")
    mix = check_published(rows_of([dialog(f"d{i}") for i in range(4)]), ACCEPTANCE, BOUNDS, None)
    single = mix.result(mix_expectation("single"))
    assert single.observed == 1.0 and single.details == {"min_value": 0.25, "max_value": 0.75}


def test_empty_dataset_fails_without_crashing() -> None:
    outcome = check_published([], {"generated": 10, "accepted": 0}, BOUNDS, None)
    assert not outcome.success
    assert set(outcome.failed) == {"gx_row_count_v1", "gx_acceptance_rate_v1"}
    assert outcome.rows == 0 and outcome.result("gx_row_count_v1").observed == 0


def test_unreadable_rows_fail_without_crashing() -> None:
    rows: list[Any] = [{"id": "x"}, {"id": "y", "system": "no tools here", "conversations": "not a list"}]
    outcome = check_published(rows, ACCEPTANCE, BOUNDS, None)
    assert {"gx_calls_valid_v1", "gx_tool_count_v1", "gx_turn_count_v1", "gx_known_dialog_types_v1"} <= set(
        outcome.failed)
    problems = outcome.result("gx_calls_valid_v1").details["call_problems"]
    assert problems["x"][0].startswith("tools_present_v1") and problems["y"][0].startswith("tools_present_v1")


def test_great_expectations_is_prefetched_in_a_background_thread() -> None:
    import sys

    from tasks.verification.expectations import prefetch_great_expectations

    thread = prefetch_great_expectations()
    assert thread.daemon and thread.name == "toolace-prefetch-gx"
    thread.join(timeout=120)
    assert not thread.is_alive() and "great_expectations" in sys.modules


def test_the_prefetch_of_a_run_does_not_outlive_it() -> None:
    from tasks.verification.expectations import great_expectations_prefetched

    with great_expectations_prefetched() as thread:
        assert thread.name == "toolace-prefetch-gx"
    assert not thread.is_alive()  # waited for when the span ends: no import runs on after the run
