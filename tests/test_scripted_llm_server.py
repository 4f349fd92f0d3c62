"""Tests for the scripted OpenAI-compatible server, through the real ``openai`` client over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.scripted_llm_server import (
    ScriptedLLMServer,
    default_reply,
    instance_from_schema,
    match_schema,
    short_hash,
)

MODEL = "scripted-model"
REPO_ROOT = Path(__file__).resolve().parent.parent

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "pattern": "^[A-Z][a-z]+/[A-Z][a-z]+$"}},
            "required": ["timezone"],
        },
    },
}

# A schema in the shape pydantic emits ($defs, $ref, anyOf-with-null, enums) plus the other keywords.
EXTRACTION_SCHEMA = {
    "$defs": {
        "Party": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 3, "maxLength": 40},
                "role": {"type": "string", "enum": ["buyer", "seller"]},
                "email": {"type": "string", "format": "email"},
            },
            "required": ["name", "role", "email"],
            "additionalProperties": False,
        },
        "Money": {
            "allOf": [
                {"type": "object", "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}},
                {
                    "properties": {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                    "required": ["amount", "currency"],
                },
            ]
        },
    },
    "definitions": {"Flag": {"type": "boolean"}},
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "signed_on": {"type": "string", "format": "date"},
        "updated_at": {"type": "string", "format": "date-time"},
        "source": {"type": "string", "format": "uri"},
        "pages": {"type": "integer", "minimum": 1, "maximum": 500},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "parties": {"type": "array", "items": {"$ref": "#/$defs/Party"}, "minItems": 2, "maxItems": 4},
        "total": {"$ref": "#/$defs/Money"},
        "notes": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}], "default": None},
        "kind": {"oneOf": [{"const": "contract"}, {"const": "invoice"}]},
        "confidential": {"$ref": "#/definitions/Flag"},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        "version": {"type": ["integer", "null"]},
        "empty": {"type": "null"},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    },
    "required": ["title", "signed_on", "parties", "total", "kind"],
    "additionalProperties": False,
}


def chat(client: openai.OpenAI, text: str = "Hello there", model: str = MODEL, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


def schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def server():
    with ScriptedLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server):
    server.reset()
    yield
    server.reset()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, timeout=5) as c:
        yield c


# -- instance_from_schema (no HTTP) ------------------------------------------------------------------


def test_instance_from_schema_validates_and_follows_the_seed():
    instance = instance_from_schema(EXTRACTION_SCHEMA, "Extract the contract")
    validator = jsonschema.Draft202012Validator(EXTRACTION_SCHEMA, format_checker=jsonschema.FormatChecker())
    validator.validate(instance)
    suffix = short_hash("Extract the contract")
    assert instance["title"] == f"title_{suffix}"
    assert len(instance["parties"]) == 2  # max(minItems, 1)
    assert instance["parties"][0]["role"] == "buyer"  # first enum value
    assert instance["kind"] == "contract"  # first branch
    assert isinstance(instance["notes"], str)  # first non-null branch, default None ignored
    assert instance["keywords"] == []
    assert instance["empty"] is None
    assert set(instance["total"]) == {"amount", "currency"}
    assert len(instance["labels"]) == 1 and isinstance(next(iter(instance["labels"].values())), int)

    assert instance_from_schema(EXTRACTION_SCHEMA, "Extract the contract") == instance
    other = instance_from_schema(EXTRACTION_SCHEMA, "Extract the invoice")
    assert other["title"] != instance["title"]
    validator.validate(other)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "integer",
            "minimum": 5,
            "exclusiveMinimum": True,
            "maximum": 6,
        },
        {"type": "integer", "minimum": -30, "maximum": -20, "multipleOf": 7},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001},
        {"type": "number", "minimum": 1, "multipleOf": 0.5},
        {"type": "string", "minLength": 30},
        {"type": "string", "maxLength": 2},
        {"type": "string", "pattern": "^\\d{5}(-\\d{4})?$"},
        {"type": "string", "pattern": "^(foo|bar)+[^a-z]\\w*$", "minLength": 2},
        {"type": "string", "format": "uuid"},
        {"type": "string", "format": "email", "maxLength": 200},
        {"const": {"fixed": [1, 2]}},
        {"enum": ["a", "b"], "default": "b"},
        {"type": ["null", "boolean"]},
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 3},
        {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
        {
            "type": "object",
            "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
            "additionalProperties": False,
        },
        {"type": "object", "properties": {}, "required": ["free"]},
        {
            "$ref": "#/definitions/node",
            "definitions": {
                "node": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "integer"},
                        "children": {"type": "array", "items": {"$ref": "#"}},
                    },
                    "required": ["value"],
                }
            },
        },
    ],
)
def test_instance_from_schema_keywords(schema):
    for seed in ("one", "two"):
        instance = instance_from_schema(schema, seed)
        jsonschema.validate(instance, schema, format_checker=jsonschema.FormatChecker())


def test_instance_from_schema_details():
    assert instance_from_schema({"enum": ["a", "b"], "default": "b"}) == "b"
    assert instance_from_schema({"type": "string"}, "x", name="city") == f"city_{short_hash('x')}"
    assert instance_from_schema({"type": "object", "properties": {}}, "x") == {}
    assert instance_from_schema({"type": "array", "items": {"type": "string"}, "maxItems": 0}) == []
    assert instance_from_schema({"type": "string", "pattern": "^[A-Z]{3}$"}) == "AAA"
    assert instance_from_schema({"type": "string", "format": "date"}, "a").count("-") == 2


# -- HTTP --------------------------------------------------------------------------------------------


def test_health_and_models(server, client):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_plain_answer(client):
    response = chat(client, "What is the capital of France?")
    assert response.object == "chat.completion"
    assert response.model == MODEL
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    assert "What is the capital of France?" in choice.message.content
    assert response.usage.prompt_tokens == 6
    assert response.usage.completion_tokens == len(choice.message.content.split())
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_json_schema_answer_validates(client):
    response = chat(
        client, "Extract the contract", response_format=schema_format("DocumentExtraction", EXTRACTION_SCHEMA)
    )
    content = json.loads(response.choices[0].message.content)
    jsonschema.Draft202012Validator(EXTRACTION_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(
        content
    )
    assert content == instance_from_schema(EXTRACTION_SCHEMA, "Extract the contract")


def test_structured_output_parse_with_pydantic(client):
    class Item(BaseModel):
        sku: str = Field(pattern=r"^[A-Z]{2}-\d{3}$")
        quantity: int = Field(ge=1, le=9)

    class Order(BaseModel):
        customer: str
        status: Literal["open", "closed"]
        items: list[Item]
        note: str | None = None

    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Order two widgets"}], response_format=Order
    )
    order = completion.choices[0].message.parsed
    assert isinstance(order, Order)
    assert order.status == "open"
    assert order.items[0].sku == "AA-000"
    assert order.customer == f"customer_{short_hash('Order two widgets')}"


def test_tool_call_answer(server, client):
    response = chat(client, "Weather in Oslo?", tools=[WEATHER_TOOL, TIME_TOOL])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id == "call_0" and call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])

    named = chat(
        client,
        "What time is it?",
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    [call] = named.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TIME_TOOL["function"]["parameters"])

    none = chat(client, "Weather in Oslo?", tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_tool_loop_ends_after_tool_result_and_ids_advance(client):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "12 degrees"},
    ]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content
    again = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert again.choices[0].message.tool_calls[0].id == "call_1"


def test_unknown_model_is_404(server, client):
    with pytest.raises(openai.NotFoundError) as info:
        chat(client, model="gpt-nope")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.body == {
        "message": "The model `gpt-nope` does not exist",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }
    assert server.requests[-1]["model"] == "gpt-nope"


def test_scripted_429_with_retry_after(server, client):
    server.script(lambda body: {"status": 429, "headers": {"Retry-After": "0"}}, times=1)
    with pytest.raises(openai.RateLimitError) as info:
        chat(client)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "0"
    assert info.value.code == "rate_limit_exceeded"
    assert chat(client).choices[0].finish_reason == "stop"  # the rule retired after one use


def test_fail_next_is_retried_by_the_client(server):
    server.fail_next(2, status=429, headers={"Retry-After": "0", "retry-after-ms": "5"})
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=2, timeout=5) as retrying:
        response = chat(retrying, "eventually")
    assert "eventually" in response.choices[0].message.content
    assert len(server.requests) == 3
    assert server.pending_faults == 0


def test_fault_body_and_500(server, client):
    server.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        chat(client)
    server.script(lambda body: {"status": 503, "body": {"error": {"message": "busy", "type": "overloaded"}}})
    with pytest.raises(openai.APIStatusError) as info:
        chat(client)
    assert info.value.status_code == 503
    assert info.value.body == {"message": "busy", "type": "overloaded"}


def test_determinism(client):
    kwargs = {"response_format": schema_format("DocumentExtraction", EXTRACTION_SCHEMA)}
    first = chat(client, "Same prompt", **kwargs)
    second = chat(client, "Same prompt", **kwargs)
    assert first.model_dump() == second.model_dump()
    assert (
        chat(client, "Other prompt", **kwargs).choices[0].message.content != first.choices[0].message.content
    )
    tools_first = chat(client, "Same prompt", tools=[WEATHER_TOOL]).model_dump()
    assert chat(client, "Same prompt", tools=[WEATHER_TOOL]).model_dump() == tools_first


def test_request_log_and_reset(server, client):
    chat(client, "first")
    chat(client, "second", temperature=0)
    bodies = server.requests
    assert [b["messages"][-1]["content"] for b in bodies] == ["first", "second"]
    assert bodies[1]["temperature"] == 0 and bodies[1]["model"] == MODEL
    assert server.last_request is not None and server.last_request["messages"][-1]["content"] == "second"
    bodies.clear()  # a copy
    assert len(server.requests) == 2
    server.script(lambda body: {"content": "scripted"})
    server.reset()
    assert server.requests == []
    assert chat(client).choices[0].message.content != "scripted"


def test_rules_newest_first_and_result_kinds(server, client):
    server.script(lambda body: {"content": "old"})
    server.script(lambda body: "new" if "hi" in body["messages"][-1]["content"] else None)
    assert chat(client, "hi").choices[0].message.content == "new"
    assert chat(client, "bye").choices[0].message.content == "old"

    server.clear_script()
    server.script(lambda body: {"json": {"a": [1, 2]}})
    assert json.loads(chat(client).choices[0].message.content) == {"a": [1, 2]}

    server.script(
        lambda body: {
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_time"}]
        }
    )
    calls = chat(client, tools=[WEATHER_TOOL, TIME_TOOL]).choices[0].message.tool_calls
    assert [c.id for c in calls] == ["call_0", "call_1"]
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    jsonschema.validate(json.loads(calls[1].function.arguments), TIME_TOOL["function"]["parameters"])

    server.script(
        lambda body: {"content": "cut", "finish_reason": "length", "usage": {"completion_tokens": 99}}
    )
    response = chat(client)
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 99


def test_on_schema_and_match_schema(server, client):
    server.on_schema("DocumentExtraction", lambda body: {"title": "scripted"})
    server.script(match_schema("Other")({"status": 500}))
    extraction = chat(client, response_format=schema_format("DocumentExtraction", EXTRACTION_SCHEMA))
    assert json.loads(extraction.choices[0].message.content) == {"title": "scripted"}
    with pytest.raises(openai.InternalServerError):
        chat(client, response_format=schema_format("Other", {"type": "object"}))
    assert chat(client, "plain").choices[0].message.content == default_reply(server.requests[-1])["content"]


def test_delay_and_rule_errors(server, client):
    server.script(lambda body: {"delay": 0.2})
    started = time.monotonic()
    response = chat(client, "slow")
    assert time.monotonic() - started >= 0.2
    assert "slow" in response.choices[0].message.content

    server.script(lambda body: {"contnet": "typo"})
    with pytest.raises(openai.InternalServerError, match="unknown keys"):
        chat(client)
    assert len(server.errors) == 1


def test_raw_body_and_streaming(server, client):
    server.script(lambda body: {"status": 200, "body": "not json"}, times=1)
    raw = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    assert raw.status_code == 200 and raw.text == "not json"

    stream = chat(client, "stream me", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat(client, "stream me").choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_restart_keeps_the_port():
    srv = ScriptedLLMServer(models=["a", "b"])
    with srv:
        port = srv.port
        assert [m["id"] for m in httpx.get(f"{srv.base_url}/models").json()["data"]] == ["a", "b"]
    assert not srv.running
    with srv:
        assert srv.port == port
        assert httpx.get(f"{srv.url}/health").status_code == 200


def test_standalone_module():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_llm_server", "--port", str(port), "--model", "m1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 8
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert [m["id"] for m in models["data"]] == ["m1"]
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_request_log_can_be_switched_off():
    quiet = ScriptedLLMServer(keep_requests=False).start()
    try:
        client = openai.OpenAI(base_url=quiet.base_url, api_key="test", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content  # answered as usual
        assert quiet.requests == []  # nothing kept
    finally:
        quiet.stop()
