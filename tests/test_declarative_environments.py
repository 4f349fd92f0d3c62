"""The interpreter of synthesised environments: effects on a library (books, members, loans), validation failures with
their exact reasons, bounds, calls that cannot be served, the sandboxed worker's limits, and the strict-mode
schemas of the LLM's answers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.environments import ANSWER_MODELS, EnvironmentProposal
from schemas.records import APISpec
from tasks.environments.declarative import (
    CALL_FAILED_CHECK,
    LIMIT_CHECK,
    EnvironmentSpec,
    Interpreter,
    Limits,
    initial_state,
    is_destructive,
    run_calls,
    state_diff,
    validation_problem,
)
from tasks.environments.declarative_sandbox import (
    SANDBOX_CHECK,
    SandboxFailure,
    SandboxLimits,
    SandboxSession,
    run_sandboxed,
)
from tasks.environments.library_example import library_apis, library_environment, library_proposal_data
from tests.scripted_llm_server import instance_from_schema, openai_rule_error
from toolace.llm.response_format import response_format_for, strict_schema_problems


def env_from(data: dict[str, Any], apis: list[APISpec] | None = None) -> EnvironmentSpec:
    return EnvironmentSpec.from_proposal(EnvironmentProposal.model_validate(data), apis or library_apis())


def paths(before: Any, after: Any) -> list[str]:
    return [d.path for d in state_diff(before, after)]


# ------------------------------------------------------------------------------------------------- effects


def test_library_effects_read_filter_insert_update_delete() -> None:
    env = library_environment()
    assert validation_problem(env) is None
    execution = run_calls(env, [
        ("checkout_book", {"book_id": "b1", "member_id": "m1"}),
        ("get_book", {"book_id": "b1"}),
        ("search_books", {"author": "austen"}),
        ("return_book", {"loan_id": 1}),
    ])
    assert execution.failure is None
    assert execution.results == [
        {"loan_id": 2, "book_id": "b1"},
        {"book_id": "b1", "title": "Dune", "author": "Frank Herbert", "available": False},
        {"books": [{"book_id": "b2", "title": "Emma"}, {"book_id": "b3", "title": "Persuasion"}]},
        {"book_id": "b2", "available": True},
    ]
    assert execution.changed[0] == ["books/b1/available", "loans/2", "members/m1/loans_count"]
    assert execution.changed[1] == [] and execution.changed[2] == []
    assert paths(initial_state(env), execution.final_state) == [
        "books/b1/available", "books/b2/available", "loans/1", "loans/2", "members/m1/loans_count"]
    assert execution.final_state["members"]["m1"]["loans_count"] == 2
    assert is_destructive(env, "return_book") and not is_destructive(env, "get_book")


def test_the_same_calls_give_the_same_state() -> None:
    env = library_environment()
    calls = [("checkout_book", {"book_id": "b3", "member_id": "m1"}), ("return_book", {"loan_id": 2})]
    assert run_calls(env, calls).model_dump() == run_calls(env, calls).model_dump()


@pytest.mark.parametrize(("call", "error"), [
    (("return_book", {"loan_id": 9}), "no loans record with loan_id=9"),
    (("get_book", {"book_id": "nope"}), "no books record with book_id='nope'"),
    (("checkout_book", {"book_id": "b2", "member_id": "m1"}), "the book is already on loan"),
    (("checkout_book", {"book_id": "b1", "member_id": "m2"}), "the member is not active"),
    (("checkout_book", {"book_id": "b1"}), "missing required argument 'member_id' of checkout_book"),
    (("get_book", {"book_id": 7}), "argument 'book_id' of get_book must be string, got int"),
    (("get_book", {"book_id": "b1", "shelf": 2}), "unknown argument 'shelf' of get_book"),
    (("renew_book", {"loan_id": 1}), "unknown tool 'renew_book'"),
    (("get_book", ["b1"]), "arguments of get_book must be an object"),
])
def test_a_call_that_cannot_be_served_is_an_error_result_and_changes_nothing(call: Any, error: str) -> None:
    env = library_environment()
    interpreter = Interpreter(env)
    before = copy.deepcopy(interpreter.state)
    outcome = interpreter.call(*call)
    assert (outcome.ok, outcome.error, outcome.as_content()) == (False, error, {"error": error})
    assert interpreter.state == before  # atomic: the member step of a checkout ran, nothing of it stays
    execution = run_calls(env, [call])
    assert execution.failed_check == CALL_FAILED_CHECK and execution.failure == f"call 0 ({call[0]}) failed: {error}"


def test_a_huge_argument_is_cut_in_the_error() -> None:
    interpreter = Interpreter(library_environment(), Limits(max_string_chars=10**7))
    outcome = interpreter.call("get_book", {"book_id": "x" * 10**6})
    assert outcome.error is not None and len(outcome.error) < 150 and "(1000002 chars)" in outcome.error


# ---------------------------------------------------------------------------------------------- validation


def _mutated(change: Any) -> tuple[dict[str, Any], list[APISpec]]:
    data, apis = library_proposal_data(), library_apis()
    change(data, apis)
    return data, apis


def _effect(data: dict[str, Any], api: str) -> dict[str, Any]:
    return next(e for e in data["effects"] if e["api"] == api)


def _set_key(d: dict[str, Any], a: list[APISpec]) -> None:
    d["collections"][0]["key_field"] = "isbn"


def _unknown_collection(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "get_book")["steps"][0]["collection"] = "volumes"


def _unknown_argument(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "get_book")["steps"][0]["key"]["name"] = "id"


def _wrong_assignment_type(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "checkout_book")["steps"][1]["assignments"][0]["value"]["literal"] = "no"


def _wrong_result_type(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "get_book")["returns"][3]["value"]["name"] = "title"


def _missing_result_field(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "get_book")["returns"].pop(2)


def _missing_effect(d: dict[str, Any], a: list[APISpec]) -> None:
    d["effects"] = [e for e in d["effects"] if e["api"] != "delete_member"]


def _effect_for_unknown_api(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "delete_member")["api"] = "ban_member"


def _initial_type(d: dict[str, Any], a: list[APISpec]) -> None:
    d["initial_records"][0]["values"][3]["value"] = "yes"


def _duplicate_key(d: dict[str, Any], a: list[APISpec]) -> None:
    d["initial_records"][1]["values"][0]["value"] = "b1"


def _generated_outside_insert(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "get_book")["steps"][0]["key"] = {"source": "generated", "name": None, "literal": None}


def _list_not_declared(d: dict[str, Any], a: list[APISpec]) -> None:
    _effect(d, "search_books")["list_property"] = "results"


def _trial_run_disagrees(d: dict[str, Any], a: list[APISpec]) -> None:
    a[0].result_schema["properties"]["title"] = {"type": "string", "enum": ["Unknown"]}


INVALID = [
    (_set_key, "collection books: key field 'isbn' is not one of its fields"),
    (_unknown_collection, "effect of get_book, step 0: unknown collection 'volumes'"),
    (_unknown_argument, "effect of get_book, step 0 key: argument 'id' is not a parameter of get_book"),
    (_wrong_assignment_type, "effect of checkout_book, step 1: assigns a string to books.available (boolean)"),
    (_wrong_result_type, "effect of get_book returns 'available' as string, its result schema declares boolean"),
    (_missing_result_field, "result schema of get_book requires author, which the effect does not return"),
    (_missing_effect, "API delete_member has 0 effects, not one"),
    (_effect_for_unknown_api, "effect for unknown API 'ban_member'"),
    (_initial_type, "initial record 0: books.available must be boolean, got 'yes'"),
    (_duplicate_key, "initial record 1: duplicate key book_id='b1' in books"),
    (_generated_outside_insert, "effect of get_book, step 0 key: a generated value is only an insert's key"),
    (_list_not_declared, "effect of search_books returns a list in 'results', which the result schema does not "
                         "declare as an array"),
    (_trial_run_disagrees, "trial call of get_book: the result does not match its result schema at title: 'Dune' "
                           "is not one of ['Unknown']"),
]


@pytest.mark.parametrize(("change", "reason"), INVALID, ids=[c.__name__.strip("_") for c, _ in INVALID])
def test_an_environment_that_does_not_validate_is_rejected_with_its_reason(change: Any, reason: str) -> None:
    data, apis = _mutated(change)
    assert validation_problem(env_from(data, apis)) == reason


# ------------------------------------------------------------------------------------------------- bounds


def test_an_effect_that_would_explode_the_state_is_stopped() -> None:
    env = _notes_env()
    stopped = run_calls(env, [("add_note", {"text": "hello"})] * 10, Limits(max_records_per_collection=5))
    assert stopped.failed_check == LIMIT_CHECK
    assert stopped.failure == ("call 4 (add_note): collection notes would hold 6 records, over the 5 limit "
                               "(max_records_per_collection)")
    assert len(stopped.final_state["notes"]) == 5  # the stopped call changed nothing
    grown = run_calls(env, [("add_note", {"text": "x" * 400})] * 10, Limits(max_state_bytes=2_000))
    assert grown.failure == "call 4 (add_note): state would be 2181 bytes, over the 2000 limit (max_state_bytes)"
    long = run_calls(env, [("add_note", {"text": "x" * 50})], Limits(max_string_chars=20))
    assert long.failure == "call 0 (add_note) failed: argument 'text' of add_note is 50 characters, over the 20 limit"
    many = library_proposal_data()
    many["initial_records"] += [{"collection": "books", "values": [
        {"field": "book_id", "value": f"x{n}"}, {"field": "title", "value": "T"}, {"field": "author", "value": "A"},
        {"field": "available", "value": True}]} for n in range(3)]
    assert validation_problem(env_from(many), Limits(max_records_per_collection=5)) == \
        "collection books starts with 6 records, over the 5 limit"


def test_a_looping_execution_runs_out_of_steps_or_calls() -> None:
    env = library_environment()
    looping = run_calls(env, [("get_book", {"book_id": "b1"})] * 500, Limits(max_calls=50))
    assert (looping.failed_check, looping.failure) == (LIMIT_CHECK, "call 50 (get_book): execution ran past 50 calls "
                                                                    "(max_calls)")
    assert len(looping.results) == 50
    scanning = run_calls(env, [("search_books", {"author": "a"})] * 5, Limits(max_steps=15))
    assert scanning.failure == "call 2 (search_books): execution ran past 15 steps (max_steps)"


# ------------------------------------------------------------------------------------------------ sandbox


def _notes_env() -> EnvironmentSpec:
    api = APISpec(api_id="n", name="add_note", description="Add a note.",
                  parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
                  result_schema={"type": "object", "properties": {"note_id": {"type": "integer"}},
                                 "required": ["note_id"]}, domain="Notes", node_ids=[], operators=[])
    ref = {"source": "argument", "name": "text", "literal": None}
    return env_from({
        "name": "notes", "description": "Notes.",
        "collections": [{"name": "notes", "key_field": "note_id",
                         "fields": [{"name": "note_id", "type": "integer", "description": "id"},
                                    {"name": "text", "type": "string", "description": "text"}]}],
        "initial_records": [{"collection": "notes", "values": [{"field": "note_id", "value": 1},
                                                                {"field": "text", "value": "hi"}]}],
        "effects": [{"api": "add_note", "steps": [{
            "operation": "insert", "collection": "notes", "key": {"source": "generated", "name": None, "literal": None},
            "where": [], "require": [], "assignments": [{"field": "text", "op": "set", "value": ref}]}],
            "result_step": 0, "list_property": None,
            "returns": [{"name": "note_id", "value": {"source": "record", "name": "note_id", "literal": None}}]}],
    }, [api])


def test_the_sandboxed_worker_gives_the_in_process_result() -> None:
    env = library_environment()
    calls = [("checkout_book", {"book_id": "b1", "member_id": "m1"}), ("return_book", {"loan_id": 7})]
    assert run_sandboxed(env, calls).model_dump() == run_calls(env, calls).model_dump()
    with SandboxSession() as session:
        session.load(env)
        assert session.call("checkout_book", {"book_id": "b3", "member_id": "m1"}).changed == [
            "books/b3/available", "loans/2", "members/m1/loans_count"]
        assert session.state()["books"]["b3"]["available"] is False
        session.load(env, Limits(max_calls=1))  # a fresh state on the same worker
        assert session.state()["books"]["b3"]["available"] is True


def test_the_worker_memory_limit_is_a_rejection_not_a_crash() -> None:
    env = _notes_env()
    assert validation_problem(env) is None
    unbounded = Limits(max_records_per_collection=10**9, max_state_bytes=10**12, max_string_chars=10**9,
                       max_calls=10**6)
    with SandboxSession(SandboxLimits(memory_mb=150, timeout_s=30)) as session:
        session.load(env, unbounded)
        with pytest.raises(SandboxFailure) as failure:
            for _ in range(60):  # 4 MB more state each call: past 150 MB within 40 calls
                session.call("add_note", {"text": "x" * 4_000_000})
    assert failure.value.check == SANDBOX_CHECK
    # the MemoryError is answered when the worker can still write, else its death is named with the cause
    assert str(failure.value) in ("the sandbox worker failed: the worker ran out of memory (MemoryError)",
                                  "the sandbox worker died (exit status 1) (out of memory)")
    execution = run_sandboxed(env, [("add_note", {"text": "x" * 4_000_000})] * 40, unbounded,
                              SandboxLimits(memory_mb=150, timeout_s=30))
    assert execution.failed_check == SANDBOX_CHECK and execution.failure is not None
    assert execution.failure.endswith(("(MemoryError)", "(out of memory)"))


def test_the_worker_deadline_is_a_rejection() -> None:
    execution = run_sandboxed(library_environment(), [("get_book", {"book_id": "b1"})],
                              sandbox=SandboxLimits(timeout_s=0.001, start_timeout_s=0.0))
    assert execution.failed_check == SANDBOX_CHECK
    assert execution.failure == "the sandbox worker gave no answer within 0.001 s (timeout)"


# ------------------------------------------------------------------------------------ structured-output schemas


@pytest.mark.parametrize("model", ANSWER_MODELS, ids=lambda m: m.__name__)
def test_answer_models_are_strict_valid_response_formats(model: Any) -> None:
    fmt = response_format_for(model)
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert strict_schema_problems(schema) == []
    assert openai_rule_error({"model": "gpt-4o-mini", "response_format": fmt}) is None
    model.model_validate(instance_from_schema(schema, "seed"))


def test_the_library_design_is_a_valid_answer() -> None:
    EnvironmentProposal.model_validate(library_proposal_data())
