"""`toolace train --format native` (issue 21 item 1): each row rendered through the base model's own chat template
with tools=, the loss on exactly the assistant turn's tokens (calls and reasoning included), a base whose template
renders no tools refused. The templates are real models' (llama.cpp's copies) set on SmolLM2's tokenizer, whose
vocabulary holds their ChatML markers; the one training run uses the tiny random model of tests/conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.formats.chat_templates import load_template
from tasks.formats.tool_call_formats import parse_tool_calls
from tasks.training.fine_tuning import (
    RECORD_NAME,
    NativeRenderError,
    TrainConfig,
    TrainingError,
    check_native_template,
    has_generation_markers,
    native_tokens,
    read_examples,
    train,
)
from toolace.chat_template_files import find_templates_dir

pytestmark = pytest.mark.skipif(find_templates_dir() is None, reason="llama.cpp chat templates not extracted")

TOOLS = [{"type": "function", "function": {"name": "get_forecast", "description": "Forecast for a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"}},
                                               "required": ["city"]}}}]
SYSTEM = "You are the forecast desk of Meteo Inc."


def _call(call_id: str, city: str, days: int | None = None) -> dict:
    arguments = {"city": city} if days is None else {"city": city, "days": days}
    return {"id": call_id, "type": "function", "function": {"name": "get_forecast", "arguments": json.dumps(arguments)}}


def _rows() -> list[dict]:
    """OpenAI-format rows: a call, its result, an answer (with reasoning), then two parallel calls."""
    rows = []
    for n, (city, other) in enumerate([("Lisbon", "Porto"), ("Oslo", "Bergen")]):
        rows.append({"id": f"r{n}", "tools": TOOLS, "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Weather in {city} tomorrow?"},
            {"role": "assistant", "content": None, "tool_calls": [_call("c1", city, 1)]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": f"It will be 21 degrees in {city}.",
             "reasoning_content": f"The tool said 21 for {city}."},
            {"role": "user", "content": f"And in {city} and {other}?"},
            {"role": "assistant", "content": None, "tool_calls": [_call("c2", city), _call("c3", other)]}]})
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("native") / "openai.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows()))
    return path


def _tokenizer(tiny_base: Path, family: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = load_template(family)
    return tokenizer


# family -> (tool-call format, end-of-turn text after the turn: Mistral's templates write the tokenizer's
# eos_token, here SmolLM2's)
FAMILIES = {"qwen2.5": ("hermes", "<|im_end|>\n"), "hermes3": ("hermes", "<|im_end|>\n"),
            "llama3.1": ("llama3_json", "<|eot_id|>"), "mistral-small3": ("mistral", "<|im_end|>"),
            "mistral-nemo": ("mistral", "<|im_end|>"), "qwen3.5": ("qwen3_coder", "<|im_end|>\n"),
            "deepseek-v3": ("deepseek_v31", "<｜end▁of▁sentence｜>")}


# ---------------------------------------------------------------------------------------------- refusal


def test_a_base_whose_template_renders_no_tools_is_refused(tiny_base, dataset, tmp_path):
    from transformers import AutoTokenizer

    with pytest.raises(TrainingError, match="its template does not show the offered tools.*--format toolace"):
        check_native_template(AutoTokenizer.from_pretrained(tiny_base), "smollm2")  # SmolLM2's own template
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=rf"base model {tiny_base}: its template does not show"):
        train(TrainConfig(dataset=str(dataset), out=str(out), base=str(tiny_base), steps=1, format="native"))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_native_is_the_cli_default_and_refuses_smollm2_in_one_line(tiny_base, dataset, tmp_path):
    from toolace.cli import app

    result = CliRunner().invoke(app, ["train", str(dataset), "--base", str(tiny_base), "--out", str(tmp_path / "o"),
                                      "--steps", "1"])
    assert result.exit_code == 1 and "error: base model" in result.output and "--format toolace" in result.output
    bad = CliRunner().invoke(app, ["train", str(dataset), "--out", str(tmp_path / "o"), "--format", "sharegpt"])
    assert bad.exit_code == 1 and "--format must be one of native, toolace" in bad.output


# -------------------------------------------------------------------------------------------- examples


def test_native_examples_are_the_rows_chat_with_tools(dataset):
    examples = read_examples(str(dataset), fmt="native").examples
    assert len(examples) == 6 and [e.makes_calls for e in examples[:3]] == [True, False, True]
    first, answer, parallel = examples[:3]
    assert first.tools == TOOLS and first.prompt[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in parallel.prompt] == ["system", "user", "assistant", "tool", "assistant", "user"]
    calls = parallel.completion[0]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Lisbon"}, {"city": "Porto"}]  # objects
    assert first.prompt[-1]["content"] == "Weather in Lisbon tomorrow?"
    assert answer.completion[0]["reasoning_content"] == "The tool said 21 for Lisbon."
    tool = answer.prompt[-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == first.completion[0]["tool_calls"][0]["id"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_loss_covers_exactly_the_assistant_turn(tiny_base, dataset, family):
    """Every example: the tokens with a label are the assistant turn as the template writes it (its calls read
    back in the family's format, its end-of-turn marker), and all the others are the prompt the model is given
    at inference (the chat rendered with the generation prompt)."""
    tokenizer = _tokenizer(tiny_base, family)
    fmt, end = FAMILIES[family]
    examples = read_examples(str(dataset), fmt="native").examples
    refused = 0
    for example in examples:
        try:
            tokens = native_tokens(tokenizer, example)
        except NativeRenderError as exc:
            assert family == "llama3.1" and "only supports single tool-calls" in str(exc)
            assert len(example.completion[0]["tool_calls"]) > 1
            refused += 1
            continue
        first = next(i for i, label in enumerate(tokens.labels) if label != -100)
        assert all(label == -100 for label in tokens.labels[:first])
        assert tokens.labels[first:] == tokens.input_ids[first:]  # one span, to the end
        prompt = tokenizer.apply_chat_template(example.prompt, tools=example.tools, tokenize=False,
                                               add_generation_prompt=True)
        assert tokenizer.decode(tokens.input_ids[:first]) == prompt
        learned = tokenizer.decode(tokens.learned)
        assert tokenizer.apply_chat_template(example.prompt + example.completion, tools=example.tools,
                                             tokenize=False).endswith(learned)  # the turn as the whole chat has it
        assert tokenizer.decode(tokens.input_ids) == prompt + learned
        assert learned.endswith(end) and not learned.startswith(("<|im_start|>", "<|start_header_id|>", "[INST]"))
        turn = example.completion[0]
        for message in example.prompt:  # nothing of the system prompt, the user or the tool results is learned
            assert not message.get("content") or message["content"] not in learned
        if turn.get("tool_calls"):
            parsed = parse_tool_calls(learned[: -len(end)], fmt, example.tools)
            assert [(c.name, c.arguments) for c in parsed.calls] == [
                (c["function"]["name"], c["function"]["arguments"]) for c in turn["tool_calls"]]
        else:
            assert turn["content"] in learned and "get_forecast" not in learned
    assert refused == (2 if family == "llama3.1" else 0)


def test_reasoning_is_learned_when_the_row_carries_it(tiny_base, dataset):
    tokenizer = _tokenizer(tiny_base, "qwen3")
    answer = read_examples(str(dataset), fmt="native").examples[1]
    learned = tokenizer.decode(native_tokens(tokenizer, answer).learned)
    assert learned == "<think>\nThe tool said 21 for Lisbon.\n</think>\n\nIt will be 21 degrees in Lisbon.<|im_end|>\n"


def test_a_template_with_generation_markers_gives_the_span_itself(tiny_base, dataset):
    """LFM2.5's template marks the assistant's tokens with {% generation %} (what TRL's assistant-only loss reads):
    the span is its mask's last run, and it is the same text the rendered prefixes give."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = (find_templates_dir() / "LFM2.5-8B-A1B.jinja").read_text()
    assert has_generation_markers(tokenizer)
    check_native_template(tokenizer, "lfm")
    for example in read_examples(str(dataset), fmt="native").examples:
        marked = native_tokens(tokenizer, example, generation_markers=True)
        prefixed = native_tokens(tokenizer, example)
        assert tokenizer.decode(marked.learned) == tokenizer.decode(prefixed.learned)
        assert tokenizer.decode(marked.learned).endswith("<|im_end|>\n")
        assert sum(label != -100 for label in marked.labels) == len(marked.learned) > 0


# -------------------------------------------------------------------------------------------- training


def test_trl_trains_on_our_labels_unchanged(tiny_base, dataset, tmp_path):
    from datasets import Dataset
    from trl import SFTTrainer

    from tasks.training.fine_tuning import _sft_config, load_base_model, load_base_tokenizer

    tokenizer, source = load_base_tokenizer(str(tiny_base))
    tokenizer.chat_template = load_template("qwen2.5")
    rows = [native_tokens(tokenizer, e) for e in read_examples(str(dataset), fmt="native").examples]
    trainer = SFTTrainer(model=load_base_model(str(tiny_base), source), processing_class=tokenizer,
                         args=_sft_config(TrainConfig(dataset="", out="", steps=1), tmp_path / "t", cuda=False),
                         train_dataset=Dataset.from_list([{"input_ids": r.input_ids, "labels": r.labels}
                                                          for r in rows]))
    assert [(row["input_ids"], row["labels"]) for row in trainer.train_dataset] == [
        (r.input_ids, r.labels) for r in rows]


def test_native_training_through_the_cli(tiny_base, dataset, tmp_path):
    """The smallest real run: one step of the tiny model (SmolLM2's tokenizer, whose own template renders no tools)
    with Qwen2.5's real template put on it (--chat-template), the default format; the tuned model carries the
    template, so FC mode asks it the same way with no option."""
    from transformers import AutoTokenizer

    from tasks.evaluation.bfcl_fc import LocalFcAnswers
    from toolace.cli import app

    out = tmp_path / "tuned"
    result = CliRunner().invoke(app, ["train", str(dataset), "--base", str(tiny_base), "--out", str(out), "--steps",
                                      "1", "--batch-size", "2", "--lr", "1e-3", "--chat-template", "qwen2.5"])
    assert result.exit_code == 0, result.output
    assert "native format" in result.output and "step 1/1: loss" in result.output
    assert "qwen2.5 chat template" in result.output
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["format"] == "native" and record["loss_span"] == "prefix" and record["steps"] == 1
    assert record["examples"] == 6 and record["examples_unrendered"] == {}
    assert record["chat_template"] == "qwen2.5"
    assert AutoTokenizer.from_pretrained(out).chat_template == load_template("qwen2.5")
    assert AutoTokenizer.from_pretrained(tiny_base).chat_template != load_template("qwen2.5")  # the base untouched
    assert LocalFcAnswers(str(out), max_new_tokens=8).tool_format == "hermes"


def test_a_family_template_is_put_on_a_base_only_where_its_tokens_fit(tiny_base, tmp_path, monkeypatch):
    """SmolLM2 is ChatML: Qwen2.5's template fits it; Llama 3.1's ends turns with a token SmolLM2 does not end
    with, and a template writing markers its vocabulary lacks is refused, naming them."""
    from transformers import AutoTokenizer

    from tasks.formats.chat_templates import TemplateFitError, fit_family_template
    from toolace.chat_template_files import FAMILIES, Family

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert fit_family_template(tokenizer, "qwen2.5", "smollm2") == load_template("qwen2.5")
    assert tokenizer.chat_template == load_template("qwen2.5")
    with pytest.raises(TemplateFitError, match=r"ends a turn with '<\|eot_id\|>'.*'<\|im_end\|>'"):
        fit_family_template(AutoTokenizer.from_pretrained(tiny_base), "llama3.1", "smollm2")
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "odd.jinja").write_text(load_template("qwen2.5").replace("<|im_start|>", "<|turn_start|>"))
    monkeypatch.setitem(FAMILIES, "odd", Family("odd", "odd.jinja", eos_token="<|im_end|>"))
    other = AutoTokenizer.from_pretrained(tiny_base)
    with pytest.raises(TemplateFitError, match=r"writes <\|turn_start\|>, which the model's vocabulary has no"):
        fit_family_template(other, "odd", "smollm2", configured=str(folder))
    assert other.chat_template == AutoTokenizer.from_pretrained(tiny_base).chat_template  # left as it was


def test_a_family_template_that_does_not_fit_is_refused_before_training(tiny_base, dataset, tmp_path):
    from toolace.cli import app

    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["train", str(dataset), "--base", str(tiny_base), "--out", str(out),
                                      "--steps", "1", "--chat-template", "llama3.1"])
    assert result.exit_code == 1 and "error: --chat-template llama3.1" in result.output
    assert "<|eot_id|>" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["train", str(dataset), "--base", str(tiny_base), "--out", str(out),
                                      "--steps", "1", "--chat-template", "vicuna"])
    assert result.exit_code == 1 and "unknown chat-template families vicuna" in result.output
