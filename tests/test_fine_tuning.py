"""`toolace train`: examples from published datasets, bad input, and real (tiny) TRL runs.

The training runs use a randomly initialised 2-layer Llama with SmolLM2's tokenizer (and chat template): a
few seconds each, so the tests check the plumbing (masking, saving, LoRA merging, atomic output), not
what the model learns."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.records import APISpec, Dialog, ToolCall, Turn
from tasks.formats.call_format import TOOLACE_SYSTEM_PROMPT, render_calls
from tasks.formats.dataset_formats import convert, read_samples
from tasks.training.fine_tuning import (
    RECORD_NAME,
    TrainConfig,
    TrainingError,
    build_examples,
    load_base_tokenizer,
    read_examples,
    sample_chat_messages,
    train,
)
from toolace.errors import UserError

REFERENCE = Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"


@pytest.fixture(scope="module")
def toolace_file(tmp_path_factory) -> Path:
    """Four real ToolACE rows (the shared reference file's first), or the short made-up ones without it."""
    path = tmp_path_factory.mktemp("data") / "toolace.jsonl"
    if REFERENCE.is_file():
        path.write_text("".join(REFERENCE.read_text().splitlines(keepends=True)[:4]))
    else:
        path.write_text(_short_rows())
    return path


def _short_rows() -> str:
    """Four short ToolACE rows (a call, its result, an answer, then two parallel calls): a few hundred tokens
    each, so a training step on them takes well under a second."""
    tools = [{"name": "get_forecast", "description": "Forecast for a city.", "required": None,
              "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    rows = []
    for city, other in [("Lisbon", "Porto"), ("Oslo", "Bergen"), ("Lima", "Cusco"), ("Rome", "Milan")]:
        rows.append({"system": TOOLACE_SYSTEM_PROMPT + json.dumps(tools), "conversations": [
            {"from": "user", "value": f"Weather in {city}?"},
            {"from": "assistant", "value": f'[get_forecast(city="{city}")]'},
            {"from": "tool", "value": '[{"name": "get_forecast", "results": {"temp_c": 21}}]'},
            {"from": "assistant", "value": f"It is 21 degrees in {city}."},
            {"from": "user", "value": f"And in {city} and {other}?"},
            {"from": "assistant", "value": f'[get_forecast(city="{city}"), get_forecast(city="{other}")]'}]})
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def openai_file(toolace_file, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "openai.jsonl"
    convert(str(toolace_file), "toolace", str(path), "openai")
    return path


@pytest.fixture(scope="module")
def short_toolace_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "short-toolace.jsonl"
    path.write_text(_short_rows())
    return path


@pytest.fixture(scope="module")
def short_openai_file(short_toolace_file, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "short-openai.jsonl"
    convert(str(short_toolace_file), "toolace", str(path), "openai")
    return path


# ------------------------------------------------------------------------------------------- examples


def test_examples_one_per_assistant_turn_with_everything_before_as_prompt(toolace_file):
    samples = list(read_samples(str(toolace_file)))
    result = build_examples(samples)
    assistant_turns = [(s, i) for s in samples for i, t in enumerate(s.turns) if t.role == "assistant"]
    assert len(result.examples) == len(assistant_turns) == result.call_turns + result.text_turns
    assert result.call_turns > 0 and result.samples_read == result.samples_used == 4
    for example, (sample, i) in zip(result.examples, assistant_turns, strict=True):
        turn = sample.turns[i]
        system = example.prompt[0]
        assert system["role"] == "system" and system["content"].startswith(TOOLACE_SYSTEM_PROMPT)
        assert all(t.name in system["content"] for t in sample.tools)
        assert [m["role"] for m in example.prompt[1:]] == [t.role for t in sample.turns[:i]]
        # the completion is the assistant's own message and nothing else: the loss sees only its tokens
        assert example.completion == [{"role": "assistant",
                                       "content": render_calls(turn.tool_calls) if turn.tool_calls else turn.content}]
        assert example.makes_calls == bool(turn.tool_calls)
    first_call = next(e for e in result.examples if e.makes_calls)
    assert first_call.completion[0]["content"].startswith("[") and first_call.completion[0]["content"].endswith(")]")


def test_openai_and_toolace_inputs_give_the_same_examples(toolace_file, openai_file):
    a, b = read_examples(str(toolace_file)), read_examples(str(openai_file))
    assert [(e.prompt, e.completion) for e in a.examples] == [(e.prompt, e.completion) for e in b.examples]
    tool_messages = [m for e in b.examples for m in e.prompt if m["role"] == "tool"]
    assert tool_messages and all(json.loads(m["content"])[0].keys() == {"name", "results"} for m in tool_messages)


def test_our_dialog_chat_is_the_same_as_its_published_sample(tmp_path):
    """A published dialog trains on exactly the chat the complexity loss scores."""
    from tasks.dataset.rows import openai_row
    from tasks.dialogs.complexity import chat_messages

    api = APISpec(api_id="a", name="get_forecast", description="Forecast for a city.", domain="Weather",
                  parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                  result_schema={"type": "object"}, node_ids=["n"], operators=[])
    dialog = Dialog(dialog_id="d1", dialog_type="single", domain="Weather", tools=[api], turns=[
        Turn(role="user", content="Weather in Lisbon?"),
        Turn(role="assistant", tool_calls=[ToolCall(id="c1", name="get_forecast", arguments={"city": "Lisbon"})]),
        Turn(role="tool", tool_call_id="c1", name="get_forecast", content='{"temp_c": 21.5}'),
        Turn(role="assistant", content="21.5 degrees.")])
    path = tmp_path / "openai.jsonl"
    path.write_text(json.dumps(openai_row(dialog)) + "\n")
    (sample,) = read_samples(str(path))
    assert sample_chat_messages(sample) == chat_messages(dialog)


def test_calls_only_keeps_call_turns_and_counts_all(toolace_file):
    everything = read_examples(str(toolace_file))
    calls = read_examples(str(toolace_file), calls_only=True)
    assert len(calls.examples) == everything.call_turns == calls.call_turns
    assert all(e.makes_calls for e in calls.examples)


def test_samples_with_problems_are_skipped_and_counted(toolace_file, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(toolace_file.read_text() + '{"system": "no tools here", "conversations": []}\n{not json\n')
    result = read_examples(str(path))
    assert result.samples_read == 6 and result.samples_used == 4
    assert dict(result.skipped) == {"tools_present_v1": 1, "sample_json_v1": 1}


def test_dataset_without_tool_calls_is_a_clear_error(tmp_path):
    path = tmp_path / "chat-only.jsonl"
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    row = {"tools": tools, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(TrainingError, match=rf"dataset {path} has no tool call"):
        read_examples(str(path))


def test_missing_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.jsonl"):
        read_examples(str(tmp_path / "missing.jsonl"))


# ------------------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(("options", "message"), [
    ({"steps": 10, "epochs": 1.0}, "not both"),
    ({"lr": 0.0}, "--lr"), ({"lr": -1e-5}, "--lr"), ({"lr": float("nan")}, "--lr"), ({"lr": 3.0}, "--lr"),
    ({"steps": 0}, "--steps"), ({"epochs": -1.0}, "--epochs"), ({"lora_r": 0}, "--lora-r"),
    ({"batch_size": 0}, "--batch-size"),
])
def test_bad_options_fail_before_anything_is_read(options, message, tmp_path):
    config = TrainConfig(dataset=str(tmp_path / "never-read.jsonl"), out=str(tmp_path / "out"), **options)
    with pytest.raises(TrainingError, match=message):
        train(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("base", ["/nonexistent/toolace-base", "./missing-base.gguf", "no-org/no-such-model-xyz"])
def test_missing_base_model_is_a_quick_clear_error(base, toolace_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id: no download attempt, whatever the network
    started = time.monotonic()
    with pytest.raises(TrainingError, match=rf"base model.*{base}"):
        train(TrainConfig(dataset=str(toolace_file), out=str(tmp_path / "out"), base=base))
    assert time.monotonic() - started < 30
    assert not any(tmp_path.iterdir())


def test_base_without_chat_template_is_refused(tiny_base, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_base, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TrainingError, match="has no chat template"):
        load_base_tokenizer(str(plain))


def test_out_folder_with_other_files_is_refused(toolace_file, tiny_base, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="something other than a model trained by toolace train"):
        train(TrainConfig(dataset=str(toolace_file), out=str(out), base=str(tiny_base), steps=1))
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------- training


def test_completion_only_labels_cover_the_assistant_message_only(tiny_base, toolace_file, tmp_path):
    """TRL's tokenized training rows: the tokens with a label are exactly the completion's (the assistant's
    text and its end-of-turn marker), never the system prompt, the user or a tool result."""
    from datasets import Dataset
    from trl import SFTTrainer

    from tasks.training.fine_tuning import _sft_config, load_base_model

    tokenizer, source = load_base_tokenizer(str(tiny_base))
    examples = read_examples(str(toolace_file)).examples[:6]
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
    trainer = SFTTrainer(model=load_base_model(str(tiny_base), source), processing_class=tokenizer,
                         args=_sft_config(TrainConfig(dataset="", out="", steps=1), tmp_path / "t", cuda=False),
                         train_dataset=dataset)
    for example, row in zip(examples, trainer.train_dataset, strict=True):
        learned = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert tokenizer.decode(learned) == example.completion[0]["content"] + "<|im_end|>\n"
        assert tokenizer.decode(row["input_ids"]) == tokenizer.apply_chat_template(
            example.prompt + example.completion, tokenize=False)


def _assert_saved_model(out: Path, method: str, steps: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((out / RECORD_NAME).read_text())
    assert record["method"] == method and record["steps"] == steps and len(record["step_losses"]) == steps
    assert math.isfinite(record["final_train_loss"]) and record["final_train_loss"] > 0
    assert record["samples_read"] == 4 and record["examples"] > 0 and record["wall_time_s"] > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and "quantization_config" not in json.loads(
        (out / "config.json").read_text())
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert not (out / "adapter_config.json").exists() and not (out / "trainer").exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    return record


def test_full_fine_tuning_through_the_cli_saves_a_model_run_accepts(tiny_base, short_openai_file, tmp_path):
    from tasks.dialogs.complexity import LossScorer, encode_dialogs
    from toolace.cli import app

    out = tmp_path / "[" / "run]" / "tuned"  # a path that reads as console markup ("[/run]") is printed as is
    result = CliRunner().invoke(app, ["train", str(short_openai_file), "--base", str(tiny_base), "--out", str(out),
                                      "--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--format", "toolace"])
    assert result.exit_code == 0, result.output
    assert "step 3/3: loss" in result.output and result.stdout.strip().endswith(str(out))
    record = _assert_saved_model(out, "full", 3)
    assert record["lr"] == 1e-3 and record["batch_size"] == 2 and record["base"] == str(tiny_base)
    assert record["examples"] == record["call_turns"] + record["text_turns"]
    scorer = LossScorer(str(out))  # what `toolace run --target-model DIR` loads
    sample = next(read_samples(str(short_openai_file)))
    (loss,) = scorer.score_encoded(encode_dialogs(scorer.tokenizer, [sample_chat_messages(sample)]))
    assert loss is not None and math.isfinite(loss)


def test_lora_is_merged_and_a_failure_leaves_the_previous_model(tiny_base, short_toolace_file, tmp_path,
                                                                monkeypatch):
    from trl import SFTTrainer

    out = tmp_path / "tuned"
    config = TrainConfig(dataset=str(short_toolace_file), out=str(out), base=str(tiny_base), steps=2, lora_r=4,
                         calls_only=True)
    record = train(config, log=lambda line: None)
    assert _assert_saved_model(out, "lora", 2) == json.loads((out / RECORD_NAME).read_text())
    assert record.lora_r == 4 and record.lr == 2e-4 and record.examples == record.call_turns
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    calls = []

    def fail_on_second_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash mid-training")
        return original(self, *args, **kwargs)

    original = SFTTrainer.training_step
    monkeypatch.setattr(SFTTrainer, "training_step", fail_on_second_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(dataset=str(short_toolace_file), out=str(out), base=str(tiny_base), steps=3),
              log=lambda line: None)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned"]  # no partial folder left behind

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated crash"):
        calls.clear()
        train(TrainConfig(dataset=str(short_toolace_file), out=str(fresh), base=str(tiny_base), steps=3),
              log=lambda line: None)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tuned"]


def test_cli_bad_input_exits_1_with_one_line(tmp_path):
    from toolace.cli import app

    result = CliRunner().invoke(app, ["train", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"),
                                      "--steps", "5", "--epochs", "1"])
    assert result.exit_code == 1
    assert "error: give --steps or --epochs, not both" in result.output


@pytest.mark.parametrize(("name", "samples", "examples", "call_turns"), [
    ("comparison-b.toolace.jsonl", 10, 19, 8),  # a `make run` dataset, docs/benchmarks.md (fourteenth session)
    ("comparison-c.toolace.jsonl", 100, 238, 99),  # the scripted-server run (thirteenth session)
])
def test_the_comparisons_kept_datasets_give_the_examples_their_models_were_trained_on(
        name: str, samples: int, examples: int, call_turns: int) -> None:
    """The datasets the comparison's models are trained from are files in the repository; they must keep reading
    as the examples the recorded training saw, in both formats, as the readers change."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / name
    for fmt in ("toolace", "native"):
        result = read_examples(str(path), fmt=fmt)
        assert (result.samples_read, result.samples_used, len(result.examples)) == (samples, samples, examples)
        assert not result.skipped and result.call_turns == call_turns
