"""The published files as their readers take them: the parquet shards loaded by `datasets` and fed to a
tokenizer's chat template, `openai.jsonl` held to OpenAI's documented fine-tuning format
(tasks.verification.published_format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.dataset.stream import DialogStream
from tasks.formats.chat_templates import load_family
from tasks.verification.published_format import chat_convention_problems, openai_finetune_problems
from tests.test_chat_templates import multi_turn_dialog, tiny_tokenizer
from tests.test_dataset_expectations import BOUNDS, dialog
from tests.test_dataset_stream import verdict
from toolace.chat_template_files import templates_dir


def write_run(tmp_path: Path, reasoning: bool = False) -> Path:
    dialogs = [dialog("d0"), dialog("d1", "parallel"), multi_turn_dialog()]
    dialogs[2].turns[1] = dialogs[2].turns[1].model_copy(update={"reasoning_content": "The city is missing."})
    with DialogStream(str(tmp_path), BOUNDS, publish_reasoning=reasoning, template_rows=2) as stream:
        stream.write(dialogs, [verdict(d.dialog_id, True) for d in dialogs])
    assert stream.tally.chat_problems == {} and len(stream.tally.chat_sample.rows) == 2
    return tmp_path / "dataset"


def test_shards_load_with_datasets_as_the_exact_dicts_written(tmp_path: Path) -> None:
    from datasets import load_dataset

    dataset = write_run(tmp_path)
    train = load_dataset("parquet", data_files=str(dataset / "data" / "train-*.parquet"))["train"]
    assert train.num_rows == 3 and train.features["messages"].feature.__class__.__name__ == "Json"
    single, parallel, multi = train[0], train[1], train[2]
    assert single["messages"][0] == {"role": "user", "content": "What is the forecast for Lisbon?"}  # no null keys
    call = single["messages"][1]
    assert call["content"] == "" and set(call) == {"role", "content", "tool_calls"}
    assert call["tool_calls"][0]["function"]["arguments"] == {"city": "Lisbon", "days": 3}  # no other row's keys
    assert parallel["messages"][1]["tool_calls"][1]["function"]["arguments"] == {"city": "Porto", "days": 2,
                                                                                 "unit": "celsius"}
    assert single["tools"][0] == {"type": "function", "function": {
        "name": "get_forecast", "description": "The get_forecast API.", "parameters": single["tools"][0]["function"][
            "parameters"]}}
    assert "reasoning_content" not in multi["messages"][1]  # publish_reasoning is off
    for row in (single, parallel, multi):
        assert chat_convention_problems(row) == []
        ids = [c["id"] for m in row["messages"] for c in m.get("tool_calls", [])]
        answered = [m["tool_call_id"] for m in row["messages"] if m["role"] == "tool"]
        assert sorted(ids) == sorted(answered) and len(set(ids)) == len(ids)
        assert all(len(i) == 9 and i.isalnum() for i in ids)


def test_a_tokenizer_applies_its_chat_template_to_the_loaded_rows(tmp_path: Path) -> None:
    from datasets import load_dataset

    dataset = write_run(tmp_path / "run")
    train = load_dataset("parquet", data_files=str(dataset / "data" / "train-*.parquet"))["train"]
    template = load_family("qwen3", templates_dir(None, ["qwen3"]))
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer", template.text)
    for row in train:
        text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        assert '"arguments": {"city": "Lisbon"' in text and '\\"city\\"' not in text
        ids = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=True)
        assert len(ids) > 0


def test_trl_takes_the_messages_column_as_the_chat(tmp_path: Path) -> None:
    """TRL's SFTTrainer turns a ``conversations`` column of from/value pairs into ``messages`` (overwriting
    them): the shards name ToolACE's layout ``toolace_conversations``, so TRL trains on ``messages``."""
    from datasets import load_dataset
    from trl.data_utils import is_conversational, is_conversational_from_value

    dataset = write_run(tmp_path)
    row = load_dataset("parquet", data_files=str(dataset / "data" / "train-*.parquet"))["train"][0]
    assert is_conversational(row) and not is_conversational_from_value(row)
    assert "conversations" not in row and row["toolace_conversations"][0]["from"] == "user"


def test_publish_reasoning_puts_reasoning_content_on_assistant_messages(tmp_path: Path) -> None:
    from datasets import load_dataset

    dataset = write_run(tmp_path, reasoning=True)
    multi = load_dataset("parquet", data_files=str(dataset / "data" / "train-*.parquet"))["train"][2]
    assert multi["messages"][1] == {"role": "assistant", "content": "For which city, and how many days ahead?",
                                    "reasoning_content": "The city is missing."}
    assert all("reasoning_content" not in m for i, m in enumerate(multi["messages"]) if i != 1)
    text = load_family("qwen3", templates_dir(None, ["qwen3"])).text
    assert "reasoning_content" in text  # the field the templates read


def test_openai_jsonl_passes_openai_fine_tuning_format(tmp_path: Path) -> None:
    dataset = write_run(tmp_path)
    rows = [json.loads(line) for line in (dataset / "openai.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert openai_finetune_problems(row) == []
        for message in row["messages"]:
            for call in message.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], str) and len(call["id"]) == 9


GOOD: dict[str, Any] = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
                 {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "type": "function", "function": {
                     "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                 {"role": "tool", "tool_call_id": "abcdefghi", "content": "rain"},
                 {"role": "assistant", "content": "Rain.", "weight": 1}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "parallel_tool_calls": True,
}


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    row = json.loads(json.dumps(GOOD))
    target = row
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return row


@pytest.mark.parametrize(("row", "problem"), [
    (with_change(["id"], "x1"), "unknown top-level key 'id'"),
    (with_change(["messages"], []), "no messages list"),
    (with_change(["messages", 1, "role"], "human"), "role 'human'"),
    (with_change(["messages", 1, "content"], ""), "no text content"),
    (with_change(["messages", 1, "tool_calls"], []), "unknown key 'tool_calls'"),
    (with_change(["messages", 2, "tool_calls", 0, "function", "arguments"], {"city": "Oslo"}), "JSON string"),
    (with_change(["messages", 2, "tool_calls", 0, "type"], "tool"), "is not {'id'"),
    (with_change(["messages", 3, "tool_call_id"], "zzzzzzzzz"), "answers 'zzzzzzzzz'"),
    (with_change(["messages", 4, "weight"], 2), "weight is not 0 or 1"),
    (with_change(["messages"], [{"role": "user", "content": "Hi"}]), "no assistant message"),
    (with_change(["tools", 0, "function", "name"], "get weather"), "1-64 letters"),
    (with_change(["tools", 0, "type"], "code"), "tools[0] is not"),
    (with_change(["parallel_tool_calls"], "yes"), "not a boolean"),
])
def test_openai_checker_names_each_documented_rule(row: dict[str, Any], problem: str) -> None:
    assert openai_finetune_problems(GOOD) == []
    found = openai_finetune_problems(row)
    assert any(problem in p for p in found), found


def test_openai_checker_parallel_calls_need_parallel_tool_calls() -> None:
    row = json.loads(json.dumps(GOOD))
    row["messages"][2]["tool_calls"].append({"id": "jklmnopqr", "type": "function",
                                             "function": {"name": "get_weather", "arguments": "{}"}})
    row["messages"].insert(4, {"role": "tool", "tool_call_id": "jklmnopqr", "content": "sun"})
    assert openai_finetune_problems(row) == []
    row["parallel_tool_calls"] = False
    assert any("parallel_tool_calls is false" in p for p in openai_finetune_problems(row))


@pytest.mark.parametrize(("change", "problem"), [
    (lambda m: m[0].update(tool_calls=[]), "key 'tool_calls'"),
    (lambda m: m[0].update(tool_call_id=None), "key 'tool_call_id'"),
    (lambda m: m[1].update(content=None), "content is null"),
    (lambda m: m[1]["tool_calls"][0]["function"].update(arguments='{"city": "Lisbon"}'), "not an object"),
    (lambda m: m[1]["tool_calls"][0].update(id="call_0"), "not 9 alphanumeric"),
    (lambda m: m[2].pop("tool_call_id"), "answers None"),
])
def test_chat_convention_checker(change: Any, problem: str) -> None:
    from tasks.dataset.card import chat_row

    row = chat_row(dialog("d0"))
    assert chat_convention_problems(row) == []
    change(row["messages"])
    assert any(problem in p for p in chat_convention_problems(row)), chat_convention_problems(row)
