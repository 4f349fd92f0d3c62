"""`toolace serve-llm`: the embedded model behind the standard OpenAI API, with schemas and tools enforced."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

from schemas.llm_outputs import UserTurn
from toolace.llm.embedded_server import DEFAULT_ALIAS, bounded, schema_hint
from toolace.llm.response_format import response_format_for, schema_for

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def served() -> Iterator[openai.OpenAI]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(Path(sys.executable).parent / "toolace"), "serve-llm", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        for _ in range(240):
            try:
                if [m.id for m in client.models.list()] == [DEFAULT_ALIAS]:
                    break
            except openai.APIConnectionError:
                time.sleep(0.25)
        else:
            pytest.fail("serve-llm did not start")
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_json_schema_response_format_is_enforced(served):
    response = served.chat.completions.create(
        model=DEFAULT_ALIAS, messages=[{"role": "user", "content": "Ask for tomorrow's weather in Porto."}],
        response_format=response_format_for(UserTurn), max_tokens=120, temperature=0.7, seed=1)
    UserTurn.model_validate_json(response.choices[0].message.content)
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_required_tool_choice_returns_schema_valid_calls(served):
    parameters = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                                   "units": {"type": "string", "enum": ["metric", "imperial"]}},
                  "required": ["city", "days", "units"]}
    tools = [{"type": "function", "function": {"name": "get_forecast", "description": "Weather forecast",
                                               "parameters": parameters}}]
    response = served.chat.completions.create(
        model=DEFAULT_ALIAS, messages=[{"role": "user", "content": "Forecast for Paris, 3 days, metric."}],
        tools=tools, tool_choice="required", max_tokens=200, seed=2)
    calls = response.choices[0].message.tool_calls
    assert response.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        assert call.function.name == "get_forecast"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) == {"city", "days", "units"} and arguments["units"] in ("metric", "imperial")
        assert isinstance(arguments["days"], int)


def test_unknown_model_is_a_404(served):
    with pytest.raises(openai.NotFoundError):
        served.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])


def test_grammar_bounds_and_prompt_hint_keep_the_schema():
    schema = schema_for(UserTurn)
    capped = bounded({"type": "object", "properties": {"s": {"type": "string"}, "a": {"type": "array"}}})
    assert capped["properties"]["s"]["maxLength"] == 200 and capped["properties"]["a"]["maxItems"] == 8
    jsonschema.Draft202012Validator.check_schema(bounded(schema))
    assert '"message"' in schema_hint(schema)
