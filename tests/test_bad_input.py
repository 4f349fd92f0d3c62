"""Every bad input the issues list, in one place, each with the exact error or recorded rejection.

Corpus rows and files become rejected documents (the run goes on); dataset rows become failed verdicts (the
run goes on); configs, storage, endpoints and target models that cannot work are a UserError before any
work starts, naming the file, row, field or location."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from schemas.records import APISpec
from tasks.corpus.reading import iter_documents
from tasks.dialogs.complexity import check_chat_template, resolve_target
from tasks.formats.dataset_formats import read_samples
from tasks.storage.run_storage import check_storage
from tasks.verification.rules import score_sample
from toolace.config import load_config
from toolace.errors import UserError
from toolace.llm.endpoint import check_endpoint

# ----------------------------------------------------------------------------------------------- corpus


def rejected(corpus: Path, **kwargs: Any) -> dict[str, tuple[str | None, str | None]]:
    batches = list(iter_documents(str(corpus), batch_size=10, **kwargs))
    return {Path(r.source.split("#")[0]).name + ("#" + r.source.split("#")[1] if "#" in r.source else ""):
            (r.rejected_by, r.reason) for b in batches for r in b.rejected}


def test_corpus_rows_and_files_are_rejected_with_file_row_and_reason(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ok.md").write_text("# SkyCast API\nGET /weather returns the forecast.")
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02\xff" * 100)
    (corpus / "empty.md").write_text("   \n")
    (corpus / "huge.txt").write_text("x" * 2_000)
    (corpus / "rows.jsonl").write_text('{"text": "The PayStream API creates payments."}\n{broken\n{"body": 1}\n')
    pl.DataFrame({"body": ["no text column here"]}).write_parquet(corpus / "table.parquet")
    found = rejected(corpus, max_doc_bytes=1_000)
    assert found["binary.txt"][0] == "corpus_read_v1"
    assert found["empty.md"][0] == "corpus_empty_v1"
    assert found["huge.txt"] == ("corpus_size_v1", f"{corpus / 'huge.txt'} is 2,000 bytes, over the max_doc_bytes "
                                                   "limit of 1,000; not read")
    assert found["rows.jsonl#L2"][0] == "corpus_row_v1"
    assert found["rows.jsonl#L3"][0] == "corpus_row_v1" and "text" in str(found["rows.jsonl#L3"][1])
    assert found["table.parquet"][0] == "corpus_row_v1" and "text" in str(found["table.parquet"][1])


def test_missing_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope"):
        next(iter_documents(str(tmp_path / "nope"), batch_size=1))


# ------------------------------------------------------------------------------------ datasets (verify)

WEATHER = {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": "City"}}, "required": ["city"]}}


def openai_row(city: Any = "Oslo") -> dict[str, Any]:
    return {"tools": [{"type": "function", "function": WEATHER}], "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{}"}, {"role": "assistant", "content": "Done."}]}


@pytest.mark.parametrize(("line", "check", "reason"), [
    ('{"tools": [{"type": "function", "function": ', "sample_json_v1", ""),
    (json.dumps({"messages": openai_row()["messages"]}), "tools_present_v1", ""),
    (json.dumps({"query": "q", "tools": '[{"name": "f", ', "answers": "[]"}), "tools_json_v1", ""),
    (json.dumps({"system": "Here is a list of functions in JSON format that you can invoke:\n" + json.dumps([WEATHER]),
                 "conversations": [{"from": "user", "value": "?"}, {"from": "assistant", "value":
                                   "[get_weather(city=" + "[" * 10_000 + "]" * 10_000 + ")]"}]}),
     "call_syntax_v1", "nested deeper than 50"),
    (json.dumps(openai_row(city="x" * 5_000_000)), "argument_length_v1", "5000000 characters"),
    ("42", "sample_fields_v1", "not a JSON object"),
    (json.dumps({"hello": "world"}), "format_detect_v1", "no known format"),
])
def test_bad_dataset_rows_become_failed_verdicts(tmp_path: Path, line: str, check: str, reason: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(line + "\n" + json.dumps(openai_row()) + "\n")
    samples = list(read_samples(str(data)))
    assert len(samples) == 2
    failures = score_sample(samples[0])
    assert failures[0].check == check, failures
    assert reason in failures[0].reason
    assert score_sample(samples[1]) == []  # the next row is still read and passes


def test_unreadable_dataset_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.jsonl"):
        next(read_samples(str(tmp_path / "missing.jsonl")))


# --------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(("text", "message"), [
    ("dialogs: -3\n", "dialogs"),
    ("apis: many\n", "apis"),
    ("no_such_option: 1\n", "no_such_option"),
    ("dialog_mix: [1, 2]\n", "dialog_mix"),
    ("openai_api_key: sk-123\n", "holds a secret"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("dialogs: [unclosed\n", "is not valid yaml: while parsing a flow sequence"),
])
def test_bad_config_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_config(path)
    assert "run.yaml" in str(info.value) or message == "holds a secret"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- storage, endpoint, models


def test_storage_that_cannot_be_written(tmp_path: Path, s3_server: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        check_storage(str(tmp_path / "file" / "out"))
    with pytest.raises(UserError, match="bucket does not exist"):
        check_storage("s3://bad-input-missing-bucket/out")


def test_endpoint_that_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot reach the LLM endpoint at http://127.0.0.1:{port}/v1"):
        check_endpoint(f"http://127.0.0.1:{port}/v1", "m")


def test_target_models_that_cannot_be_used(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="target model folder .* does not exist"):
        resolve_target(str(tmp_path / "no-model"))
    with pytest.raises(UserError, match="target model file .* does not exist"):
        resolve_target(str(tmp_path / "model.gguf"))

    class BaseTokenizer:
        chat_template = None

    with pytest.raises(UserError, match="has no chat template"):
        check_chat_template(BaseTokenizer(), "base-model")


def test_api_with_an_invalid_result_schema_is_a_recorded_rejection() -> None:
    from tasks.apis.schema_validity import schema_problem

    api = APISpec(api_id="a", name="f", description="An API.", parameters={"type": "object", "properties": {}},
                  result_schema={"type": "object", "properties": {"t": {"type": "celsius"}}}, domain="d",
                  node_ids=[], operators=[])
    assert "properties/t/type" in str(schema_problem(api.result_schema))
