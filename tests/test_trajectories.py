"""Trajectories verified by execution: scripted user and assistant agents on the library environment (accepted,
a missing output, a different final state with its paths, an unasked destructive call, calls in text, broken calls),
and the whole agentic pipeline against the scripted server over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from schemas.environments import BlueprintProposal
from schemas.records import DIALOG_TYPES, Turn
from tasks.environments.agentic_dialogs import AgenticSettings, make_agentic_dialogs
from tasks.environments.blueprints import BlueprintRecord, execute_blueprint, parse_blueprint
from tasks.environments.declarative_sandbox import SandboxSession
from tasks.environments.library_example import library_apis, library_environment
from tasks.environments.trajectories import (
    CALL_CHECK,
    DESTRUCTIVE_CHECK,
    FINAL_STATE_CHECK,
    LENGTH_CHECK,
    OUTPUT_CHECK,
    AssistantReply,
    TrajectoryLimits,
    TrajectoryOutcome,
    UserReply,
    run_trajectory,
)
from tests.agentic_library_script import library_rule
from tests.scripted_llm_server import ScriptedLLMServer
from toolace.llm.gateway import GatewaySettings, LLMGateway

GOAL = "I am member m1 and want to borrow book b1; tell me the loan id."
ENV = library_environment()


@pytest.fixture(scope="module")
def checkout() -> BlueprintRecord:
    record = parse_blueprint(BlueprintProposal.model_validate({
        "user_goal": GOAL, "changes_state": True, "outputs": ["2"],
        "actions": [{"api": "checkout_book", "arguments": [{"name": "book_id", "value": "b1"},
                                                           {"name": "member_id", "value": "m1"}]}]}), ENV)
    with SandboxSession() as session:
        execute_blueprint(record, ENV, session)
    assert record.accepted
    return record


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": json.dumps(arguments)}


class Script:
    """Scripted agents: the assistant's replies in order; the user states the goal, then thanks and finishes."""

    def __init__(self, replies: list[AssistantReply], user_turns: int = 1) -> None:
        self.replies = list(replies)
        self.user_turns = user_turns
        self.seen: list[list[dict[str, Any]]] = []

    async def assistant(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AssistantReply:
        self.seen.append(messages)
        return self.replies.pop(0)

    async def user(self, goal: str, turns: Sequence[Turn]) -> UserReply:
        said = sum(t.role == "user" for t in turns)
        if said < self.user_turns:
            return UserReply(goal if said == 0 else "Anything else?", tokens=5)
        return UserReply("Thanks!", finished=True, tokens=5)


def trajectory(script: Script, record: BlueprintRecord, **bounds: Any) -> TrajectoryOutcome:
    return asyncio.run(run_trajectory(ENV, record, script.user, script.assistant, "d1",
                                      bounds=TrajectoryLimits(**bounds)))


def test_a_trajectory_reaching_the_goal_is_accepted(checkout: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("checkout_book", book_id="b1", member_id="m1")], tokens=10),
                     AssistantReply(content="Done: your loan id is 2.", tokens=7)])
    outcome = trajectory(script, checkout)
    dialog = outcome.dialog
    assert (dialog.status, dialog.reason) == ("accepted", None)
    assert dialog.dialog_type == "agentic_multi_turn" and "agentic_multi_turn" in DIALOG_TYPES
    assert [t.role for t in dialog.turns] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(dialog.turns[2].content or "") == {"loan_id": 2, "book_id": "b1"}  # the real result
    assert dialog.turns[2].tool_call_id == dialog.turns[1].tool_calls[0].id
    assert (outcome.tokens, outcome.executions, dialog.apis_used) == (5 + 10 + 7 + 5, 1, ["checkout_book"])
    meta = dialog.meta
    assert meta["env_id"] == ENV.env_id and meta["initial_state"]["books"]["b1"]["available"] is True
    assert meta["ground_truth_actions"] == [{"api": "checkout_book", "arguments": {"book_id": "b1", "member_id": "m1"}}]
    assert [d["path"] for d in meta["final_state_diff"]] == ["books/b1/available", "loans/2", "members/m1/loans_count"]
    # the assistant saw the tool result it got
    assert script.seen[1][-1] == {"role": "tool", "tool_call_id": dialog.turns[1].tool_calls[0].id,
                                  "content": '{"loan_id": 2, "book_id": "b1"}'}


def test_calls_written_in_text_are_parsed_and_failed_calls_get_their_error(checkout: BlueprintRecord) -> None:
    script = Script([AssistantReply(content="[get_book(book_id='b9')]"),
                     AssistantReply(content="[checkout_book(book_id='b1', member_id='m1')]"),
                     AssistantReply(content="Your loan id is 2.")])
    dialog = trajectory(script, checkout).dialog
    assert dialog.accepted
    assert json.loads(dialog.turns[2].content or "") == {"error": "no books record with book_id='b9'"}
    assert [c.name for t in dialog.turns for c in t.tool_calls] == ["get_book", "checkout_book"]


def test_a_missing_output_is_rejected(checkout: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("checkout_book", book_id="b1", member_id="m1")]),
                     AssistantReply(content="Done, enjoy the book (loan 12).")])
    dialog = trajectory(script, checkout).dialog
    assert (dialog.rejected_by, dialog.reason) == (OUTPUT_CHECK, "required output '2' never appears in an assistant "
                                                                 "turn")


def test_a_different_final_state_is_rejected_with_the_differing_paths(checkout: BlueprintRecord) -> None:
    # the assistant only looks the book up and claims the loan: the output is said, the state is not reached
    script = Script([AssistantReply(tool_calls=[call("get_book", book_id="b1")]),
                     AssistantReply(content="Your loan id is 2.")])
    dialog = trajectory(script, checkout).dialog
    assert dialog.rejected_by == FINAL_STATE_CHECK
    assert dialog.reason == ("the final state differs from the ground truth at books/b1/available, loans/2, "
                             "members/m1/loans_count")
    assert dialog.meta["final_state_diff"] == []


def test_a_destructive_call_the_goal_did_not_ask_for_is_rejected(checkout: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("delete_member", member_id="m2")]),
                     AssistantReply(tool_calls=[call("checkout_book", book_id="b1", member_id="m1")]),
                     AssistantReply(content="Your loan id is 2.")])
    dialog = trajectory(script, checkout).dialog
    assert dialog.rejected_by == DESTRUCTIVE_CHECK
    assert dialog.reason == 'delete_member({"member_id": "m2"}) changed members/m2, which the goal does not ask for'
    assert len(script.replies) == 2  # the conversation stopped there


def test_a_broken_call_and_an_endless_conversation_are_rejected(checkout: BlueprintRecord) -> None:
    broken = trajectory(Script([AssistantReply(tool_calls=[{"name": "get_book", "arguments": "{oops"}])]), checkout)
    assert broken.dialog.rejected_by == CALL_CHECK
    assert broken.dialog.reason is not None and broken.dialog.reason.startswith("the assistant's call does not parse: "
                                                                                "arguments of 'get_book' are not valid")
    chatty = Script([AssistantReply(content="Which book?")] * 3, user_turns=10)
    endless = trajectory(chatty, checkout, max_user_turns=3)
    assert (endless.dialog.rejected_by, endless.dialog.reason) == (LENGTH_CHECK, "the user did not finish within 3 "
                                                                                 "turns")
    looping = trajectory(Script([AssistantReply(tool_calls=[call("get_book", book_id="b1")])] * 5), checkout,
                         max_calls_per_turn=3)
    assert looping.dialog.reason == "the assistant made more than 3 call rounds without answering the user"


# ------------------------------------------------------------------------------------------------ end to end


def test_agentic_dialogs_against_the_scripted_server(llm: ScriptedLLMServer) -> None:
    llm.script(library_rule)

    async def main() -> Any:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            return await make_agentic_dialogs(library_apis(), [], gateway, AgenticSettings(dialogs=3, judge_votes=1))
        finally:
            await gateway.aclose()

    run = asyncio.run(main())
    stats = run.stats()
    assert {k: stats[k] for k in ("environments_proposed", "environments_accepted", "blueprints_proposed",
                                  "blueprints_executed", "blueprints_accepted", "trajectories_run",
                                  "trajectories_accepted", "rejected_by")} == {
        "environments_proposed": 1, "environments_accepted": 1, "blueprints_proposed": 3, "blueprints_executed": 3,
        "blueprints_accepted": 3, "trajectories_run": 3, "trajectories_accepted": 3, "rejected_by": {}}
    assert stats["executions"] == 6 and stats["executions_per_s"] > 0
    assert stats["llm_tokens"] > 0 and stats["llm_tokens_per_accepted_trajectory"] == round(stats["llm_tokens"] / 3, 1)
    goals = [d.meta["user_goal"] for d in run.accepted]
    assert goals[1] == "What is the title of the book b3, and is it available?"
    assert [[d["path"] for d in dialog.meta["final_state_diff"]] for dialog in run.accepted] == [
        ["books/b1/available", "loans/2", "members/m1/loans_count"], [], ["books/b2/available", "loans/1"]]
    assert len({d.dialog_id for d in run.dialogs}) == 3
