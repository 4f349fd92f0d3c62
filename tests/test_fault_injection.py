"""The scripted server's injected faults, each seen by a real openai client over HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.scripted_llm_server import ScriptedLLMServer


def ask(llm: ScriptedLLMServer, schema: bool = False, timeout: float = 5.0) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0, timeout=timeout)
    extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "A", "schema": {
        "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}} if schema else {}
    try:
        return client.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "hi"}],
                                              **extra)
    finally:
        client.close()


@pytest.mark.parametrize(("kind", "error"), [
    ("rate_limit", openai.RateLimitError), ("server_error", openai.InternalServerError),
    ("drop", openai.APIConnectionError), ("timeout", openai.APITimeoutError)])
def test_error_faults(llm: ScriptedLLMServer, kind: str, error: type[Exception]) -> None:
    llm.set_fault_rates({kind: 1.0}, timeout_s=2.0)
    with pytest.raises(error) as info:
        ask(llm, timeout=1.0)
    if kind == "rate_limit":
        assert info.value.response.headers["retry-after"] == "0.05"  # type: ignore[attr-defined]
    assert llm.faults_injected[kind] == 1


def test_answer_faults(llm: ScriptedLLMServer) -> None:
    llm.set_fault_rates({"truncated_json": 1.0})
    text = ask(llm, schema=True).choices[0].message.content or ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    llm.set_fault_rates({"schema_violation": 1.0})
    assert json.loads(ask(llm, schema=True).choices[0].message.content or "") == {"unexpected_field": [1, 2, 3]}
    llm.set_fault_rates({"latency": 1.0}, latency_s=0.3)
    assert ask(llm).choices[0].message.content


def test_rates_are_reproducible_and_bounded(llm: ScriptedLLMServer) -> None:
    with pytest.raises(ValueError):
        llm.set_fault_rates({"server_error": 0.7, "drop": 0.5})
    with pytest.raises(ValueError):
        llm.set_fault_rates({"meteor": 0.1})
    seen = []
    for _ in range(2):
        llm.set_fault_rates({"server_error": 0.3}, seed=7)
        outcomes = []
        for _ in range(20):
            try:
                ask(llm)
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("500")
        seen.append(outcomes)
    assert seen[0] == seen[1] and 2 <= seen[0].count("500") <= 12
    llm.set_fault_rates(None)
    assert ask(llm).choices[0].message.content
    assert httpx.get(f"{llm.url}/health").status_code == 200
