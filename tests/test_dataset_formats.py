"""Tests for tasks.formats.dataset_formats: reading and writing ToolACE, OpenAI, ShareGPT, xLAM and BFCL datasets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.records import APISpec, Dialog, ToolCall, Turn
from schemas.samples import Sample
from tasks.dataset.rows import toolace_row
from tasks.formats.call_format import TOOLACE_SYSTEM_PROMPT
from tasks.formats.dataset_formats import (
    convert,
    detect_format,
    read_samples,
    row_from_sample,
    sample_from_row,
    write_samples,
)
from toolace.errors import UserError

TOOLACE_SAMPLE = Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"  # see data/README.md

WEATHER_TOOL = {"name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "dict", "properties": {"city": {"type": "string"},
                                                              "days": {"type": "int"}},
                               "required": ["city"]}}


def checks(sample: Sample) -> list[str]:
    return [p.check for p in sample.problems]


def call_lists(sample: Sample) -> list[list[tuple[str, dict[str, Any]]]]:
    return [[(c.name, c.arguments) for c in t.tool_calls] for t in sample.turns if t.tool_calls]


def through_json(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row))


@pytest.fixture(scope="module")
def toolace_samples() -> list[Sample]:
    return list(read_samples(str(TOOLACE_SAMPLE)))


def toolace_text_row(assistant: str, **extra: Any) -> dict[str, Any]:
    return {"system": TOOLACE_SYSTEM_PROMPT + json.dumps([WEATHER_TOOL]),
            "conversations": [{"from": "user", "value": "Weather in Paris?"},
                              {"from": "assistant", "value": assistant}],
            **extra}


# ------------------------------------------------------------------------------------- the 92 ToolACE rows


def test_toolace_sample_reads_without_problems(toolace_samples: list[Sample]) -> None:
    assert len(toolace_samples) == 92
    assert [s.index for s in toolace_samples] == list(range(92))
    assert all(s.format == "toolace" for s in toolace_samples)
    assert [s.problems for s in toolace_samples if s.problems] == []
    call_turns = [t for s in toolace_samples for t in s.turns if t.tool_calls]
    assert len(call_turns) == 166
    assert sum(len(t.tool_calls) for t in call_turns) == 181
    assert sum(1 for t in call_turns if len(t.tool_calls) >= 2) == 12
    assert sum(len(s.tools) for s in toolace_samples) == 411
    assert all(t.call_text and t.call_error is None for t in call_turns)  # raw text kept for later checks
    # every assistant turn that looks like a call list was parsed as one
    for sample in toolace_samples:
        for turn in sample.turns:
            if turn.role == "assistant" and not turn.tool_calls:
                assert not (turn.content or "").strip().startswith("[")


def test_toolace_sample_call_names_and_tool_turns(toolace_samples: list[Sample]) -> None:
    tool_turns = 0
    for sample in toolace_samples:
        offered = {t.name for t in sample.tools}
        calls = {c.id: c for t in sample.turns for c in t.tool_calls}
        for turn_index, turn in enumerate(sample.turns):
            for n, call in enumerate(turn.tool_calls):
                assert call.id == f"call_{turn_index}_{n}"
                assert call.name in offered
            if turn.role == "tool":
                tool_turns += 1
                assert turn.tool_call_id in calls
                assert calls[turn.tool_call_id].name == turn.name  # matched by name
    assert tool_turns > 132  # 132 tool conversation entries, several holding parallel results
    names = {c.name for s in toolace_samples for t in s.turns for c in t.tool_calls}
    assert sum(" " in n for n in names) > 50  # names with spaces resolved against the tool list
    assert "/email/valistring" in names


def test_toolace_rows_written_back_identically(toolace_samples: list[Sample]) -> None:
    rows = [json.loads(line) for line in TOOLACE_SAMPLE.read_text(encoding="utf-8").splitlines()]
    for sample, row in zip(toolace_samples, rows, strict=True):
        out = row_from_sample(sample, "toolace")
        assert out["system"] == row["system"]
        assert out["conversations"] == row["conversations"]
        assert out["id"] == str(sample.index)


@pytest.mark.parametrize("fmt", ["openai", "sharegpt"])
def test_round_trip_keeps_every_turn(toolace_samples: list[Sample], fmt: str) -> None:
    for sample in toolace_samples:
        middle = sample_from_row(through_json(row_from_sample(sample, fmt)), "auto", sample.index)  # type: ignore[arg-type]
        assert middle.format == fmt and middle.problems == []
        back = sample_from_row(through_json(row_from_sample(middle, "toolace")), "auto", sample.index)
        assert back.format == "toolace" and back.problems == []
        assert call_lists(back) == call_lists(sample)
        assert [(t.role, t.content, t.name, t.tool_call_id) for t in back.turns] == \
            [(t.role, t.content, t.name, t.tool_call_id) for t in sample.turns]
        assert [t.model_dump() for t in back.tools] == [t.model_dump() for t in sample.tools]
        # the ToolACE system prompt carries the tool list: not copied as a system message
        assert middle.system is None


def test_openai_row_of_toolace_sample(toolace_samples: list[Sample]) -> None:
    row = row_from_sample(toolace_samples[0], "openai")
    assert row["messages"][0]["role"] == "user"
    params = row["tools"][0]["function"]["parameters"]
    assert params["type"] == "object"
    float_params = [p for t in row["tools"] for p in t["function"]["parameters"].get("properties", {}).values()
                    if p.get("type") in ("float", "number")]
    assert all(p["type"] == "number" for p in float_params)
    call_message = next(m for m in row["messages"] if m.get("tool_calls"))
    assert isinstance(call_message["tool_calls"][0]["function"]["arguments"], str)
    assert json.loads(call_message["tool_calls"][0]["function"]["arguments"]) == \
        next(t for t in toolace_samples[0].turns if t.tool_calls).tool_calls[0].arguments


@pytest.mark.parametrize("fmt", ["bfcl", "xlam"])
def test_round_trip_of_first_call_turn(toolace_samples: list[Sample], fmt: str) -> None:
    """BFCL and xLAM hold one call turn: the first one comes back (names and arguments)."""
    for sample in toolace_samples:
        middle = sample_from_row(through_json(row_from_sample(sample, fmt)), "auto", sample.index)  # type: ignore[arg-type]
        assert middle.format == fmt and middle.problems == []
        back = sample_from_row(through_json(row_from_sample(middle, "toolace")), "toolace", sample.index)
        assert back.problems == []
        assert call_lists(back) == call_lists(sample)[:1]
        assert [t.name for t in back.tools] == [t.name for t in sample.tools]


# ----------------------------------------------------------------------------------------------- detection

OPENAI_ROW = {
    "id": "o1",
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                 "parameters": {"type": "object", "properties": {}}}},
              {"name": "bare_tool", "description": "bare", "parameters": {"type": "object"}}],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "def", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "def", "content": "sunny"},
        {"role": "tool", "tool_call_id": "abc", "content": "rain"},
        {"role": "assistant", "content": "Rain in Paris, sun in Rome."},
    ],
}
SHAREGPT_ROW = {
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 18}'},
        {"from": "gpt", "value": "18 degrees."},
    ],
    "tools": json.dumps([WEATHER_TOOL]),
    "system": "Be brief.",
}
XLAM_ROW = {
    "id": 7,
    "query": "Weather in Paris for 3 days?",
    "tools": json.dumps([{"name": "get_weather", "description": "Weather",
                          "parameters": {"city": {"type": "str", "description": "City"},
                                         "days": {"type": "int, optional", "description": "Days"},
                                         "units": {"type": "str", "description": "Units", "default": "C"},
                                         "ids": {"type": "List[int]", "description": "Ids"}}}]),
    "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]),
}
BFCL_ROW = {
    "id": "simple_0",
    "question": [[{"role": "user", "content": "Find the area of a triangle with base 10 and height 5."}]],
    "function": [{"name": "calculate_triangle_area", "description": "Area",
                  "parameters": {"type": "dict", "properties": {"base": {"type": "integer"},
                                                                "height": {"type": "integer"},
                                                                "unit": {"type": "string"}},
                                 "required": ["base", "height"]}}],
    "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""],
                                                  "scale": [""]}}],
}


@pytest.mark.parametrize(("row", "fmt"), [
    (toolace_text_row("Hi"), "toolace"), (OPENAI_ROW, "openai"), (SHAREGPT_ROW, "sharegpt"),
    (XLAM_ROW, "xlam"), (BFCL_ROW, "bfcl"),
    ({"question": "plain?", "function": [], "result": "[f(a=1)]"}, "bfcl"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "sharegpt"),
])
def test_detect_format(row: dict[str, Any], fmt: str) -> None:
    assert detect_format(row) == fmt
    assert sample_from_row(row, "auto", 0).format == fmt


def test_detect_nothing() -> None:
    assert detect_format({"text": "hello"}) is None
    assert detect_format([1, 2]) is None  # type: ignore[arg-type]
    sample = sample_from_row({"text": "hello"}, "auto", 3)
    assert checks(sample) == ["format_detect_v1"]
    assert sample.index == 3 and sample.id == "3"


# ------------------------------------------------------------------------------------------ format readers


def test_openai_reader_maps_ids_and_system() -> None:
    sample = sample_from_row(OPENAI_ROW, "auto", 0)
    assert sample.problems == [] and sample.id == "o1"
    assert sample.system == "Be brief."
    assert [t.name for t in sample.tools] == ["get_weather", "bare_tool"]
    calls = sample.turns[1].tool_calls
    assert [c.id for c in calls] == ["call_1_0", "call_1_1"]
    # tool messages answered out of order: matched by their original ids
    assert [(t.tool_call_id, t.name, t.content) for t in sample.turns[2:4]] == [
        ("call_1_1", "get_weather", "sunny"), ("call_1_0", "get_weather", "rain")]
    row = row_from_sample(sample, "openai")
    assert row["messages"][0] == {"role": "system", "content": "Be brief."}
    toolace = row_from_sample(sample, "toolace")
    assert toolace["system"].startswith("Be brief.\n\n" + TOOLACE_SYSTEM_PROMPT)
    again = sample_from_row(row_from_sample(sample_from_row(toolace, "auto", 0), "openai"), "auto", 0)
    assert again.system == "Be brief."  # a plain system prompt survives a trip through ToolACE


def test_openai_bad_arguments_are_call_syntax_problems() -> None:
    row = json.loads(json.dumps(OPENAI_ROW))
    row["messages"][2]["tool_calls"][1]["function"]["arguments"] = '{"city": "Rome"'
    sample = sample_from_row(row, "openai", 0)
    assert checks(sample) == ["call_syntax_v1"]
    turn = sample.turns[1]
    assert turn.tool_calls == [] and turn.call_error and "not valid JSON" in turn.call_error
    assert '{\\"city\\": \\"Rome\\"' in (turn.call_text or "")
    # the replies are still read, unmatched
    assert [t.role for t in sample.turns[2:4]] == ["tool", "tool"]


def test_sharegpt_reader() -> None:
    sample = sample_from_row(SHAREGPT_ROW, "auto", 0)
    assert sample.problems == [] and sample.system == "Be brief."
    assert [t.role for t in sample.turns] == ["user", "assistant", "tool", "assistant"]
    assert call_lists(sample) == [[("get_weather", {"city": "Paris"})]]
    assert sample.turns[2].tool_call_id == "call_1_0" and sample.turns[2].name == "get_weather"


def test_sharegpt_parallel_observation_is_split() -> None:
    row = {"conversations": [
        {"from": "human", "value": "Paris and Rome?"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                       {"name": "get_weather", "arguments": {"city": "Rome"}}])},
        {"from": "observation", "value": json.dumps([{"temp": 18}, "sunny"])}],
        "tools": json.dumps([WEATHER_TOOL])}
    sample = sample_from_row(row, "sharegpt", 0)
    assert sample.problems == []
    assert [(t.tool_call_id, t.content) for t in sample.turns[2:]] == [("call_1_0", '{"temp": 18}'),
                                                                      ("call_1_1", "sunny")]
    assert row_from_sample(sample, "sharegpt")["conversations"] == row["conversations"]


def test_xlam_optional_parameters() -> None:
    sample = sample_from_row(XLAM_ROW, "auto", 0)
    assert sample.problems == [] and sample.id == "7"
    params = sample.tools[0].parameters
    assert params["type"] == "dict"
    assert params["required"] == ["city", "ids"]  # "int, optional" and a default are not required
    assert params["properties"]["days"]["type"] == "int"
    assert params["properties"]["ids"]["type"] == "List[int]"  # type strings kept as given
    assert call_lists(sample) == [[("get_weather", {"city": "Paris", "days": 3})]]
    row = row_from_sample(sample, "xlam")
    assert row["id"] == 7
    assert json.loads(row["tools"]) == json.loads(XLAM_ROW["tools"])  # written back flat
    assert json.loads(row["answers"]) == json.loads(XLAM_ROW["answers"])


def test_bfcl_ground_truth_and_result() -> None:
    sample = sample_from_row(BFCL_ROW, "auto", 0)
    assert sample.problems == [] and sample.id == "simple_0"
    # the first possible value that is not "" ; a parameter that may only be omitted is left out
    assert call_lists(sample) == [[("calculate_triangle_area", {"base": 10, "height": 5, "unit": "units"})]]
    row = {**BFCL_ROW, "result": "[calculate_triangle_area(base=10, height=5)]"}
    with_result = sample_from_row(row, "bfcl", 0)
    assert with_result.problems == []
    assert call_lists(with_result) == [[("calculate_triangle_area", {"base": 10, "height": 5})]]
    assert with_result.turns[-1].call_text == row["result"]
    assert with_result.meta["ground_truth"] == BFCL_ROW["ground_truth"]
    written = row_from_sample(sample, "bfcl")
    assert written["ground_truth"] == [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units"]}}]
    assert written["question"] == BFCL_ROW["question"]


def test_bfcl_text_answer_is_not_a_problem() -> None:
    row = {**BFCL_ROW, "result": "None of the functions can be used."}
    sample = sample_from_row(row, "bfcl", 0)
    assert sample.problems == []
    assert sample.turns[-1].content == "None of the functions can be used." and not sample.turns[-1].tool_calls


def test_toolace_text_in_brackets_is_not_a_call() -> None:
    sample = sample_from_row(toolace_text_row("[Note] It is sunny today."), "auto", 0)
    assert sample.problems == []
    assert sample.turns[-1].content == "[Note] It is sunny today."


def test_toolace_types_written_and_openai_types() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"},
                                               "o": {"type": "object", "properties": {"type": {"type": "string"}}},
                                               "a": {"type": "array", "items": {"type": "integer"}}},
              "required": ["n"]}
    row = {"tools": [{"type": "function", "function": {"name": "f", "description": "", "parameters": schema}}],
           "messages": [{"role": "user", "content": "hi"}]}
    sample = sample_from_row(row, "openai", 0)
    toolace = row_from_sample(sample, "toolace")
    tools = json.loads(toolace["system"][len(TOOLACE_SYSTEM_PROMPT):])
    assert tools[0]["required"] is None
    params = tools[0]["parameters"]
    assert params["type"] == "dict"
    assert params["properties"]["n"]["type"] == "int"
    assert params["properties"]["x"]["type"] == "float"
    assert params["properties"]["o"] == {"type": "dict", "properties": {"type": {"type": "string"}}}
    assert params["properties"]["a"]["items"]["type"] == "int"
    back = row_from_sample(sample_from_row(toolace, "auto", 0), "openai")
    assert back["tools"][0]["function"]["parameters"] == schema
    bfcl_dialect = {"type": "dict", "properties": {"t": {"type": "tuple"}, "v": {"type": "any"},
                                                   "s": {"type": "str"}, "b": {"type": "bool"}}}
    sample.tools[0].parameters = bfcl_dialect
    converted = row_from_sample(sample, "openai")["tools"][0]["function"]["parameters"]
    assert converted == {"type": "object", "properties": {"t": {"type": "array"}, "v": {},
                                                          "s": {"type": "string"}, "b": {"type": "boolean"}}}


def test_our_published_rows_read_back() -> None:
    api = APISpec(api_id="a1", name="get weather", description="Weather",
                  parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                  result_schema={"type": "object"}, domain="Weather", node_ids=["n"], operators=["base"])
    dialog = Dialog(dialog_id="dlg-9", dialog_type="single", domain="Weather", tools=[api], apis_used=["get weather"],
                    turns=[Turn(role="user", content="Oslo?"),
                           Turn(role="assistant", tool_calls=[ToolCall(id="c", name="get weather",
                                                                       arguments={"city": "Oslo"})]),
                           Turn(role="tool", tool_call_id="c", name="get weather", content='{"temp": 3}'),
                           Turn(role="assistant", content="3 degrees.")])
    sample = sample_from_row(toolace_row(dialog), "auto", 0)
    assert sample.problems == [] and sample.id == "dlg-9" and sample.dialog_type == "single"
    assert sample.meta["domain"] == "Weather"
    assert call_lists(sample) == [[("get weather", {"city": "Oslo"})]]
    assert sample.turns[2].content == '{"temp": 3}' and sample.turns[2].tool_call_id == "call_1_0"
    assert row_from_sample(sample, "toolace") == toolace_row(dialog)


# ------------------------------------------------------------------------------------------------ bad input


def test_row_that_is_a_number() -> None:
    sample = sample_from_row(42, "auto", 5)
    assert checks(sample) == ["sample_fields_v1"] and sample.id == "5"
    assert checks(sample_from_row(42, "xlam", 5)) == ["sample_fields_v1"]


@pytest.mark.parametrize(("row", "fmt", "check"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "openai", "tools_present_v1"),
    ({"system": "You are helpful.", "conversations": [{"from": "user", "value": "hi"}]}, "toolace",
     "tools_present_v1"),
    ({"conversations": [{"from": "user", "value": "hi"}]}, "toolace", "tools_present_v1"),
    ({"question": [[{"role": "user", "content": "hi"}]]}, "bfcl", "tools_present_v1"),
    ({**SHAREGPT_ROW, "tools": '[{"name": "get_weather", "description": '}, "sharegpt", "tools_json_v1"),
    ({**XLAM_ROW, "tools": "[{'name': 'get_weather'}]"}, "xlam", "tools_json_v1"),
    ({**XLAM_ROW, "tools": json.dumps([{"description": "no name"}])}, "xlam", "tools_json_v1"),
    ({"system": TOOLACE_SYSTEM_PROMPT + '[{"name": "f", ', "conversations": []}, "toolace", "tools_json_v1"),
    ({"system": TOOLACE_SYSTEM_PROMPT + "[]"}, "toolace", "sample_fields_v1"),
    ({"tools": [WEATHER_TOOL], "messages": "hi"}, "openai", "sample_fields_v1"),
    ({"tools": "[]", "query": 3, "answers": "[]"}, "xlam", "sample_fields_v1"),
    ({**XLAM_ROW, "answers": '[{"name": "get_weather", "arguments": '}, "xlam", "call_syntax_v1"),
    ({**SHAREGPT_ROW, "conversations": [{"from": "function_call", "value": "get_weather(city='x')"}]}, "sharegpt",
     "call_syntax_v1"),
    ({**BFCL_ROW, "result": "[calculate_triangle_area(base=10, height=five)]"}, "bfcl", "call_syntax_v1"),
    (toolace_text_row("[get_weather(city=Paris)]"), "toolace", "call_syntax_v1"),
    (toolace_text_row("[get_weather(city='Paris'"), "toolace", "call_syntax_v1"),
])
def test_bad_rows_become_problems(row: dict[str, Any], fmt: str, check: str) -> None:
    sample = sample_from_row(row, fmt, 0)  # type: ignore[arg-type]
    assert checks(sample) == [check], sample.problems
    assert sample.problems[0].reason


def test_deeply_nested_call_is_a_call_syntax_problem() -> None:
    text = "[f(a=" + "[" * 10000 + "]" * 10000 + ")]"
    started = time.monotonic()
    sample = sample_from_row(toolace_text_row(text), "auto", 0)
    assert time.monotonic() - started < 5
    assert checks(sample) == ["call_syntax_v1"]
    turn = sample.turns[-1]
    assert turn.call_text == text and turn.tool_calls == [] and "deeper" in (turn.call_error or "")
    # written back as the raw text, so nothing is lost
    assert row_from_sample(sample, "toolace")["conversations"][-1]["value"] == text


def test_five_megabyte_argument() -> None:
    """ToolACE call text over the parser's size limit is refused (call_syntax_v1, text kept); the same
    argument as OpenAI JSON is read, and written to ToolACE as a call list."""
    big = "x" * 5_000_000
    toolace = sample_from_row(toolace_text_row(f'[get_weather(city="{big}")]'), "toolace", 0)
    assert checks(toolace) == ["call_syntax_v1"]
    assert "limit" in (toolace.turns[-1].call_error or "")
    assert len(toolace.turns[-1].call_text or "") > 5_000_000
    row = {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "?"},
        {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "get_weather",
                                                                      "arguments": json.dumps({"city": big})}}]}]}
    openai = sample_from_row(row, "auto", 0)
    assert openai.problems == []
    assert openai.turns[-1].tool_calls[0].arguments["city"] == big
    assert len(row_from_sample(openai, "toolace")["conversations"][-1]["value"]) > 5_000_000


def test_jsonl_with_bad_lines_reads_on(tmp_path: Path) -> None:
    good = json.dumps(toolace_text_row('[get_weather(city="Paris")]'))
    path = tmp_path / "mixed.jsonl"
    lines = [good, good[: len(good) // 2], "", "   ", "42", json.dumps({**XLAM_ROW, "tools": "{broken"}),
             "[" * 10000 + "]" * 10000, json.dumps(toolace_text_row("[" * 10000)), good]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    samples = list(read_samples(str(path)))
    assert [checks(s) for s in samples] == [[], ["sample_json_v1"], ["sample_fields_v1"], ["tools_json_v1"],
                                            ["sample_json_v1"], [], []]
    assert [s.index for s in samples] == list(range(7))
    assert "line 2" in samples[1].problems[0].reason
    assert samples[-1].turns[-1].tool_calls[0].arguments == {"city": "Paris"}
    assert samples[5].turns[-1].content == "[" * 10000  # not a call attempt: plain text


def test_json_array_file(tmp_path: Path) -> None:
    rows = [toolace_text_row('[get_weather(city="Paris")]'), SHAREGPT_ROW, XLAM_ROW]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    assert [s.format for s in read_samples(str(path))] == ["toolace", "sharegpt", "xlam"]
    cut = tmp_path / "cut.json"
    text = json.dumps(rows)
    cut.write_text(text[: len(text) - 40], encoding="utf-8")
    samples = list(read_samples(str(cut)))
    assert [checks(s) for s in samples] == [[], [], ["sample_json_v1"]]


def test_unreadable_files_raise_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.jsonl"):
        read_samples(str(tmp_path / "missing.jsonl"))
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(UserError, match="notes.txt"):
        read_samples(str(text))
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet", encoding="utf-8")
    with pytest.raises(UserError, match="fake.parquet"):
        read_samples(str(fake))
    with pytest.raises(UserError, match="unknown format"):
        read_samples(str(TOOLACE_SAMPLE), "alpaca")


def test_text_column(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.jsonl"
    path.write_text("\n".join([json.dumps({"text": json.dumps(XLAM_ROW)}), json.dumps({"text": "{cut"}),
                               json.dumps({"other": 1})]) + "\n", encoding="utf-8")
    samples = list(read_samples(str(path), "auto", text_column="text"))
    assert [checks(s) for s in samples] == [[], ["sample_json_v1"], ["sample_fields_v1"]]
    assert samples[0].format == "xlam"


# ----------------------------------------------------------------------------------------- parquet, convert


def test_parquet_round_trip_in_batches(tmp_path: Path, toolace_samples: list[Sample]) -> None:
    many = [s.model_copy(update={"index": i, "id": f"r{i}"}) for i, s in enumerate(toolace_samples * 4)]  # 368
    for fmt in ("openai", "toolace"):
        path = tmp_path / f"out-{fmt}.parquet"
        assert write_samples(many, fmt, str(path)) == len(many)  # type: ignore[arg-type]
        assert pq.ParquetFile(str(path)).metadata.num_rows == len(many)
        back = list(read_samples(str(path)))
        assert len(back) == len(many)
        assert all(s.format == fmt and s.problems == [] for s in back)
        assert [s.id for s in back] == [s.id for s in many]
        assert [call_lists(s) for s in back] == [call_lists(s) for s in many]


def test_parquet_with_nested_columns(tmp_path: Path) -> None:
    """Rows stored as parquet structs (pyarrow gives dicts, with None for absent struct fields)."""
    rows = [OPENAI_ROW, {**OPENAI_ROW, "id": "o2"}]
    table = pa.Table.from_pylist([{**r, "tools": json.dumps(r["tools"])} for r in rows])
    path = tmp_path / "nested.parquet"
    pq.write_table(table, str(path))
    samples = list(read_samples(str(path), "openai"))
    assert [s.id for s in samples] == ["o1", "o2"]
    assert all(s.problems == [] for s in samples)
    assert call_lists(samples[0]) == call_lists(sample_from_row(OPENAI_ROW, "openai", 0))


def test_convert_counts(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([json.dumps(SHAREGPT_ROW), "{not json", json.dumps(XLAM_ROW),
                                 json.dumps({**XLAM_ROW, "answers": "[oops"})]) + "\n", encoding="utf-8")
    out = tmp_path / "out.json"
    counts = convert(str(source), "auto", str(out), "toolace")
    assert counts == {"read": 4, "written": 3, "with_problems": 2, "skipped": 1}
    written = list(read_samples(str(out)))
    assert [s.format for s in written] == ["toolace"] * 3
    # the broken answer travels as the assistant's raw text (not call-like, so plain text in ToolACE)
    assert [checks(s) for s in written] == [[], [], []]
    assert written[2].turns[-1].content == "[oops"
    assert call_lists(written[1]) == [[("get_weather", {"city": "Paris", "days": 3})]]
    with pytest.raises(UserError):
        convert(str(tmp_path / "none.jsonl"), "auto", str(tmp_path / "x.jsonl"), "openai")
    assert not (tmp_path / "x.jsonl").exists()
