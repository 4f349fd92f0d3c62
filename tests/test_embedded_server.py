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
from hypothesis import given
from hypothesis import strategies as st

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
    # streamed, the grammar-bound answer comes whole in one chunk, its calls indexed as OpenAI streams them
    chunks = list(served.chat.completions.create(
        model=DEFAULT_ALIAS, messages=[{"role": "user", "content": "Forecast for Paris, 3 days, metric."}],
        tools=tools, tool_choice="required", max_tokens=200, seed=2, stream=True))
    streamed = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert [c.index for c in streamed] == list(range(len(calls)))
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in calls]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_unknown_model_is_a_404(served):
    with pytest.raises(openai.NotFoundError):
        served.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])


def test_grammar_bounds_and_prompt_hint_keep_the_schema():
    schema = schema_for(UserTurn)
    capped = bounded({"type": "object", "properties": {"s": {"type": "string"}, "a": {"type": "array"}}})
    assert capped["properties"]["s"]["maxLength"] == 200 and capped["properties"]["a"]["maxItems"] == 8
    jsonschema.Draft202012Validator.check_schema(bounded(schema))
    assert '"message"' in schema_hint(schema)


def test_a_text_answer_streams_token_by_token_and_a_stop_rule_cuts_it(served):
    """The real SmolLM2 streaming through the embedded server: the streamed text is the plain answer, and the
    gateway's stop rule (BFCL's call-list prefix) closes the stream a few tokens in, leaving a prefix of it."""
    import asyncio

    from tasks.evaluation.bfcl_eval import build_messages, load_items
    from tasks.evaluation.call_list_prefix import CallListPrefixRule
    from toolace.llm.gateway import GatewaySettings, LLMGateway

    item = load_items(["simple_python"], 1)["simple_python"][0]
    messages = build_messages(item)
    whole = served.chat.completions.create(model=DEFAULT_ALIAS, messages=messages, max_tokens=40, temperature=0.0)
    text = whole.choices[0].message.content
    chunks = list(served.chat.completions.create(model=DEFAULT_ALIAS, messages=messages, max_tokens=40,
                                                 temperature=0.0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    async def stopped() -> object:
        gateway = LLMGateway(GatewaySettings(base_url=str(served.base_url), model=DEFAULT_ALIAS, temperature=0.0,
                                             max_tokens=40, hedge=False))
        try:
            return await gateway.chat(messages, stage="eval", stop=CallListPrefixRule())
        finally:
            await gateway.aclose()

    result = asyncio.run(stopped())
    assert result.stopped and text.startswith(result.content) and len(result.content) < len(text)
    assert result.raw["usage"]["completion_tokens"] < whole.usage.completion_tokens


def test_a_request_that_finds_no_free_instance_is_an_error_not_a_wait(monkeypatch):
    import asyncio

    from toolace.llm import embedded_server

    monkeypatch.setattr(embedded_server, "INSTANCE_WAIT_S", 0.05)
    model = object.__new__(embedded_server.EmbeddedModel)  # every instance busy: an empty pool
    model.alias, model.pool, model.tool_template = "m", embedded_server.InstancePool([]), None
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(embedded_server.InstanceBusy, match="no llama.cpp instance came free within 0 s"):
        model.complete(body)

    async def events() -> list[str]:
        return [event async for event in model.stream({**body, "stream": True})]

    [event] = asyncio.run(events())
    assert json.loads(event.removeprefix("data: "))["error"]["type"] == "server_error"


def test_the_server_does_not_outlive_the_process_that_started_it():
    """A command killed before its clean-up runs (SIGKILL) leaves no embedded server behind: the server watches the
    process that started it."""
    from toolace.errors import EndpointError
    from toolace.llm.endpoint import served_models

    script = ("import time\nfrom toolace.llm.endpoint import embedded_endpoint\n"
              "with embedded_endpoint(instances=1) as endpoint:\n"
              "    print(endpoint.base_url, flush=True)\n    time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        url = child.stdout.readline().strip()  # the child's start-up deadline (180 s) bounds this read
        assert url and served_models(url) == [DEFAULT_ALIAS]
    finally:
        child.kill()
        child.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            served_models(url, timeout_s=1.0)
        except EndpointError:
            return
        time.sleep(0.5)
    pytest.fail("the embedded server still answers 30 s after the process that started it was killed")


# ------------------------------------------------------------------------------------- prefix affinity


@given(st.text(max_size=60), st.text(max_size=60))
def test_common_prefix_is_the_shared_start(a, b):
    from toolace.llm.embedded_server import common_prefix

    n = common_prefix(a, b)
    assert a[:n] == b[:n] and (n == min(len(a), len(b)) or a[n] != b[n])


def test_each_conversation_goes_back_to_the_instance_that_holds_its_prompt():
    """Two conversations on two instances, asked in turns: each step gets the instance that served the step before
    (llama.cpp then evaluates only the new part of the prompt), whichever instance came free first; a new
    conversation gets the instance idle longest."""
    from toolace.llm.embedded_server import InstancePool, conversation_key

    pool = InstancePool(["i0", "i1"])
    system = {"role": "system", "content": "You are an expert in composing functions. " * 20}
    a = [system, {"role": "user", "content": "List the files."}]
    b = [system, {"role": "user", "content": "Post a tweet."}]
    first_a, first_b = pool.take(conversation_key(a), 1.0), pool.take(conversation_key(b), 1.0)
    assert {first_a, first_b} == {0, 1}
    pool.give_back(first_b, conversation_key(b, "[post_tweet(content='hi')]"))  # b's instance is free first
    pool.give_back(first_a, conversation_key(a, "[ls()]"))
    a_next = [*a, {"role": "assistant", "content": "[ls()]"}, {"role": "user", "content": "[{'role': 'tool'}]"}]
    b_next = [*b, {"role": "assistant", "content": "[post_tweet(content='hi')]"}]
    assert pool.take(conversation_key(a_next), 1.0) == first_a
    assert pool.take(conversation_key(b_next), 1.0) == first_b
    pool.give_back(first_b, conversation_key(b_next, "Done."))
    pool.give_back(first_a, conversation_key(a_next, "Done."))
    assert pool.take(conversation_key([system, {"role": "user", "content": "new"}]), 1.0) == first_b  # idle longest


def test_tool_calls_are_part_of_a_conversation_key():
    """Two FC histories that differ only in the calls the assistant made are different conversations (their calls
    are in the prompt the template renders), so prefix affinity does not take one for the other."""
    from toolace.llm.embedded_server import conversation_key

    def called(arguments: str) -> list[dict]:
        return [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call00000", "type": "function", "function": {"name": "cd", "arguments": arguments}}]}]

    one, other = conversation_key(called('{"folder": "a"}')), conversation_key(called('{"folder": "b"}'))
    assert one != other and one.startswith(conversation_key(called('{"folder": "a"}')[:1]))


def test_template_messages_keep_tool_calls_with_object_arguments():
    """What a model's own template is given: OpenAI's JSON-string arguments as objects (vLLM does the same), content
    parts joined, tool messages as they are; arguments that are not JSON are left as the client sent them."""
    from toolace.llm.embedded_server import template_messages

    chat = [{"role": "user", "content": [{"type": "text", "text": "list "}, {"type": "text", "text": "files"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call00000", "type": "function", "function": {"name": "ls", "arguments": '{"a": true}'}},
                {"id": "call00001", "type": "function", "function": {"name": "cd", "arguments": "{oops"}}]},
            {"role": "tool", "tool_call_id": "call00000", "content": "[]"}]
    out = template_messages(chat)
    assert out[0]["content"] == "list files"
    assert [c["function"]["arguments"] for c in out[1]["tool_calls"]] == [{"a": True}, "{oops"]
    assert out[2] == chat[2] and chat[1]["tool_calls"][0]["function"]["arguments"] == '{"a": true}'  # not mutated


def test_a_waiting_request_gets_the_instance_given_back_and_the_wait_has_a_deadline():
    import threading

    from toolace.llm.embedded_server import InstanceBusy, InstancePool

    pool = InstancePool(["only"])
    held = pool.take("a", 1.0)
    with pytest.raises(InstanceBusy, match="within 0 s"):
        pool.take("b", 0.05)
    threading.Timer(0.1, pool.give_back, (held, "a")).start()
    started = time.monotonic()
    assert pool.take("b", 5.0) == held and time.monotonic() - started < 4


class SlowInstance:
    """A llama.cpp instance stand-in: each completion takes ``seconds`` and is recorded."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.asked = seconds, []

    def create_chat_completion(self, messages, grammar=None, **sampling):
        self.asked.append(messages[-1]["content"])
        time.sleep(self.seconds)
        return {"choices": [{"message": {"content": "done"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def test_a_request_whose_client_left_while_it_waited_is_not_generated():
    """Over real HTTP (uvicorn): one instance busy with A; B's client gives up (its timeout) while B waits for the
    instance; when A is done, B is not generated, and C, sent after, is answered next."""
    import threading

    import uvicorn

    from toolace.llm import embedded_server

    instance = SlowInstance(4.0)  # long enough for B to be given up well before A is done, on a loaded machine
    model = object.__new__(embedded_server.EmbeddedModel)
    model.alias, model.pool, model.tool_template = "m", embedded_server.InstancePool([instance]), None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(embedded_server.create_app(model), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

        def ask(content: str, timeout: float) -> str:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                                   timeout=timeout)
            answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
            return answer.choices[0].message.content

        first = threading.Thread(target=ask, args=("A", 30.0))
        first.start()
        while instance.asked != ["A"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.APITimeoutError):
            ask("B", 0.5)  # waits for the instance A holds, then its client leaves
        first.join(timeout=30)
        assert ask("C", 30.0) == "done"
        assert instance.asked == ["A", "C"]  # B was never generated
        assert len(model.pool._free) == 1  # and the instance is free again
    finally:
        server.should_exit = True
        thread.join(timeout=10)
