"""Loss steering of agentic dialogs as plain functions: the blueprint guidance and prompt, which dialogs are out of
band and what their replacement requests carry, how a round is settled (replaced, kept, recorded as rejected rows),
the figures, the merged counts; and one guided round against the scripted server (a replacement executed and run, a
repeated task rejected)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flows.stages.dialogs import reject_out_of_band
from schemas.environments import Action, AgenticDialog, Blueprint
from tasks.dialogs.self_guidance import OUT_OF_BAND_CHECK, fixed_bounds
from tasks.environments.agentic_dialogs import AgenticSettings, agentic_dialog_id, make_guided_dialogs
from tasks.environments.agentic_guidance import (
    GUIDANCE_REPEAT_CHECK,
    MAX_ACTIONS,
    MAX_OUTPUTS,
    AgenticSteering,
    GuidedBlueprint,
    GuidedOutcome,
    blueprint_guidance,
    merge_counts,
    repeats,
)
from tasks.environments.blueprints import blueprint_messages
from tasks.environments.library_example import library_apis, library_environment
from tests.agentic_library_script import SIMPLER_TASKS, TASKS, guided_library_rule, library_rule
from tests.scripted_llm_server import ScriptedLLMServer, last_user_text, schema_name
from toolace.llm.gateway import GatewaySettings, LLMGateway

BOUNDS = fixed_bounds(1.0, 2.0)
ENV = library_environment()
CHECKOUT = [Action(api="checkout_book", arguments={"book_id": "b1", "member_id": "m1"})]


def agentic(dialog_id: str, loss: float | None, env_id: str = ENV.env_id, goal: str = "Borrow b1 for m1.",
            actions: list[Action] | None = None, outputs: tuple[str, ...] = ("2",)) -> AgenticDialog:
    return AgenticDialog(dialog_id=dialog_id, dialog_type="agentic_multi_turn", domain="Libraries",
                         tools=library_apis(), complexity_loss=loss, losses=[loss],
                         meta={"env_id": env_id, "user_goal": goal, "required_outputs": list(outputs),
                               "ground_truth_actions": [a.model_dump() for a in (actions or CHECKOUT)]})


# ------------------------------------------------------------------------------------------------ the guidance


def test_blueprint_guidance_asks_for_harder_or_simpler_tasks_within_a_blueprints_limits() -> None:
    easy = blueprint_guidance("too_easy", "Borrow b1 for m1.", CHECKOUT, ["2"])
    assert easy.startswith('The last task for this environment was: "Borrow b1 for m1." (1 action: checkout_book; '
                           "1 value to tell the user). It was too easy for the target model. Write a harder task")
    assert "at least 2 actions" in easy and "depend on earlier results" in easy and "at least 2)" in easy
    many = [Action(api="get_book", arguments={"book_id": "b1"})] * MAX_ACTIONS
    capped = blueprint_guidance("too_easy", "Look up b1 many times.", many, ["x"] * MAX_OUTPUTS)
    assert f"at least {MAX_ACTIONS} actions" in capped and f"at least {MAX_OUTPUTS})" in capped
    hard = blueprint_guidance("too_hard", "Check b1 and b3, then borrow b1.", many[:3], ["Dune", "2"])
    assert "too hard for the target model. Write a simpler task" in hard and "at most 2 actions" in hard
    assert "a single action" in blueprint_guidance("too_hard", "Borrow b1.", CHECKOUT, ["2"])
    assert blueprint_guidance("in_range", "g", CHECKOUT, []) == blueprint_guidance("unscored", "g", [], []) == ""
    with pytest.raises(ValueError, match="unknown verdict 'too_long'"):
        blueprint_guidance("too_long", "g", CHECKOUT, [])


def test_the_blueprint_prompt_carries_the_guidance_in_place_of_the_kind_of_task() -> None:
    plain = blueprint_messages(ENV, 1)[1]["content"]
    assert "Write task 2: information the user wants looked up, possibly in several steps. user_goal:" in plain
    assert blueprint_messages(ENV, 1, "")[1]["content"] == plain
    guided = blueprint_messages(ENV, 0, "Write a harder task instead.")[1]["content"]
    assert "Write task 1: a new task. Write a harder task instead. user_goal:" in guided
    assert '"title": "Persuasion"' in guided and "a change the user wants made" not in guided


def test_a_guided_blueprint_repeating_the_task_it_replaces_is_found() -> None:
    request = GuidedBlueprint(origin="a", replaces="a", env_id=ENV.env_id, round=1, verdict="too_easy",
                              guidance="harder", goal="Borrow b1 for m1.", actions=CHECKOUT, outputs=["2"])
    same = Blueprint(blueprint_id="bp", env_id=ENV.env_id, user_goal="Please lend b1 to m1.", changes_state=True,
                     actions=CHECKOUT, outputs=["2"])
    assert repeats(same, request)
    assert not repeats(same.model_copy(update={"outputs": ["2", "b1"]}), request)
    assert not repeats(same.model_copy(update={"actions": [*CHECKOUT, Action(api="get_book")]}), request)
    assert agentic_dialog_id(0, "env", "bp") != agentic_dialog_id(0, "env", "bp", "guided:a:1")


# ------------------------------------------------------------------------------------------------ the rounds


def test_out_of_band_dialogs_get_replacement_requests_for_available_environments() -> None:
    rejected = agentic("rejected", None)
    rejected.reject("final_state_v1", "differs")
    dialogs = [agentic("easy", 0.5), agentic("fine", 1.5), agentic("hard", 3.0), rejected,
               agentic("elsewhere", 0.1, env_id="env_gone"), agentic("edge", 2.0)]
    steering = AgenticSteering.start(dialogs, BOUNDS, [ENV.env_id])
    assert steering.out_of_band() == ["easy", "hard", "elsewhere"]
    requests = steering.requests(1)
    assert [(r.origin, r.replaces, r.verdict, r.round) for r in requests] == [("easy", "easy", "too_easy", 1),
                                                                            ("hard", "hard", "too_hard", 1)]
    assert requests[0].actions == CHECKOUT and requests[0].outputs == ["2"] and requests[0].goal == "Borrow b1 for m1."
    assert requests[0].guidance == blueprint_guidance("too_easy", "Borrow b1 for m1.", CHECKOUT, ["2"])
    assert "simpler" in requests[1].guidance


def test_a_round_replaces_accepted_replacements_keeps_failed_ones_and_records_every_row() -> None:
    easy, hard, worse, fine = agentic("easy", 0.5), agentic("hard", 3.0), agentic("worse", 4.0), agentic("fine", 1.2)
    steering = AgenticSteering.start([easy, hard, worse, fine], BOUNDS, [ENV.env_id])
    requests = steering.requests(1)
    into_band, broken = agentic("easy_r1", None), agentic("worse_r1", None)
    broken.reject("final_state_v1", "the final state differs from the ground truth at loans/2")
    outcomes = [GuidedOutcome(origin="easy", dialog=into_band),
                GuidedOutcome(origin="hard", rejected_by=GUIDANCE_REPEAT_CHECK, reason="repeats"),
                GuidedOutcome(origin="worse", dialog=broken)]
    scored = into_band.model_copy(update={"complexity_loss": 1.4, "losses": [1.4]})
    figures = steering.settle(1, requests, outcomes, [scored])
    assert figures == {"round": 1, "out_of_band": 3, "too_easy": 1, "too_hard": 2, "replaced": 1,
                       "moved_into_band": 1, "failed": 2,
                       "failed_by": {GUIDANCE_REPEAT_CHECK: 1, "final_state_v1": 1}}
    assert [r.origin for r in steering.requests(2)] == ["hard", "worse"]  # the kept versions, still out of band

    rows = steering.finish()
    assert [d.dialog_id for d in rows] == ["easy_r1", "hard", "worse", "fine", "easy", "worse_r1"]
    replaced = rows[4]
    assert (replaced.status, replaced.rejected_by) == ("rejected", OUT_OF_BAND_CHECK)
    assert replaced.reason == "loss 0.5 too_easy (bounds 1.000-2.000): replaced by guided dialog easy_r1 (round 1)"
    assert rows[5].rejected_by == "final_state_v1"
    kept = rows[0]
    assert kept.accepted and kept.complexity_loss == 1.4 and kept.losses == [0.5, 1.4] and kept.guidance_rounds == 1
    assert kept.guidance is not None and kept.guidance["final_verdict"] == "in_range"
    assert kept.guidance["rounds"][1]["change"] == requests[0].guidance
    hard_kept = rows[1]
    assert hard_kept.losses == [3.0, None] and hard_kept.guidance_rounds == 1 and hard_kept.complexity_loss == 3.0
    assert hard_kept.guidance is not None
    assert hard_kept.guidance["rounds"][1]["verdict"] == f"rejected ({GUIDANCE_REPEAT_CHECK}): previous version kept"
    assert rows[2].losses == [4.0, None] and rows[3].losses == [1.2] and rows[3].guidance_rounds == 0

    for dialog, record in steering.kept():  # the rule every type meets, here with keep_out_of_band off
        reject_out_of_band(dialog, record, BOUNDS, keep_out_of_band=False)
    assert [d.accepted for d in rows[:4]] == [True, False, False, True]
    assert rows[1].rejected_by == OUT_OF_BAND_CHECK and "still too_hard after 1 rounds" in (rows[1].reason or "")
    report = steering.report()
    assert report == {"bounds": {"lower": 1.0, "upper": 2.0, "source": "fixed"}, "dialogs": 4,
                      "first_verdicts": {"in_range": 1, "too_easy": 1, "too_hard": 2}, "rounds": [figures],
                      "rewrites": 3, "replaced": 1, "failed_replacements": 2,
                      "final_verdicts": {"in_range": 2, "too_hard": 2}, "rejected_out_of_band": 2}


def test_a_replacement_out_of_band_too_is_kept_and_steered_again() -> None:
    steering = AgenticSteering.start([agentic("a", 0.5)], BOUNDS, [ENV.env_id])
    first = agentic("a_r1", 2.5)
    steering.settle(1, steering.requests(1), [GuidedOutcome(origin="a", dialog=first)])
    (second_request,) = steering.requests(2)
    assert (second_request.origin, second_request.replaces, second_request.verdict) == ("a", "a_r1", "too_hard")
    steering.settle(2, [second_request], [GuidedOutcome(origin="a", dialog=agentic("a_r2", 1.5))])
    rows = steering.finish()
    assert [(d.dialog_id, d.accepted) for d in rows] == [("a_r2", True), ("a", False), ("a_r1", False)]
    assert rows[0].losses == [0.5, 2.5, 1.5] and rows[0].guidance_rounds == 2
    assert "replaced by guided dialog a_r2 (round 2)" in (rows[2].reason or "")
    assert [r["moved_into_band"] for r in steering.report()["rounds"]] == [0, 1]


def test_a_guided_rounds_counts_join_the_run_report() -> None:
    first = {"environments_proposed": 1, "environments_accepted": 1, "blueprints_proposed": 3, "blueprints_executed": 3,
             "blueprints_accepted": 3, "trajectories_run": 3, "trajectories_accepted": 3, "executions": 6,
             "execution_s": 0.5, "executions_per_s": 12.0, "llm_tokens": 300,
             "llm_tokens_per_accepted_trajectory": 100.0, "wall_time_s": 1.0, "rejected_by": {"final_state_v1": 1}}
    guided = {**first, "environments_proposed": 0, "environments_accepted": 0, "blueprints_proposed": 2,
              "blueprints_executed": 1, "blueprints_accepted": 1, "trajectories_run": 1, "trajectories_accepted": 1,
              "executions": 2, "execution_s": 0.5, "llm_tokens": 100, "rejected_by": {GUIDANCE_REPEAT_CHECK: 1}}
    merged = merge_counts(first, guided)
    assert merged["environments_proposed"] == 1 and merged["blueprints_proposed"] == 5
    assert merged["trajectories_accepted"] == 4 and merged["executions_per_s"] == 8.0
    assert merged["llm_tokens_per_accepted_trajectory"] == 100.0 and merged["wall_time_s"] == 2.0
    assert merged["rejected_by"] == {GUIDANCE_REPEAT_CHECK: 1, "final_state_v1": 1}


# ------------------------------------------------------------------------------------------------ a guided round

def test_a_guided_round_runs_replacements_and_rejects_a_repeated_task(llm: ScriptedLLMServer) -> None:
    llm.script(library_rule)
    llm.script(guided_library_rule)  # (tried first)
    lookup = [Action(api="get_book", arguments={"book_id": "b3"})]
    requests = [
        GuidedBlueprint(origin="a", replaces="a", env_id=ENV.env_id, round=1, verdict="too_hard",
                        guidance=blueprint_guidance("too_hard", TASKS[1][0]["user_goal"], CHECKOUT, ["2"]),
                        goal=TASKS[1][0]["user_goal"], actions=CHECKOUT, outputs=["2"]),
        GuidedBlueprint(origin="b", replaces="b", env_id=ENV.env_id, round=1, verdict="too_hard",
                        guidance=blueprint_guidance("too_hard", TASKS[2][0]["user_goal"], lookup, ["Persuasion"]),
                        goal=TASKS[2][0]["user_goal"], actions=lookup, outputs=["Persuasion"])]

    async def main() -> Any:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            return await make_guided_dialogs(requests, [ENV], gateway, AgenticSettings(judge_votes=1))
        finally:
            await gateway.aclose()

    run, outcomes = asyncio.run(main())
    replaced, repeated = outcomes
    assert replaced.origin == "a" and replaced.dialog is not None and replaced.dialog.accepted, replaced
    simpler = SIMPLER_TASKS[1]
    assert simpler is not None and replaced.dialog.meta["user_goal"] == simpler["user_goal"]
    assert replaced.dialog.meta["env_id"] == ENV.env_id
    assert replaced.dialog.dialog_id == agentic_dialog_id(0, ENV.env_id, replaced.dialog.meta["blueprint_id"],
                                                          "guided:a:1")
    assert (repeated.origin, repeated.dialog, repeated.rejected_by) == ("b", None, GUIDANCE_REPEAT_CHECK)
    stats = run.stats()
    assert (stats["blueprints_proposed"], stats["blueprints_executed"], stats["trajectories_accepted"]) == (2, 1, 1)
    prompts = [last_user_text(r) for r in llm.requests if schema_name(r) == "BlueprintProposal"]
    assert len(prompts) == 2 and all("Write a simpler task instead" in p for p in prompts)
