"""Model-layer judges against the scripted OpenAI-compatible server over real HTTP: verdicts, majority
votes, unanswered judges, skipping, and long texts cut before they reach the LLM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from schemas.records import ToolCall
from schemas.samples import Problem, Sample, SampleTurn, ToolSpec
from tasks.verification.model_judges import (
    CONSISTENCY_CHECK,
    HALLUCINATION_CHECK,
    JUDGES,
    REPETITION_CHECK,
    TOOL_RESPONSE_CHECK,
    JudgeOutcome,
    judge_sample,
    judge_samples,
)
from tests.scripted_llm_server import last_user_text, schema_name
from toolace.llm.gateway import LLM_REQUEST_CHECK, STRUCTURED_OUTPUT_CHECK, GatewaySettings, LLMGateway

SCHEMAS = {
    HALLUCINATION_CHECK: "HallucinationAnswer",
    CONSISTENCY_CHECK: "ConsistencyAnswer",
    TOOL_RESPONSE_CHECK: "ToolResponseAnswer",
    REPETITION_CHECK: "RepetitionAnswer",
}
WEATHER = ToolSpec(name="get_weather", description="Current weather of a city.",
                   parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                   result_schema={"type": "object", "properties": {"temp_c": {"type": "number"}}})


def turn(role: str, content: str | None = None, calls: list[ToolCall] | None = None,
         name: str | None = None) -> SampleTurn:
    return SampleTurn(role=role, content=content, tool_calls=calls or [], name=name,  # type: ignore[arg-type]
                      tool_call_id="c1" if role == "tool" else None)


def sample(turns: list[SampleTurn], index: int = 0) -> Sample:
    return Sample(index=index, id=f"s{index}", format="openai", system="You are a helpful assistant.",
                  tools=[WEATHER], turns=turns)


def clean(index: int = 0, city: str = "Paris") -> Sample:
    return sample([
        turn("user", f"What's the weather in {city}?"),
        turn("assistant", calls=[ToolCall(id="c1", name="get_weather", arguments={"city": city})]),
        turn("tool", json.dumps({"temp_c": 18.5}), name="get_weather"),
        turn("assistant", f"It is 18.5 °C in {city}."),
    ], index)


def verdict(body: dict[str, Any], passed: bool, reason: str = "looks fine",
            ungrounded: list[str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"reason": reason, "passed": passed}
    if schema_name(body) == "HallucinationAnswer":
        answer["ungrounded_values"] = ungrounded or []
    return {"json": answer}


def all_pass(body: dict[str, Any]) -> dict[str, Any] | None:
    return verdict(body, True) if schema_name(body) in SCHEMAS.values() else None


def run(llm: Any, work: Callable[[LLMGateway], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01,
                                             max_retries=1))
        try:
            result = await work(gateway)
            return result, gateway.stats
        finally:
            await gateway.aclose()

    return asyncio.run(main())


def judged(llm: Any, item: Sample, votes: int = 1) -> JudgeOutcome:
    outcome, _ = run(llm, lambda gateway: judge_sample(item, gateway, votes=votes))
    return outcome


def requests_for(llm: Any, schema: str) -> list[dict[str, Any]]:
    return [r for r in llm.requests if schema_name(r) == schema]


def test_clean_sample_passes_every_judge(llm) -> None:
    llm.script(all_pass)
    outcome, stats = run(llm, lambda gateway: judge_sample(clean(), gateway))
    assert outcome.passed and outcome.failures == [] and outcome.errors == []
    assert outcome.judged == [j.name for j in JUDGES]
    assert len(outcome.raw_outputs) == 4
    assert sorted(schema_name(r) for r in llm.requests) == sorted(SCHEMAS.values())
    for request in llm.requests:
        fmt = request["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        assert set(fmt["json_schema"]["schema"]["required"]) >= {"reason", "passed"}
        assert request["temperature"] == 0 and request["seed"] == 0
    assert stats["verification"].requests == 4
    prompt = requests_for(llm, "HallucinationAnswer")[0]["messages"][-1]["content"]
    assert 'get_weather({"city": "Paris"})' in prompt and "What's the weather in Paris?" in prompt
    assert '"result_schema"' in requests_for(llm, "ToolResponseAnswer")[0]["messages"][-1]["content"]
    repetition = requests_for(llm, "RepetitionAnswer")[0]["messages"][-1]["content"]
    assert "It is 18.5 °C in Paris." in repetition and "get_weather(" not in repetition


def test_a_failing_judge_fails_its_check_with_its_reason(llm) -> None:
    llm.script(all_pass)
    llm.script(lambda body: verdict(body, False, "the answer ignores the tool result")
               if schema_name(body) == "ConsistencyAnswer" else None)
    outcome = judged(llm, clean())
    assert not outcome.passed
    assert outcome.failures == [Problem(check=CONSISTENCY_CHECK, reason="the answer ignores the tool result")]
    assert outcome.errors == []


def test_listed_ungrounded_values_fail_the_hallucination_judge(llm) -> None:
    llm.script(all_pass)
    llm.script(lambda body: verdict(body, True, "city was guessed", ["city=Paris"])
               if schema_name(body) == "HallucinationAnswer" else None)
    outcome = judged(llm, clean())
    assert [f.check for f in outcome.failures] == [HALLUCINATION_CHECK]
    assert outcome.failures[0].reason == "city was guessed (ungrounded: city=Paris)"


@pytest.mark.parametrize(("by_seed", "passes"), [
    ({0: True, 1: False, 2: True}, True),
    ({0: False, 1: False, 2: True}, False),
])
def test_majority_vote(llm, by_seed: dict[int, bool], passes: bool) -> None:
    llm.script(all_pass)
    llm.script(lambda body: verdict(body, by_seed[body["seed"]], f"vote {body['seed']}")
               if schema_name(body) == "RepetitionAnswer" else None)
    outcome = judged(llm, clean(), votes=3)
    votes = requests_for(llm, "RepetitionAnswer")
    assert sorted(r["seed"] for r in votes) == [0, 1, 2]
    assert all(r["temperature"] == 0.7 for r in llm.requests)
    assert len(llm.requests) == 12 and len(outcome.raw_outputs) == 12
    if passes:
        assert outcome.passed
    else:
        assert outcome.failures == [Problem(check=REPETITION_CHECK, reason="2 of 3 answered votes failed: vote 0")]


def test_a_tie_of_answered_votes_fails(llm) -> None:
    llm.script(all_pass)
    # seed 2 never validates: one pass and one fail remain, which is no strict majority
    llm.script(lambda body: ("not json" if body["seed"] == 2 else verdict(body, body["seed"] == 0))
               if schema_name(body) == "RepetitionAnswer" else None)
    outcome = judged(llm, clean(), votes=3)
    assert [f.check for f in outcome.failures] == [REPETITION_CHECK]
    assert outcome.failures[0].reason.startswith("1 of 2 answered votes failed")
    assert outcome.errors == []


def test_a_judge_without_a_valid_answer_fails_the_sample(llm) -> None:
    llm.script(all_pass)
    llm.script(lambda body: "I think it is fine." if schema_name(body) == "ToolResponseAnswer" else None)
    outcome = judged(llm, clean())
    assert [f.check for f in outcome.failures] == [STRUCTURED_OUTPUT_CHECK]
    assert TOOL_RESPONSE_CHECK in outcome.failures[0].reason
    assert outcome.errors == outcome.failures
    assert outcome.raw_outputs.count("I think it is fine.") == 2  # the answer and the one repair attempt


def test_a_refused_request_names_the_request_check(llm) -> None:
    llm.script(all_pass)
    llm.script(lambda body: {"status": 400} if schema_name(body) == "HallucinationAnswer" else None)
    outcome = judged(llm, clean(), votes=2)
    assert [f.check for f in outcome.failures] == [LLM_REQUEST_CHECK]
    assert HALLUCINATION_CHECK in outcome.failures[0].reason and "2 votes" in outcome.failures[0].reason
    assert outcome.errors == outcome.failures


def test_judges_with_nothing_to_judge_send_no_request(llm) -> None:
    llm.script(all_pass)
    chat = sample([turn("user", "Tell me a joke."), turn("assistant", "Why did the API cross the road?")])
    outcome = judged(llm, chat)
    assert outcome.passed and outcome.judged == [CONSISTENCY_CHECK, REPETITION_CHECK]
    assert sorted(schema_name(r) for r in llm.requests) == ["ConsistencyAnswer", "RepetitionAnswer"]

    llm.clear_requests()
    call_only = sample([turn("user", "Weather in Oslo?"),
                        turn("assistant", calls=[ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"})])])
    outcome = judged(llm, call_only)
    assert outcome.judged == [HALLUCINATION_CHECK, CONSISTENCY_CHECK]
    assert not requests_for(llm, "ToolResponseAnswer") and not requests_for(llm, "RepetitionAnswer")

    llm.clear_requests()
    outcome = judged(llm, sample([]))
    assert outcome.passed and outcome.judged == [] and llm.requests == []


def test_huge_texts_are_cut_before_they_reach_the_llm(llm) -> None:
    llm.script(all_pass)
    huge = "x" * 5_000_000
    item = sample([
        turn("user", "Store this blob."),
        turn("assistant", calls=[ToolCall(id="c1", name="get_weather", arguments={"city": huge})]),
        turn("tool", huge, name="get_weather"),
        turn("assistant", "Done " + huge),
    ])
    outcome = judged(llm, item)
    assert outcome.passed and len(llm.requests) == 4
    for request in llm.requests:
        assert len(json.dumps(request)) < 40_000
        assert "chars cut]" in request["messages"][-1]["content"]


def test_many_samples_are_judged_concurrently_in_order(llm) -> None:
    llm.script(all_pass)
    llm.script(lambda body: verdict(body, False, "wrong city")
               if schema_name(body) == "ConsistencyAnswer" and "Lima" in last_user_text(body) else None)
    items = [clean(0, "Paris"), clean(1, "Lima"), clean(2, "Rome")]
    outcomes, _ = run(llm, lambda gateway: judge_samples(items, gateway))
    assert [(o.index, o.id, o.passed) for o in outcomes] == [(0, "s0", True), (1, "s1", False), (2, "s2", True)]
    assert outcomes[1].failures == [Problem(check=CONSISTENCY_CHECK, reason="wrong city")]


def test_votes_must_be_positive(llm) -> None:
    with pytest.raises(ValueError, match="votes"):
        judged(llm, clean(), votes=0)
