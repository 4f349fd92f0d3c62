"""`toolace verify` and `toolace convert` on data we did not make: real ToolACE rows, every format, hostile
rows, parquet, S3, and the model layer against the scripted server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from typer.testing import CliRunner

from tasks.formats.dataset_formats import read_samples
from tests.scripted_llm_server import schema_name
from toolace.cli import app

runner = CliRunner()
TOOLACE_SAMPLE = Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {
                    "city": {"type": "string", "description": "City"},
                    "days": {"type": "integer", "minimum": 1, "description": "Days"}}, "required": ["city"]}}


def openai_row(city: Any = "Oslo", **extra: Any) -> dict[str, Any]:
    return {"tools": [{"type": "function", "function": WEATHER_TOOL}], "messages": [
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": city, "days": 2})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 3}'},
        {"role": "assistant", "content": "It is 3 degrees."}], **extra}


def verdicts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_verify_the_real_toolace_rows(tmp_path: Path) -> None:
    out = tmp_path / "verdicts.jsonl"
    result = runner.invoke(app, ["verify", str(TOOLACE_SAMPLE), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = verdicts(out)
    assert [r["index"] for r in rows] == list(range(92))
    assert all(set(r) == {"index", "id", "passed", "failures"} for r in rows)
    assert "samples 92" in result.output
    failures = {f["check"] for r in rows for f in r["failures"]}
    # nothing about reading or parsing: every row and every call of the release is understood
    assert not failures & {"sample_json_v1", "sample_fields_v1", "tools_present_v1", "tools_json_v1",
                           "call_syntax_v1", "tool_name_exists_v1", "format_detect_v1"}
    # the converter-made type mismatches the sample's notes list are found (#1: postal_code 10001)
    assert any(f["check"] == "argument_values_v1" and "postal_code" in f["reason"] for f in rows[1]["failures"])
    # row 27 has an empty assistant turn in the release itself
    assert any(f["check"] == "non_empty_turns_v1" for f in rows[27]["failures"])


def test_bad_rows_become_failed_verdicts_and_the_run_completes(tmp_path: Path) -> None:
    bad_tools = {"query": "Weather in Oslo?", "tools": '[{"name": "get_weather", ', "answers": "[]", "id": 7}
    lines = [
        json.dumps(openai_row()),
        '{"tools": [{"type": "function", "function": ',  # truncated JSON
        json.dumps({"messages": openai_row()["messages"]}),  # no tools
        json.dumps(bad_tools),  # tool list that is not valid JSON
        json.dumps({"system": "Here is a list of functions in JSON format that you can invoke:\n"
                              + json.dumps([WEATHER_TOOL]),
                    "conversations": [{"from": "user", "value": "Weather?"},
                                      {"from": "assistant",
                                       "value": "[get_weather(city=" + "[" * 10_000 + "]" * 10_000 + ")]"}]}),
        json.dumps(openai_row(city="x" * 5_000_000)),  # a 5 MB string argument
        "42",
        json.dumps(openai_row(city="Bergen")),
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "verdicts.jsonl"
    result = runner.invoke(app, ["verify", str(data), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = verdicts(out)
    assert [r["index"] for r in rows] == list(range(8))
    assert [r["passed"] for r in rows] == [True, False, False, False, False, False, False, True]
    first = [r["failures"][0]["check"] for r in rows[1:7]]
    assert first == ["sample_json_v1", "tools_present_v1", "tools_json_v1", "call_syntax_v1",
                     "argument_length_v1", "sample_fields_v1"]
    assert all(r["failures"][0]["reason"] for r in rows[1:7])
    assert "nested deeper" in rows[4]["failures"][0]["reason"]
    assert "5000000 characters" in rows[5]["failures"][0]["reason"]
    assert "samples 8, passed 2, failed 6" in result.output


def test_verdicts_to_stdout_and_parquet_input(tmp_path: Path) -> None:
    frame = pl.DataFrame({"tools": [json.dumps([{"type": "function", "function": WEATHER_TOOL}])] * 2,
                          "messages": [json.dumps(openai_row()["messages"]),
                                       json.dumps(openai_row(city=5)["messages"])]})
    data = tmp_path / "rows.parquet"
    frame.write_parquet(data)
    result = runner.invoke(app, ["verify", str(data), "--format", "openai"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["passed"] for r in lines] == [True, False]
    assert lines[1]["failures"][0]["check"] == "argument_values_v1"


def test_verify_user_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "nope.jsonl" in missing.output  # a user error
    bad_format = runner.invoke(app, ["verify", str(TOOLACE_SAMPLE), "--format", "alpaca"])
    assert bad_format.exit_code == 2 and "alpaca" in bad_format.output  # a usage error: not one of the choices


def test_verify_with_the_model_layer(llm, tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [openai_row(), openai_row(city=5), openai_row("Rome")]) + "\n")
    llm.script(lambda body: {"json": {"reason": "Rome was not asked for.", "passed": False}}
               if schema_name(body) == "ConsistencyAnswer" and "Rome" in json.dumps(body["messages"]) else None)
    out = tmp_path / "verdicts.jsonl"
    result = runner.invoke(app, ["verify", str(data), "--checks", "all", "--output", str(out),
                                 "--llm-base-url", llm.base_url, "--llm-model", "scripted-model"])
    assert result.exit_code == 0, result.output
    rows = verdicts(out)
    assert [r["passed"] for r in rows] == [True, False, False]
    assert [f["check"] for f in rows[1]["failures"]] == ["argument_values_v1"]  # rules failed: not judged
    assert [f["check"] for f in rows[2]["failures"]] == ["llm_consistency_v1"]
    judged = [r for r in llm.requests if schema_name(r)]
    assert judged and all("city\": 5" not in json.dumps(r["messages"]) for r in judged)


def test_convert_round_trip_keeps_the_calls(tmp_path: Path) -> None:
    as_openai, back = tmp_path / "openai.jsonl", tmp_path / "toolace.jsonl"
    first = runner.invoke(app, ["convert", str(TOOLACE_SAMPLE), "--to", "openai", "--output", str(as_openai)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["convert", str(as_openai), "--to", "toolace", "--output", str(back)])
    assert second.exit_code == 0, second.output
    def calls(url: Path) -> list[list[list[tuple[str, dict[str, Any]]]]]:
        return [[[(c.name, c.arguments) for c in t.tool_calls] for t in sample.turns if t.tool_calls]
                for sample in read_samples(str(url))]

    original, returned = calls(TOOLACE_SAMPLE), calls(back)
    assert len(returned) == 92 and sum(len(turns) for turns in original) == 166
    assert returned == original
    source = [json.loads(line)["conversations"] for line in TOOLACE_SAMPLE.read_text().splitlines()]
    written = [json.loads(line)["conversations"] for line in back.read_text().splitlines()]
    assert written == source  # even the call text is written back the same
    bad = runner.invoke(app, ["convert", str(TOOLACE_SAMPLE), "--to", "alpaca", "--output", str(back)])
    assert bad.exit_code == 2


def test_verify_and_convert_on_s3(s3_server: str, tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("verify-bucket")
    fs.put(str(TOOLACE_SAMPLE), "verify-bucket/in/toolace.jsonl")
    result = runner.invoke(app, ["verify", "s3://verify-bucket/in/toolace.jsonl",
                                 "--output", "s3://verify-bucket/out/verdicts.jsonl"])
    assert result.exit_code == 0, result.output
    assert len(fs.cat("verify-bucket/out/verdicts.jsonl").decode().splitlines()) == 92
    result = runner.invoke(app, ["convert", "s3://verify-bucket/in/toolace.jsonl", "--to", "sharegpt",
                                 "--output", "s3://verify-bucket/out/sharegpt.jsonl"])
    assert result.exit_code == 0, result.output
    assert len(fs.cat("verify-bucket/out/sharegpt.jsonl").decode().splitlines()) == 92
