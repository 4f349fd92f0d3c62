"""Environments proposed for an API family and blueprints proposed, executed and reviewed: prompts, parsing, the rule
verdicts with their reasons, and the committee's majority against the scripted server over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas.environments import BlueprintProposal, EnvironmentProposal
from schemas.records import TreeNode
from tasks.environments.blueprints import (
    BLUEPRINT_JUDGE_CHECK,
    EXECUTION_CHECK,
    NO_EFFECT_CHECK,
    OUTPUTS_CHECK,
    UNKNOWN_TOOL_CHECK,
    api_families,
    blueprint_messages,
    environment_messages,
    execute_blueprint,
    parse_blueprint,
    parse_environment,
    propose_blueprints,
    propose_environment,
    review_blueprints,
)
from tasks.environments.declarative import ENVIRONMENT_CHECK, LIMIT_CHECK, Limits
from tasks.environments.declarative_sandbox import SandboxSession
from tasks.environments.library_example import library_apis, library_environment, library_proposal_data
from tests.agentic_library_script import library_rule
from tests.scripted_llm_server import ScriptedLLMServer, schema_name
from toolace.llm.gateway import GatewaySettings, LLMGateway, Structured

NODES = [
    TreeNode(node_id="d", parent_id=None, name="Culture", level=0, is_functionality=False, doc_ids=[]),
    TreeNode(node_id="s", parent_id="d", name="Libraries", level=1, is_functionality=False, doc_ids=[]),
    TreeNode(node_id="f1", parent_id="s", name="lend books", level=2, is_functionality=True, doc_ids=[]),
    TreeNode(node_id="f2", parent_id="s", name="find books", level=2, is_functionality=True, doc_ids=[]),
]


def family() -> list[Any]:
    apis = library_apis()
    for n, api in enumerate(apis):
        api.node_ids = ["f1" if n % 2 else "f2"]
    return apis


def blueprint(actions: list[tuple[str, dict[str, Any]]], outputs: list[str], changes: bool,
              goal: str = "I am member m1 and want to borrow book b1; tell me the loan id.") -> BlueprintProposal:
    return BlueprintProposal.model_validate({
        "user_goal": goal, "changes_state": changes, "outputs": outputs,
        "actions": [{"api": api, "arguments": [{"name": k, "value": v} for k, v in args.items()]}
                    for api, args in actions]})


def run(work: Any, server: ScriptedLLMServer) -> Any:
    async def main() -> Any:
        gateway = LLMGateway(GatewaySettings(base_url=server.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            return await work(gateway)
        finally:
            await gateway.aclose()
    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------- environments


def test_families_are_subtrees_of_the_context_tree() -> None:
    apis = family()
    other = library_apis()[0].model_copy(update={"api_id": "w", "name": "get_weather", "domain": "Weather",
                                                 "node_ids": ["elsewhere"]})
    families = api_families([*apis, other], NODES)
    assert [[a.name for a in f] for f in families] == [[a.name for a in apis]]  # the lone weather API has no family
    assert [[a.name for a in f] for f in api_families(apis, NODES, max_size=2)] == [
        ["get_book", "search_books"], ["checkout_book", "return_book"]]  # the fifth alone is not a family


def test_the_environment_prompt_shows_the_subtree_the_apis_and_the_language() -> None:
    system, user = environment_messages(family(), NODES)
    text = user["content"]
    assert "Culture > Libraries > find books > lend books" in text
    assert all(f'"name": "{a.name}"' in text for a in library_apis())
    assert '"result_schema"' in text and '"source": "generated"' in text and "exactly one per API" in text
    assert "JSON object" in system["content"]


def test_an_answer_becomes_a_validated_environment_or_a_rejection_with_its_reason() -> None:
    accepted = parse_environment(EnvironmentProposal.model_validate(library_proposal_data()), family())
    assert accepted.accepted and accepted.environment is not None and accepted.env_id.startswith("env_")
    broken = library_proposal_data()
    broken["effects"][0]["steps"][0]["key"]["name"] = "isbn"
    rejected = parse_environment(EnvironmentProposal.model_validate(broken), family())
    assert (rejected.status, rejected.rejected_by, rejected.reason) == (
        "rejected", ENVIRONMENT_CHECK, "effect of get_book, step 0 key: argument 'isbn' is not a parameter of get_book")
    no_answer = parse_environment(Structured(None, ["{bad"], "invalid after one repair: x", "structured_output_v1"),
                                  family())
    assert (no_answer.rejected_by, no_answer.raw_outputs) == ("structured_output_v1", ["{bad"])


def test_an_environment_and_blueprints_proposed_through_the_gateway(llm: ScriptedLLMServer) -> None:
    llm.script(library_rule)

    async def work(gateway: LLMGateway) -> Any:
        record = await propose_environment(family(), NODES, gateway)
        assert record.environment is not None
        return record, await propose_blueprints(record.environment, 3, gateway)

    record, blueprints = run(work, llm)
    assert record.accepted and record.family == [a.name for a in library_apis()]
    sent = [r for r in llm.requests if schema_name(r) == "EnvironmentProposal"][0]
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert [b.blueprint.actions[0].api for b in blueprints] == ["checkout_book", "get_book", "return_book"]
    assert len({b.blueprint.blueprint_id for b in blueprints}) == 3


# ------------------------------------------------------------------------------------------------ blueprints


def test_the_blueprint_prompt_shows_tools_and_state() -> None:
    text = blueprint_messages(library_environment(), 1)[1]["content"]
    assert "Write task 2:" in text and '"name": "checkout_book"' in text and '"title": "Persuasion"' in text


CASES = [
    ("accepted", [("checkout_book", {"book_id": "b1", "member_id": "m1"})], ["2"], True, None, None),
    ("read only", [("get_book", {"book_id": "b3"})], ["Persuasion"], False, None, None),
    ("unknown tool", [("get_book", {"book_id": "b1"}), ("renew_book", {"loan_id": 1})], [], True,
     UNKNOWN_TOOL_CHECK, "action 1 names unknown tool 'renew_book'"),
    ("missing record", [("return_book", {"loan_id": 42})], [], True,
     EXECUTION_CHECK,
     "call 0 (return_book) failed: no loans record with loan_id=42"),
    ("failing precondition", [("checkout_book", {"book_id": "b2", "member_id": "m1"})], [], True,
     EXECUTION_CHECK, "call 0 (checkout_book) failed: the book is already on loan"),
    ("changes nothing", [("get_book", {"book_id": "b1"})], ["Dune"], True,
     NO_EFFECT_CHECK, "the goal asks for a change but the actions change nothing"),
    ("does nothing", [("search_books", {"author": "Tolkien"})], [], False,
     NO_EFFECT_CHECK, "the actions change nothing and the blueprint reports nothing"),
    ("output not produced", [("checkout_book", {"book_id": "b1", "member_id": "m1"})], ["7"], True,
     OUTPUTS_CHECK, "output '7' is in no action's result"),
]


@pytest.mark.parametrize(("label", "actions", "outputs", "changes", "check", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_blueprint_is_executed_from_the_initial_state_and_judged_by_rules(label: str, actions: Any, outputs: Any,
                                                                           changes: bool, check: str | None,
                                                                           reason: str | None) -> None:
    env = library_environment()
    record = parse_blueprint(blueprint(actions, outputs, changes), env)
    with SandboxSession() as session:
        execute_blueprint(record, env, session)
    assert (record.rejected_by, record.reason) == (check, reason)
    assert record.executed is (check != UNKNOWN_TOOL_CHECK)
    if label == "accepted":
        assert [d["path"] for d in record.diff] == ["books/b1/available", "loans/2", "members/m1/loans_count"]
        assert record.results == [{"loan_id": 2, "book_id": "b1"}]


def test_a_blueprint_past_the_limits_is_rejected() -> None:
    env = library_environment()
    record = parse_blueprint(blueprint([("get_book", {"book_id": "b1"})] * 8, ["Dune"], False), env)
    with SandboxSession() as session:
        execute_blueprint(record, env, session, Limits(max_calls=5))
    assert (record.rejected_by, record.reason) == (LIMIT_CHECK, "call 5 (get_book): execution ran past 5 calls "
                                                                "(max_calls)")


# ------------------------------------------------------------------------------------------------ committee


def test_the_committee_votes_with_a_strict_majority(llm: ScriptedLLMServer) -> None:
    env = library_environment()
    good = parse_blueprint(blueprint([("checkout_book", {"book_id": "b1", "member_id": "m1"})], ["2"], True), env)
    doubtful = parse_blueprint(blueprint([("get_book", {"book_id": "b3"})], ["Persuasion"], False,
                                         goal="Is the book b3 available? Tell me its title."), env)
    with SandboxSession() as session:
        for record in (good, doubtful):
            execute_blueprint(record, env, session)

    def votes(body: dict[str, Any]) -> dict[str, Any] | None:
        if schema_name(body) != "JudgeAnswer":
            return None
        text = body["messages"][-1]["content"]
        failing = {0, 1} if "b3" in text else {2}  # two of three votes fail the second blueprint, one the first
        passed = body["seed"] not in failing
        return {"json": {"reason": "fine" if passed else "the goal never asks for the title", "passed": passed}}

    llm.script(votes)
    reviewed = run(lambda gateway: review_blueprints([good, doubtful], env, gateway, votes=3), llm)
    assert [r.status for r in reviewed] == ["accepted", "rejected"]
    assert doubtful.rejected_by == BLUEPRINT_JUDGE_CHECK
    assert doubtful.reason == "2 of 3 answered votes failed: the goal never asks for the title"
    asked = [r for r in llm.requests if schema_name(r) in ("JudgeAnswer", "HallucinationAnswer")]
    assert len(asked) == 2 * 2 * 3  # two blueprints, two judges, three votes each
