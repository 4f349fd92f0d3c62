"""BFCL multi-turn in function-calling mode (issue 21 items 2, 3 and 6): the tools offered through the model's
template or an endpoint's ``tools=``, its calls sent back as ``tool_calls`` and the results as ``tool`` messages,
the held-out functions added to the tools at their turn, and the same state and response checks as prompt mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from tasks.evaluation.bfcl_data import load_multi_turn_category
from tasks.evaluation.bfcl_eval import Answer, evaluate, load_items
from tasks.evaluation.bfcl_fc import EndpointFcAnswers, FcAnswer, FcRequest, fc_tools, openai_messages
from tasks.evaluation.bfcl_multi_turn import (
    ADDITIONAL_FUNCTION_PROMPT_FC,
    GroundTruthFcAnswers,
    decode_step,
    evaluate_category,
    fc_offered_tools,
    ground_truth_calls,
    read_fc_step,
    run_entries,
)
from tasks.formats.chat_templates import ChatTemplate, load_family, render
from tasks.formats.tool_call_formats import parse_tool_calls, rendered_assistant_turn
from toolace.chat_template_files import DEFAULT_FAMILIES, templates_dir
from toolace.cli import app

pytest.importorskip("bfcl_eval", reason="bfcl-eval is installed by `toolace fetch-models --only bfcl`")


class Recording(GroundTruthFcAnswers):
    """The scripted FC model, keeping every request it was asked."""

    def __init__(self, entries, **kwargs) -> None:
        super().__init__(entries, **kwargs)
        self.requests: list[FcRequest] = []

    def answer_fc(self, requests):
        self.requests.extend(requests)
        return super().answer_fc(requests)


def test_ground_truth_calls_score_full_marks_in_every_multi_turn_category(tmp_path: Path) -> None:
    items = load_items(["multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
                        "multi_turn_long_context"], limit=3)
    source = Recording([e for entries in items.values() for e in entries])
    output = tmp_path / "answers.jsonl"
    scores = evaluate(items, source, str(output))
    assert [(s.items, s.correct) for s in scores] == [(3, 3)] * 4
    first = source.requests[0]
    assert all(m["role"] != "system" for m in first.messages)  # no BFCL system prompt: the template has the tools
    assert first.tools == fc_tools(items["multi_turn_base"][0].functions)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    step = rows[0]["turns"][0][0]
    assert step["calls"] == ["cd(folder='document')", "mkdir(dir_name='temp')",
                             "mv(source='final_report.pdf', destination='temp')"]
    assert [c["id"] for c in step["tool_calls"]] == ["call00000", "call00001", "call00002"]
    assert step["tool_calls"][1]["function"] == {"name": "mkdir", "arguments": {"dir_name": "temp"}}


def test_the_conversation_goes_back_as_tool_calls_and_tool_messages() -> None:
    entries = load_multi_turn_category("multi_turn_base", 1)
    source = Recording(entries)
    [result] = run_entries(entries, source)
    assert result.verdict.valid
    after_calls = next(r for r in source.requests if r.messages[-1]["role"] == "tool")
    assistant = next(m for m in after_calls.messages if m.get("tool_calls"))
    tools = [m for m in after_calls.messages if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == [c["id"] for c in assistant["tool_calls"]]
    assert [t["name"] for t in tools] == ["cd", "mkdir", "mv"]
    assert tools[0]["content"] == '{"current_working_directory": "document"}'
    assert assistant["content"] == "" and isinstance(assistant["tool_calls"][0]["function"]["arguments"], dict)


def test_held_out_functions_join_the_tools_at_their_turn() -> None:
    entries = load_multi_turn_category("multi_turn_miss_func", 1)
    entry = entries[0]
    (turn, held), = entry.missed_functions.items()
    source = Recording(entries)
    [result] = run_entries(entries, source)
    assert result.verdict.valid
    names = {r.messages[-1]["content"]: {t["function"]["name"] for t in r.tools} for r in source.requests
             if r.messages[-1]["role"] == "user"}
    added = {doc["name"] for doc in held}
    assert not added & names[entry.question[0][-1]["content"]]
    assert added <= names[ADDITIONAL_FUNCTION_PROMPT_FC]  # the turn that brings them opens with BFCL's FC note
    assert fc_offered_tools(entry, turn - 1) != fc_offered_tools(entry, turn)


def test_wrong_calls_fail_with_the_reason_and_a_broken_call_ends_the_turn() -> None:
    entries = load_multi_turn_category("multi_turn_base", 1)

    def misnamed(entry, turn, calls):
        return [(n, {**a, "dir_name": "tmp"} if n == "mkdir" else a) for n, a in calls]

    score = evaluate_category("multi_turn_base", entries, GroundTruthFcAnswers(entries, answer_for=misnamed))
    assert (score.items, score.correct) == (1, 0)
    [result] = run_entries(entries, GroundTruthFcAnswers(entries, answer_for=misnamed))
    assert result.verdict.error_type == "multi_turn:instance_state_mismatch"

    broken = GroundTruthFcAnswers(entries, tool_format="hermes",
                                  write=lambda calls: '<tool_call>\n{"name": "cd", "arguments": {\n</tool_call>')
    [result] = run_entries(entries, broken)
    first = result.steps[0][0]
    assert "calls" not in first and first["decode_error"]  # the parser's reason is kept
    assert result.verdict.error_type == "multi_turn:empty_turn_model_response"


def test_the_transcript_reads_back_the_calls_made() -> None:
    """FC steps are scored through prompt-mode call lists: each must decode to the very calls executed."""
    for category in ("multi_turn_base", "multi_turn_miss_param", "multi_turn_long_context"):
        for entry in load_multi_turn_category(category, 10):
            for turn in range(len(entry.ground_truth)):
                calls = ground_truth_calls(entry, turn)
                if not calls:
                    continue
                answer = FcAnswer("", calls=[{n: json.dumps(a)} for n, a in calls])
                reading = read_fc_step(answer, None, entry, turn, 0)
                assert decode_step(reading.transcript_text).calls == reading.step.calls
    text = read_fc_step(Answer("I will not."), None, entry, 0, 0)
    assert (text.step, text.transcript_text, text.problem) == (None, "", None)


def test_over_real_http_the_history_follows_openais_documented_shapes(llm) -> None:
    """The scripted OpenAI-compatible server answers each turn's first step with its ground-truth calls; every
    request it gets must validate as the ``openai`` package's own message types (arguments as JSON strings, a
    ``tool_call_id`` on each tool message)."""
    from openai.types.chat import ChatCompletionMessageParam

    entries = load_multi_turn_category("multi_turn_base", 2)
    users = {e.question[t][-1]["content"]: (e, t) for e in entries for t in range(len(e.question)) if e.question[t]}

    def rule(body):
        messages = body["messages"]
        if messages[-1]["role"] == "tool":
            return {"content": "Done."}
        entry, turn = users[messages[-1]["content"]]
        calls = ground_truth_calls(entry, turn)
        if not calls:
            return {"content": "I cannot do that."}
        return {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}

    llm.script(rule)
    results = run_entries(entries, EndpointFcAnswers(llm.base_url, None))
    assert [r.verdict.valid for r in results] == [True, True]
    adapter = TypeAdapter(list[ChatCompletionMessageParam])
    with_history = [r for r in llm.requests if any(m["role"] == "tool" for m in r["messages"])]
    assert with_history
    for request in with_history:
        adapter.validate_python(request["messages"])
        for message in request["messages"]:
            if message.get("tool_calls"):
                assert all(isinstance(c["function"]["arguments"], str) for c in message["tool_calls"])
            if message["role"] == "tool":
                assert set(message) == {"role", "tool_call_id", "content"}


def template_writer(template, end_of_turn: str = "<|im_end|>"):
    """The scripted model's writer for a family: the text ``template`` writes for an assistant turn making the
    calls, up to its end of turn (ChatML's unless told)."""
    def write(calls):
        messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call{k:05d}", "type": "function", "function": {"name": n, "arguments": a}}
            for k, (n, a) in enumerate(calls)]}]
        turn = rendered_assistant_turn(lambda m, g: render(template, m, None, g), messages).rstrip()
        return turn.split(end_of_turn, 1)[0]  # generation stops at the first

    return write


def _first_entry_of_each_class(entries: list) -> list:
    classes: dict[str, object] = {}
    for entry in entries:
        for name in entry.involved_classes:
            classes.setdefault(name, entry)
    assert len(classes) == 8
    return list({id(e): e for e in classes.values()}.values())


def test_qwen_template_renders_the_history_and_its_calls_read_back() -> None:
    """Through Qwen2.5's real template (llama.cpp's copy): a scripted model answers with the very text the template
    writes for the ground-truth calls, read as Hermes; each later prompt renders the calls and the results the
    way the family was trained on (``<tool_call>`` and ``<tool_response>``)."""
    template = load_family("qwen2.5", templates_dir(None, DEFAULT_FAMILIES))
    qwen_text = template_writer(template)
    entries = load_multi_turn_category("multi_turn_base", 2)
    source = Recording(entries, write=qwen_text, tool_format="hermes")
    results = run_entries(entries, source)
    assert [r.verdict.valid for r in results] == [True, True]
    last = max(source.requests, key=lambda r: len(r.messages))
    prompt = render(template, last.messages, last.tools, True)
    assert '<tool_call>\n{"name": "cd", "arguments": {"folder": "document"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"current_working_directory": "document"}\n</tool_response>' in prompt
    assert '"name": "mkdir"' in prompt.split("<|im_end|>")[0]  # the tools are in the system turn


def test_qwen35_xml_calls_are_typed_by_the_offered_tools_and_score_full_marks() -> None:
    """Through Qwen3.5's real template: its calls are XML whose values are text (``<parameter=amount>\\n100``);
    read with the entry's offered tools, the numbers, booleans and lists are typed back, so the ground truth of
    entries over all eight of BFCL's classes executes and scores full marks (read without the tools, those values
    would stay text)."""
    template = load_family("qwen3.5", templates_dir(None, DEFAULT_FAMILIES))
    qwen35_text = template_writer(template)
    entries = load_multi_turn_category("multi_turn_base", 200)
    chosen = _first_entry_of_each_class(entries)
    source = Recording(chosen, write=qwen35_text, tool_format="qwen3_coder")
    results = run_entries(chosen, source)
    assert [r.verdict.valid for r in results] == [True] * len(chosen), [r.verdict for r in results]
    typed = [(entry, turn, name, arguments) for entry in entries for turn in range(len(entry.question))
             for name, arguments in ground_truth_calls(entry, turn)
             if any(not isinstance(v, str) for v in arguments.values())]
    assert typed
    entry, turn, name, arguments = typed[0]
    answer = qwen35_text([(name, arguments)])
    reading = read_fc_step(Answer(answer), "qwen3_coder", entry, turn, 0)
    assert reading.problem is None and reading.calls[0]["function"]["arguments"] == arguments
    untyped = parse_tool_calls(answer, "qwen3_coder").calls[0].arguments
    assert untyped != arguments and all(isinstance(v, str) for v in untyped.values())
    last = max(source.requests, key=lambda r: len(r.messages))
    prompt = render(template, last.messages, last.tools, True)
    assert "<tool_call>\n<function=" in prompt and "<tool_response>" in prompt


DEEPSEEK_END = "<｜end▁of▁sentence｜>"


@pytest.mark.parametrize(("file", "tool_format", "end_of_turn"), [
    ("MiniMax-M2.jinja", "minimax_m2", "[e~["), ("deepseek-ai-DeepSeek-V3.2.jinja", "deepseek_v32", DEEPSEEK_END),
    ("deepseek-ai-DeepSeek-V4.jinja", "deepseek_v4", DEEPSEEK_END),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek_v3", DEEPSEEK_END),
    ("Kimi-K3.jinja", "kimi_k3", "<|end_of_msg|>"), ("Apertus-8B-Instruct.jinja", "apertus", "<|assistant_end|>"),
    ("ByteDance-Seed-OSS.jinja", "seed_oss", "<seed:eos>"),
    ("NVIDIA-Nemotron-Nano-v2.jinja", "nemotron_nano_v2", "<SPECIAL_12>")])
def test_calls_of_eight_more_templates_read_back_score_full_marks(file, tool_format, end_of_turn) -> None:
    """Through MiniMax M2's, DeepSeek V3.2's, V4's, R1's, Kimi K3's, Apertus's, Seed-OSS's and Nemotron Nano 2's real
    templates, the ground truth of one entry per BFCL class executes to full marks: MiniMax's and Seed-OSS's bare
    values typed back by the offered tools, DSML's by its ``string`` attribute and the tools' types, R1's fenced JSON
    line, K3's typed XTML arguments, Apertus's one-key objects and Nemotron's <TOOLCALL> JSON read as vLLM's parsers
    read them."""
    folder = templates_dir(None, DEFAULT_FAMILIES)
    template = ChatTemplate(file, (folder / file).read_text(encoding="utf-8"))
    write = template_writer(template, end_of_turn)
    chosen = _first_entry_of_each_class(load_multi_turn_category("multi_turn_base", 200))
    results = run_entries(chosen, Recording(chosen, write=write, tool_format=tool_format))
    assert [r.verdict.valid for r in results] == [True] * len(chosen), [r.verdict for r in results]


def _lfm25_can_write(entry) -> bool:
    """LFM2.5's template writes a string argument between single quotes as it is: one holding a quote, a backslash or
    a line break is no Python (for vLLM's lfm2 parser either)."""
    strings = [value for turn in range(len(entry.question)) for _, arguments in ground_truth_calls(entry, turn)
               for value in arguments.values() if isinstance(value, str)]
    return not any(mark in value for value in strings for mark in ("'", "\\", "\n", "\r"))


def test_lfm25_calls_read_back_score_full_marks_where_its_template_can_write_them() -> None:
    """Through LFM2.5's real template (a Python call list between its call tokens), the ground truth of one entry
    per BFCL class executes to full marks where the template can write every string of it; an entry with a string
    it writes as broken Python fails at that turn, as it would served by vLLM."""
    folder = templates_dir(None, DEFAULT_FAMILIES)
    template = ChatTemplate("LFM2.5-8B-A1B.jinja", (folder / "LFM2.5-8B-A1B.jinja").read_text(encoding="utf-8"))
    chosen = _first_entry_of_each_class(load_multi_turn_category("multi_turn_base", 200))
    results = run_entries(chosen, Recording(chosen, write=template_writer(template), tool_format="lfm2"))
    writable = [_lfm25_can_write(entry) for entry in chosen]
    assert sum(writable) >= 4 and not all(writable)
    assert [r.verdict.valid for r in results] == writable, [r.verdict for r in results]
    assert all(r.verdict.error_type == "multi_turn:empty_turn_model_response"
               for r, ok in zip(results, writable, strict=True) if not ok)


def test_openai_messages_leave_text_chats_as_they_are() -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert openai_messages(chat) == chat
    called = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "call00000", "type": "function", "function": {"name": "ls", "arguments": {"a": True}}}]},
        {"role": "tool", "tool_call_id": "call00000", "name": "ls", "content": "{}"}]
    wire = openai_messages(called)
    assert wire[0]["tool_calls"][0]["function"]["arguments"] == '{"a": true}' and "name" not in wire[1]
    assert called[0]["tool_calls"][0]["function"]["arguments"] == {"a": True}  # the chat is left as it was


def test_cli_eval_fc_runs_multi_turn_through_an_endpoint(llm, tmp_path: Path) -> None:
    entries = load_multi_turn_category("multi_turn_base", 1)
    entry = entries[0]
    turns = {entry.question[t][-1]["content"]: t for t in range(len(entry.question))}

    def rule(body):
        if body["messages"][-1]["role"] == "tool":
            return {"content": "Done."}
        calls = ground_truth_calls(entry, turns[body["messages"][-1]["content"]])
        return {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]} if calls else {"content": "No."}

    llm.script(rule)
    output = tmp_path / "mt.jsonl"
    result = CliRunner().invoke(app, ["eval", "--mode", "fc", "--category", "multi_turn_base", "--limit", "1",
                                      "--base-url", llm.base_url, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "BFCL (fc mode)" in result.stdout and "100.0%" in result.stdout
    row = json.loads(output.read_text())
    assert row["valid"] and row["turns"][0][0]["calls"][0] == "cd(folder='document')"


TEMPLATE_REFUSAL = {"status": 400, "body": {"error": {
    "message": "the chat template refused this chat: This model only supports single tool-calls at once!",
    "type": "invalid_request_error", "code": "chat_template_refused"}}}


def test_a_template_that_refuses_the_models_own_history_fails_that_entry_alone(llm) -> None:
    """Over real HTTP, an endpoint whose template refuses a history with several calls in one message (what Llama
    3.x's templates do; our embedded server's ``chat_template_refused`` answer): the entry whose model made such a
    message fails with the template's reason kept, the entry that made one call per message is scored as usual."""
    entries = load_multi_turn_category("multi_turn_base", 5)
    several, single = entries[0], entries[4]  # ground truth: 3 calls in the first turn; one call in each turn
    users = {e.question[t][-1]["content"]: (e, t) for e in (several, single) for t in range(len(e.question))
             if e.question[t]}

    def rule(body):
        messages = body["messages"]
        if any(len(m.get("tool_calls") or []) > 1 for m in messages):
            return TEMPLATE_REFUSAL
        if messages[-1]["role"] == "tool":
            return {"content": "Done."}
        entry, turn = users[messages[-1]["content"]]
        calls = ground_truth_calls(entry, turn)
        return {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]} if calls else {"content": "No."}

    llm.script(rule)
    results = run_entries([several, single], EndpointFcAnswers(llm.base_url, None))
    refused, scored = results
    assert not refused.verdict.valid and refused.verdict.error_type == "multi_turn:inference_error"
    assert "chat_template" in refused.verdict.error and "single tool-calls" in refused.verdict.error
    assert scored.verdict.valid


def test_a_template_that_refuses_a_chat_the_evaluation_wrote_is_one_clear_error(llm) -> None:
    """A refused first request holds no call of the model's: every entry would be refused, so the evaluation
    stops with one error naming the template, instead of failing every entry."""
    from toolace.errors import EndpointError

    llm.script(lambda body: TEMPLATE_REFUSAL)
    with pytest.raises(EndpointError, match="chat template .* refused a chat the evaluation wrote"):
        run_entries(load_multi_turn_category("multi_turn_base", 2), EndpointFcAnswers(llm.base_url, None))
