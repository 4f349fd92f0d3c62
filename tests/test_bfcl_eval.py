"""BFCL evaluation: data from the installed bfcl-eval wheel, prompts, answers from an endpoint, the CLI."""

from __future__ import annotations

import json
import socket
import time

import pytest
from typer.testing import CliRunner

from tasks.evaluation.bfcl_data import CATEGORIES, BfclDataError, bfcl_data_dir, check_categories, load_category
from tasks.evaluation.bfcl_eval import (
    PYTHON_HINT,
    Answer,
    EndpointAnswers,
    LocalModelAnswers,
    build_messages,
    evaluate,
    load_items,
    overall,
    score_item,
    system_prompt,
)
from toolace.cli import app
from toolace.errors import EndpointError, UserError

SIZES = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240,
         "live_simple": 258, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
         "live_irrelevance": 884, "live_relevance": 16}


def correct_answer(item) -> str:
    """The first acceptable value of every parameter that needs one, as a Python call list."""
    calls = []
    for call in item.possible_answer:
        name, params = next(iter(call.items()))
        args = ", ".join(f"{p}={options[0]!r}" for p, options in params.items() if options and options[0] != "")
        calls.append(f"{name}({args})")
    return "[" + ", ".join(calls) + "]"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------------- data


def test_data_folder_is_found_without_importing_bfcl_eval():
    import sys

    assert (bfcl_data_dir() / "BFCL_v4_simple_python.json").is_file()
    assert not any(name.startswith("bfcl_eval.") for name in sys.modules)


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_every_category_loads_from_the_installed_wheel(category):
    items = load_category(category)
    assert len(items) == SIZES[category]
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.question[0] and isinstance(item.functions, list)  # a few live_irrelevance items offer none
        if CATEGORIES[category] in ("irrelevance", "relevance"):
            assert item.possible_answer is None
        else:
            assert item.possible_answer and all(len(call) == 1 for call in item.possible_answer)


def test_limit_and_unknown_category():
    assert [item.id for item in load_category("parallel", limit=2)] == ["parallel_0", "parallel_1"]
    with pytest.raises(BfclDataError, match=r"unknown BFCL category 'simple'.*simple_python, multiple"):
        check_categories(["simple_python", "simple"])
    with pytest.raises(UserError, match="--limit"):
        load_items(["simple_python"], limit=0)


def test_unreadable_data_names_the_file_and_line(tmp_path):
    (tmp_path / "BFCL_v4_irrelevance.json").write_text('{"id": "irrelevance_0", "question": [[]], "function": []}\n'
                                                        "{not json\n")
    with pytest.raises(BfclDataError, match=r"BFCL_v4_irrelevance.json:2: not valid JSON"):
        load_category("irrelevance", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- prompts


def test_messages_as_bfcl_builds_them_for_prompting_models():
    item = load_category("simple_python", limit=1)[0]
    messages = build_messages(item)
    assert [m["role"] for m in messages] == ["system", "user"]
    prompt = messages[0]["content"]
    assert prompt.startswith("You are an expert in composing functions.You are given a question")
    assert "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]" in prompt
    functions = json.loads(prompt.split("that you can invoke.\n", 1)[1])
    assert functions[0]["description"].endswith(PYTHON_HINT)
    assert item.functions[0]["description"] + PYTHON_HINT == functions[0]["description"]  # the item is unchanged
    assert messages[1]["content"] == item.question[0][0]["content"]


def test_an_items_own_system_message_follows_bfcls_prompt():
    item = next(i for i in load_category("live_simple") if i.question[0][0]["role"] == "system")
    messages = build_messages(item)
    assert messages[0]["role"] == "system"
    hinted = [{**f, "description": f["description"] + PYTHON_HINT} for f in item.functions]
    assert messages[0]["content"] == system_prompt(hinted) + "\n\n" + item.question[0][0]["content"]
    assert len(messages) == len(item.question[0])


# ----------------------------------------------------------------------------------------------- scoring


def test_scoring_items_with_their_possible_answers():
    for category in ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple"):
        items = load_category(category, limit=20)
        valid = [score_item(item, Answer(correct_answer(item))).verdict.valid for item in items]
        assert sum(valid) >= 18, category  # a few ground truths list a value no call can give first
    item = load_category("irrelevance", limit=1)[0]
    assert score_item(item, Answer("I cannot answer that with these functions.")).verdict.valid
    missing = score_item(item, Answer(None, "context_length: prompt too long"))
    assert not missing.verdict.valid and missing.verdict.error_type == "generation_error:context_length"


class WordTokenizer:
    """A tokenizer with one token per word and a chat template that joins the contents."""

    def apply_chat_template(self, chat, tokenize, add_generation_prompt):
        return " ".join(m["content"] for m in chat)

    def __call__(self, text, add_special_tokens):
        return {"input_ids": text.split()}


class FakeScorer:
    """Stands in for LossScorer (its tokenizer, context length and batched generation)."""

    device = "cpu"
    max_length = 50
    tokenizer = WordTokenizer()

    def __init__(self):
        self.generated = []

    def generate_until(self, chats, stop, max_new_tokens, batch_size, on_batch=None):
        self.generated.append(len(chats))
        if on_batch is not None:
            on_batch()
        return [("[f(a=1)]", None)] * len(chats)


def test_local_answers_skip_prompts_over_the_context():
    source = LocalModelAnswers.__new__(LocalModelAnswers)
    source.scorer, source.target, source.max_new_tokens, source.batch_size = FakeScorer(), "fake", 10, 2
    steps: list[int] = []
    source.on_batch = lambda: steps.append(1)  # the stall watchdog hears of each generation batch
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "user", "content": "word " * 45}]
    answers = source.answer([short, long, short])
    assert [a.text for a in answers] == ["[f(a=1)]", None, "[f(a=1)]"]
    assert answers[1].error.startswith("context_length: prompt of 45 tokens + 10 new ones")
    assert source.scorer.generated == [2] and steps == [1]


def request_streamed(body: dict) -> bool:
    return body.get("stream") is True


def test_eval_through_an_openai_compatible_endpoint(llm, tmp_path):
    items = load_items(["simple_python", "irrelevance"], limit=3)
    answers = {item.question[0][-1]["content"]: correct_answer(item) for item in items["simple_python"][:2]}
    answers[items["irrelevance"][0].question[0][-1]["content"]] = "None of these functions fit."
    answers[items["irrelevance"][1].question[0][-1]["content"]] = "[determine_body_mass_index(weight=1.0, height=2.0)]"

    def rule(body):
        return {"content": answers.get(body["messages"][-1]["content"], "I do not know.")}

    llm.script(rule)
    seen = []
    source = EndpointAnswers(llm.base_url, None)
    output = tmp_path / "answers.jsonl"
    scores = evaluate(items, source, str(output), progress=lambda c, done, total: seen.append((c, done, total)))
    assert [(s.category, s.items, s.correct) for s in scores] == [("simple_python", 3, 2), ("irrelevance", 3, 2)]
    assert overall(scores).accuracy == pytest.approx(4 / 6)
    assert ("simple_python", 3, 3) in seen
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["simple_python_0", "simple_python_1", "simple_python_2", "irrelevance_0",
                                       "irrelevance_1", "irrelevance_2"]
    assert rows[0]["valid"] and rows[0]["decoded"] and rows[0]["model"].startswith("scripted-model at ")
    # prose is stopped once it cannot decode any more (see tests/test_call_list_prefix.py), with the same verdict
    assert rows[2]["error_type"] == "ast_decoder:decoder_failed" and rows[2]["answer"] == "I do not"
    assert rows[2]["answer_stopped"] == "bfcl_call_list_prefix_v1: 'I' then 'do' with no operator between"
    assert rows[0]["answer_stopped"] is None and request_streamed(llm.requests[0])
    assert rows[4]["error_type"] == "irrelevance_error:decoder_success"
    request = llm.requests[0]
    assert request["temperature"] == 0.0 and request["messages"][0]["role"] == "system"


CONTEXT_ERROR = {"error": {"message": "Requested tokens (8230) exceed context window of 8192",
                           "type": "invalid_request_error"}}


def test_an_item_longer_than_the_context_is_wrong_with_the_reason_and_the_rest_goes_on(llm, tmp_path):
    """A prompt over the model's context is refused by the endpoint for that item alone (HTTP 400): the item is
    wrong with the reason, never the whole evaluation stopped; any other refusal still stops it."""
    items = load_items(["simple_python"], limit=2)
    first, long = items["simple_python"]

    def rule(body):
        if body["messages"][-1]["content"] == long.question[0][-1]["content"]:
            return {"status": 400, "body": CONTEXT_ERROR}
        return {"content": correct_answer(first)}

    llm.script(rule)
    output = tmp_path / "answers.jsonl"
    [score] = evaluate(items, EndpointAnswers(llm.base_url, None), str(output))
    assert (score.items, score.correct) == (2, 1)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows[0]["valid"] and not rows[1]["valid"]
    assert rows[1]["answer_error"].startswith("context_length: request refused with HTTP 400")
    assert "exceed context window" in rows[1]["answer_error"]
    llm.script(lambda body: {"status": 400, "body": {"error": {"message": "bad request"}}})
    with pytest.raises(EndpointError, match="failed to answer: request refused with HTTP 400"):
        evaluate(items, EndpointAnswers(llm.base_url, None))


def test_endpoint_down_is_a_quick_error_naming_the_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(EndpointError, match=f"cannot reach the LLM endpoint at {url}"):
        EndpointAnswers(url, "some-model")
    assert time.monotonic() - started < 10


def test_unknown_model_at_the_endpoint(llm):
    with pytest.raises(EndpointError, match="does not serve model 'nope'"):
        EndpointAnswers(llm.base_url, "nope")


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_eval_writes_every_answer_and_prints_the_accuracy(llm, tmp_path):
    item = load_category("parallel", limit=1)[0]
    llm.script(lambda body: {"content": correct_answer(item)})
    output = tmp_path / "[" / "run]" / "eval.jsonl"  # a path that reads as console markup ("[/run]") is printed as is
    output.parent.mkdir(parents=True)
    result = CliRunner().invoke(app, ["eval", "--base-url", llm.base_url, "--category", "parallel",
                                      "--category", "irrelevance", "--limit", "2", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"answers and verdicts: {output}\n" in result.stdout
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["id"], r["valid"]) for r in rows] == [("parallel_0", True), ("parallel_1", False),
                                                     ("irrelevance_0", False), ("irrelevance_1", False)]
    assert "parallel" in result.stdout and "50.0%" in result.stdout and "overall" in result.stdout
    assert all(request_streamed(body) for body in llm.requests)


def test_cli_eval_full_answers_are_not_stopped(llm, tmp_path):
    llm.script(lambda body: {"content": "I would call the function with these values, but I cannot."})
    for flags, expected in (([], "I would call"), (["--full-answers"], "I would call the function with these "
                                                                       "values, but I cannot.")):
        output = tmp_path / f"eval{len(flags)}.jsonl"
        llm.clear_requests()
        result = CliRunner().invoke(app, ["eval", "--base-url", llm.base_url, "--category", "simple_python",
                                          "--limit", "1", "--output", str(output), *flags])
        assert result.exit_code == 0, result.output
        [row] = [json.loads(line) for line in output.read_text().splitlines()]
        assert row["answer"] == expected and row["error_type"] == "ast_decoder:decoder_failed"
        assert bool(row["answer_stopped"]) == (not flags) and request_streamed(llm.requests[-1]) == (not flags)


@pytest.mark.parametrize(("args", "message"), [
    (["--category", "simple"], "unknown BFCL category 'simple'"),
    (["--model", "smollm2", "--base-url", "http://x/v1"], "not both"),
    (["--model", "./no/such/folder", "--limit", "1"], "folder ./no/such/folder does not exist"),
])
def test_cli_eval_user_errors(args, message):
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 1
    assert "error:" in result.output and message in result.output
