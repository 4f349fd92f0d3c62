"""The mix asked for is the mix published: dialogs are planned against per-type quotas of accepted dialogs, a type
rejected more is planned more within its share of the attempt budget, and a type that cannot reach its share is
said as soon as that is known (a one-line error, or a warning with ``mix_shortfall: warn``)."""

from __future__ import annotations

import json
import random

import pytest

from flows.stages.dialogs import MixShortfall
from flows.stages.publishing import DatasetRejected
from flows.toolace_pipeline import toolace_pipeline
from tasks.dialogs.quotas import MIN_EVIDENCE, MixPlanner, type_quotas, wilson_upper
from tests.test_call_format_and_publish import make_api
from tests.test_self_guidance import tool_dialog
from toolace.config import RunConfig

MIX = {"single": 0.3, "parallel": 0.2, "dependent": 0.15, "non_tool": 0.1, "clarification": 0.1, "multi_turn": 0.15}


def simulate(planner: MixPlanner, acceptance: dict[str, float], batch: int = 4,
             seed: int = 0) -> list[str]:
    """Plan and decide batches until the planner stops; each dialog is accepted with its type's probability.
    Returns the shortfall lines said along the way."""
    rng, said = random.Random(seed), []
    while plans := planner.next_plans(batch):
        decided = []
        for plan in plans:
            dialog = tool_dialog()
            if rng.random() >= acceptance.get(planner._type_of[plan.index], 0.0):
                dialog.reject("dialog_type_v2", "the dialog is not of its planned type")
            decided.append(dialog)
        planner.record(plans, decided)
        said.extend(planner.shortfalls())
    return said


def apis() -> list:
    return [make_api(f"api_{i}") for i in range(8)]


def test_quotas_split_the_target_by_largest_remainders() -> None:
    assert type_quotas(MIX, 12) == {"single": 4, "parallel": 2, "dependent": 2, "non_tool": 1, "clarification": 1,
                                    "multi_turn": 2}
    assert sum(type_quotas(MIX, 997).values()) == 997
    assert type_quotas({"single": 1.0, "parallel": 0.0}, 5) == {"single": 5}


def test_when_every_type_is_accepted_the_published_mix_is_the_quotas() -> None:
    planner = MixPlanner(apis(), 40, MIX, 4, seed=1)
    assert simulate(planner, dict.fromkeys(MIX, 1.0)) == []
    assert {t: tally.accepted for t, tally in planner.tallies.items()} == type_quotas(MIX, 40)
    assert planner.planned == 40  # nothing planned beyond the target


def test_a_type_rejected_more_is_planned_more_and_still_reaches_its_quota() -> None:
    planner = MixPlanner(apis(), 40, MIX, 4, seed=1)
    simulate(planner, {**dict.fromkeys(MIX, 1.0), "parallel": 0.5})
    parallel = planner.tallies["parallel"]
    assert parallel.accepted == parallel.quota == 8
    assert parallel.planned >= 12  # about one in two accepted: planned about twice its quota
    assert sum(t.accepted for t in planner.tallies.values()) == 40


def test_a_type_that_never_passes_is_given_up_and_the_others_reach_the_target() -> None:
    planner = MixPlanner(apis(), 12, MIX, 4, seed=11, tolerance=1.0)
    said = simulate(planner, {"single": 1.0, "multi_turn": 1.0, "non_tool": 0.5})
    assert said == []  # within a tolerance of 1.0 any share passes the suite
    assert planner.given_up == {"parallel", "dependent", "clarification"}
    assert all(planner.tallies[t].planned == planner.tallies[t].budget for t in planner.given_up)
    assert sum(t.accepted for t in planner.tallies.values()) == 12
    assert planner.planned <= planner.budget


def test_a_shortfall_is_said_once_as_soon_as_the_evidence_shows_it() -> None:
    planner = MixPlanner(apis(), 40, {"single": 0.5, "parallel": 0.5}, 4, seed=3, tolerance=0.1)
    said = simulate(planner, {"single": 1.0, "parallel": 0.0})
    (line,) = said
    assert line.startswith("dialog type parallel cannot reach its share of the mix: 0 of ")
    assert "mostly rejected by dialog_type_v2" in line and "below the 16 the expectation suite needs" in line
    assert planner.tallies["parallel"].decided >= MIN_EVIDENCE


def test_planning_is_deterministic() -> None:
    first, second = (MixPlanner(apis(), 20, MIX, 4, seed=5) for _ in range(2))
    assert [p.model_dump() for p in first.next_plans(20)] == [p.model_dump() for p in second.next_plans(20)]


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert 0.3 < wilson_upper(0, 8) < 0.35
    assert wilson_upper(10, 10) == 1.0


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_whose_model_never_manages_a_type_stops_early_naming_it(llm, tmp_path, mixed_corpus):
    """The scripted model never makes a parallel dialog its verifier accepts: with half the mix parallel and a
    tolerance of 0.1 the run stops once that is clear, long before its attempt budget (60) is spent; with
    ``mix_shortfall: warn`` it goes on, makes the target from the other type, and the expectation suite judges
    the mix."""
    def config(out: str, **more: object) -> RunConfig:
        return RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=out, run_id="run-a", apis=4,
                         dialogs=20, batch_size=4, target_model=None, corpus=mixed_corpus, template_check_rows=0,
                         dialog_mix={"single": 0.5, "parallel": 0.5}, mix_tolerance=0.1, **more)

    with pytest.raises(MixShortfall, match=r"^run run-a: dialog type parallel cannot reach its share of the mix: "
                                           r"0 of \d+ accepted \(0%\), mostly rejected by dialog_type_v2") as info:
        toolace_pipeline(config(str(tmp_path / "fail")))
    assert "mix_shortfall: warn" in str(info.value)
    assert not (tmp_path / "fail" / "runs" / "run-a").exists()
    decided = int(str(info.value).split("accepted (")[0].rsplit(" of ", 1)[1])
    assert MIN_EVIDENCE <= decided < 30  # parallel's share of the budget is 30 attempts: stopped well before

    with pytest.raises(DatasetRejected, match="gx_dialog_mix_parallel_v1"):  # warned, made, judged by the suite
        toolace_pipeline(config(str(tmp_path / "warn"), mix_shortfall="warn", min_acceptance_rate=0.0))
    manifest = json.loads((tmp_path / "warn" / "staging" / "run-a" / "manifest.json").read_text())
    assert manifest["dataset"]["dialogs"] == 20
