"""Tests for tasks.formats.call_format (ToolACE call lists and tools) and tasks.dataset.rows (rows, frames,
manifest helpers)."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from schemas.records import APISpec, Dialog, MinedDocument, ToolCall, TreeNode, Turn
from tasks.dataset.rows import openai_row, toolace_row
from tasks.formats.call_format import (
    TOOLACE_SYSTEM_PROMPT,
    call_id,
    chat_messages,
    python_literal,
    render_calls,
    toolace_system_prompt,
    toolace_tool,
    with_published_ids,
)
from tasks.storage.frames import records_frame, records_frame_dicts
from tasks.storage.writers import file_listing
from tasks.verification.published_format import chat_convention_problems, openai_finetune_problems
from toolace.config import redact_url

# --------------------------------------------------------------------------------------------- render_calls


def parse_calls(text: str) -> list[ast.Call]:
    tree = ast.parse(text, mode="eval")
    assert isinstance(tree.body, ast.List)
    assert all(isinstance(e, ast.Call) for e in tree.body.elts)
    return list(tree.body.elts)  # type: ignore[arg-type]


def assert_round_trip(calls: list[ToolCall]) -> str:
    """Rendered text parses as Python and every keyword value evaluates back to the original value."""
    text = render_calls(calls)
    parsed = parse_calls(text)
    assert len(parsed) == len(calls)
    for node, original in zip(parsed, calls, strict=True):
        assert isinstance(node.func, ast.Name) and node.func.id == original.name
        assert node.args == []
        assert [k.arg for k in node.keywords] == list(original.arguments)
        for keyword in node.keywords:
            value = ast.literal_eval(keyword.value)
            expected = original.arguments[keyword.arg or ""]
            assert value == expected
            assert type(value) is type(expected)
    return text


def test_render_simple_call() -> None:
    text = assert_round_trip([ToolCall(id="c1", name="get_weather", arguments={"city": "Paris", "days": 3})])
    assert text == '[get_weather(city="Paris", days=3)]'


def test_render_no_arguments() -> None:
    assert assert_round_trip([ToolCall(id="c1", name="list_cities", arguments={})]) == "[list_cities()]"


def test_render_empty_call_list() -> None:
    assert render_calls([]) == "[]"


def test_strings_double_quoted_with_escapes() -> None:
    tricky = 'say "hi"\\ to \'Bob\'\nnew line\ttab \u00e9\u4e2d\U0001f600 \x01 \u2028'
    text = assert_round_trip([ToolCall(id="c1", name="send", arguments={"message": tricky})])
    assert text.startswith('[send(message="')
    assert '\\"hi\\"' in text
    assert "\\n" in text and "\n" not in text
    assert "'Bob'" in text  # single quotes need no escape inside double quotes


def test_booleans_and_none() -> None:
    text = assert_round_trip([ToolCall(id="c1", name="f", arguments={"a": True, "b": False, "c": None})])
    assert text == "[f(a=True, b=False, c=None)]"
    assert "true" not in text and "null" not in text


def test_nested_lists_and_dicts() -> None:
    args = {
        "stops": [{"name": "Porto", "hours": 2, "tags": ["x", "y"]}, {"name": "Faro", "meta": {"ok": True}}],
        "matrix": [[1, 2], [3, [4, None]]],
        "empty_list": [],
        "empty_dict": {},
        "filters": {"price": {"min": 1.5, "max": None}, "labels": ["a\"b"]},
    }
    text = assert_round_trip([ToolCall(id="c1", name="plan_trip", arguments=args)])
    assert '{"name": "Porto", "hours": 2, "tags": ["x", "y"]}' in text
    assert "empty_list=[]" in text and "empty_dict={}" in text


@pytest.mark.parametrize("value", [1.5, 0.1, -2.25, 1e-07, 1.5e20, 3.0, -0.0, 123456789.123])
def test_floats(value: float) -> None:
    assert_round_trip([ToolCall(id="c1", name="f", arguments={"x": value})])


@pytest.mark.parametrize("value", [-1, -42, -2.5, 0, 10**12])
def test_negative_and_large_numbers(value: float) -> None:
    text = assert_round_trip([ToolCall(id="c1", name="f", arguments={"x": value})])
    assert text == f"[f(x={value!r})]"


def test_parallel_calls_in_one_list() -> None:
    calls = [
        ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="c2", name="get_weather", arguments={"city": "Rome", "unit": "celsius"}),
        ToolCall(id="c3", name="get_time", arguments={"zone": "CET", "offset": -1}),
    ]
    text = assert_round_trip(calls)
    assert text == ('[get_weather(city="Paris"), get_weather(city="Rome", unit="celsius"), '
                    'get_time(zone="CET", offset=-1)]')


def test_python_literal_unit() -> None:
    assert python_literal("a") == '"a"'
    assert python_literal(True) == "True"
    assert python_literal(None) == "None"
    assert python_literal([1, "b", False]) == '[1, "b", False]'
    assert python_literal({"k": [None]}) == '{"k": [None]}'


def test_parameter_named_like_a_python_keyword_is_rendered_as_toolace_writes_it() -> None:
    """ToolACE's release writes such calls verbatim (``from="2025-01-01"``); its parser must cope."""
    calls = [ToolCall(id="c1", name="convert_currency", arguments={"from": "USD", "to": "EUR", "amount": 10})]
    assert render_calls(calls) == '[convert_currency(from="USD", to="EUR", amount=10)]'


def test_synthesised_parameter_names_avoid_python_keywords() -> None:
    """Our own API pool never creates such names, so its calls also parse as plain Python."""
    from tasks.apis.synthesis import snake_case

    assert snake_case("from") == "from_"
    assert snake_case("Class") == "class_"
    assert snake_case("fromDate") == "from_date"


# --------------------------------------------------------------------------------------------- toolace_tool


def make_api(name: str = "get_weather", **overrides: Any) -> APISpec:
    values: dict[str, Any] = {
        "api_id": f"api-{name}", "name": name, "description": f"{name} description",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City"},
                "days": {"type": "integer", "minimum": 1},
                "ratio": {"type": "number"},
                "flag": {"type": "boolean"},
                "options": {"type": "object", "properties": {"depth": {"type": "integer"}}},
                "stops": {"type": "array", "items": {"type": "object", "properties": {"w": {"type": "number"}}}},
            },
            "required": ["city"],
        },
        "result_schema": {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]},
        "domain": "Weather", "node_ids": ["n1"], "operators": ["base"],
    }
    values.update(overrides)
    return APISpec(**values)


def test_toolace_tool_dialect() -> None:
    api = make_api()
    original = json.loads(json.dumps(api.parameters))
    tool = toolace_tool(api)
    assert list(tool) == ["name", "description", "parameters", "required"]
    assert tool["name"] == "get_weather"
    assert tool["description"] == "get_weather description"
    assert "required" in tool and tool["required"] is None
    params = tool["parameters"]
    assert params["type"] == "dict"
    props = params["properties"]
    assert props["city"]["type"] == "string"
    assert props["days"]["type"] == "int" and props["days"]["minimum"] == 1
    assert props["ratio"]["type"] == "float"
    assert props["flag"]["type"] == "boolean"
    assert props["options"]["type"] == "dict"
    assert props["options"]["properties"]["depth"]["type"] == "int"
    assert props["stops"]["type"] == "array"
    assert props["stops"]["items"]["type"] == "dict"
    assert props["stops"]["items"]["properties"]["w"]["type"] == "float"
    assert params["required"] == ["city"]  # the schema's own required list is kept
    assert api.parameters == original  # the APISpec is not modified


def test_toolace_tool_keeps_property_named_type() -> None:
    api = make_api(parameters={"type": "object", "properties": {"type": {"type": "string", "enum": ["a", "b"]}}})
    props = toolace_tool(api)["parameters"]["properties"]
    assert props["type"] == {"type": "string", "enum": ["a", "b"]}


def test_toolace_system_prompt() -> None:
    apis = [make_api("get_weather"), make_api("get_time")]
    prompt = toolace_system_prompt(apis)
    assert prompt.startswith(TOOLACE_SYSTEM_PROMPT)
    tools = json.loads(prompt[len(TOOLACE_SYSTEM_PROMPT):])
    assert tools == [toolace_tool(a) for a in apis]


# --------------------------------------------------------------------------------------------- publish rows

RESULT_PARIS = {"temp": 18.5, "sky": "cloudy"}
RESULT_ROME = {"temp": 24, "sky": "sunny"}


@pytest.fixture()
def parallel_dialog() -> Dialog:
    turns = [
        Turn(role="user", content="Weather in Paris and Rome?"),
        Turn(role="assistant", tool_calls=[
            ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),
            ToolCall(id="call_2", name="get_weather", arguments={"city": "Rome", "days": 2}),
        ]),
        Turn(role="tool", tool_call_id="call_1", name="get_weather", content=json.dumps(RESULT_PARIS)),
        Turn(role="tool", tool_call_id="call_2", name="get_weather", content=json.dumps(RESULT_ROME)),
        Turn(role="assistant", content="Paris is cloudy at 18.5, Rome sunny at 24."),
        Turn(role="user", content="And the time in Rome?"),
        Turn(role="assistant", tool_calls=[ToolCall(id="call_3", name="get_time", arguments={"city": "Rome"})]),
        Turn(role="tool", tool_call_id="call_3", name="get_time", content='"12:00"'),
    ]
    return Dialog(dialog_id="dlg-1", dialog_type="parallel", domain="Weather",
                  tools=[make_api("get_weather"), make_api("get_time")], turns=turns,
                  apis_used=["get_weather", "get_time"], complexity_loss=1.25)


def test_toolace_row(parallel_dialog: Dialog) -> None:
    row = toolace_row(parallel_dialog)
    assert row["id"] == "dlg-1"
    assert row["system"].startswith(TOOLACE_SYSTEM_PROMPT)
    tool_list = json.loads(row["system"][len(TOOLACE_SYSTEM_PROMPT):])
    assert [t["name"] for t in tool_list] == ["get_weather", "get_time"]
    assert tool_list[0]["required"] is None

    conv = row["conversations"]
    assert [c["from"] for c in conv] == ["user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
    assert conv[0]["value"] == "Weather in Paris and Rome?"
    assert conv[1]["value"] == '[get_weather(city="Paris"), get_weather(city="Rome", days=2)]'
    # the two consecutive tool turns merged into one entry, results parsed back from JSON
    assert json.loads(conv[2]["value"]) == [
        {"name": "get_weather", "results": RESULT_PARIS},
        {"name": "get_weather", "results": RESULT_ROME},
    ]
    assert conv[3]["value"] == "Paris is cloudy at 18.5, Rome sunny at 24."
    assert conv[5]["value"] == '[get_time(city="Rome")]'
    # a trailing tool turn is flushed too
    assert json.loads(conv[6]["value"]) == [{"name": "get_time", "results": "12:00"}]
    assert all(isinstance(c["value"], str) for c in conv)

    assert row["meta"] == {
        "domain": "Weather", "dialog_type": "parallel", "segments": [],
        "apis_used": ["get_weather", "get_time"],
        "complexity_loss": 1.25, "apis_offered": ["get_weather", "get_time"],
    }
    json.dumps(row)  # serialisable as one JSONL line


def test_toolace_row_non_tool_dialog() -> None:
    d = Dialog(dialog_id="d2", dialog_type="non_tool", domain="Chat", tools=[make_api()],
               turns=[Turn(role="user", content="Hi"), Turn(role="assistant", content="Hello!")])
    row = toolace_row(d)
    assert row["conversations"] == [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello!"}]
    assert row["meta"]["complexity_loss"] is None
    assert row["meta"]["apis_used"] == []


def test_openai_row(parallel_dialog: Dialog) -> None:
    row = openai_row(parallel_dialog)
    assert set(row) == {"messages", "tools"}  # OpenAI's fine-tuning input takes no other key
    assert openai_finetune_problems(row) == []
    assert [t["type"] for t in row["tools"]] == ["function", "function"]
    assert row["tools"][0]["function"]["name"] == "get_weather"
    assert row["tools"][0]["function"]["parameters"] == parallel_dialog.tools[0].parameters  # JSON schema types

    msgs = row["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "assistant", "user", "assistant", "tool"]
    assert msgs[0] == {"role": "user", "content": "Weather in Paris and Rome?"}
    first = msgs[1]
    assert first["content"] is None
    ids = [c["id"] for c in first["tool_calls"]] + [c["id"] for c in msgs[6]["tool_calls"]]
    assert all(len(i) == 9 and i.isalnum() for i in ids) and len(set(ids)) == 3  # unique in the dialog
    assert ids == [c["id"] for c in openai_row(parallel_dialog)["messages"][1]["tool_calls"]] + [ids[2]]  # stable
    assert all(c["type"] == "function" for c in first["tool_calls"])
    arguments = first["tool_calls"][1]["function"]["arguments"]
    assert isinstance(arguments, str)
    assert json.loads(arguments) == {"city": "Rome", "days": 2}
    assert first["tool_calls"][1]["function"]["name"] == "get_weather"
    assert msgs[2] == {"role": "tool", "tool_call_id": ids[0], "content": json.dumps(RESULT_PARIS)}
    assert msgs[3]["tool_call_id"] == ids[1]
    assert msgs[4] == {"role": "assistant", "content": "Paris is cloudy at 18.5, Rome sunny at 24."}
    assert msgs[7]["tool_call_id"] == ids[2]
    json.dumps(row)


def test_with_published_ids_matches_tool_turns_by_old_id_then_name() -> None:
    turns = [Turn(role="user", content="x"),
             Turn(role="assistant", tool_calls=[ToolCall(id="call_0", name="a", arguments={}),
                                                ToolCall(id="call_1", name="b", arguments={})]),
             Turn(role="tool", tool_call_id="call_1", name="b", content="1"),
             Turn(role="tool", name="a", content="2"),
             Turn(role="assistant", tool_calls=[ToolCall(id="call_0", name="a", arguments={})]),  # id reused
             Turn(role="tool", tool_call_id="call_0", name="a", content="3")]
    out = with_published_ids("seed", turns)
    first, second = out[1].tool_calls, out[4].tool_calls
    assert out[2].tool_call_id == first[1].id and out[3].tool_call_id == first[0].id
    assert out[5].tool_call_id == second[0].id != first[0].id
    assert turns[1].tool_calls[0].id == "call_0"  # the dialog itself is not changed
    assert call_id("seed", 0) == first[0].id and len({first[0].id, first[1].id, second[0].id}) == 3


def test_chat_messages_follow_the_hugging_face_convention(parallel_dialog: Dialog) -> None:
    turns = with_published_ids(parallel_dialog.dialog_id, parallel_dialog.turns)
    msgs = chat_messages(turns)
    assert msgs[0] == {"role": "user", "content": "Weather in Paris and Rome?"}  # no tool_calls, no null keys
    assert msgs[1]["content"] == "" and set(msgs[1]) == {"role", "content", "tool_calls"}
    assert msgs[1]["tool_calls"][1]["function"]["arguments"] == {"city": "Rome", "days": 2}  # an object
    assert msgs[2] == {"role": "tool", "content": json.dumps(RESULT_PARIS), "tool_call_id": turns[1].tool_calls[0].id,
                       "name": "get_weather"}
    assert msgs[4] == {"role": "assistant", "content": "Paris is cloudy at 18.5, Rome sunny at 24."}
    assert chat_convention_problems({"messages": msgs, "tools": [t.tool_definition() for t in parallel_dialog.tools]}) \
        == []


def test_chat_messages_carry_reasoning_only_when_asked() -> None:
    turn = Turn(role="assistant", content="Hi.", reasoning_content="The user greets me.")
    assert chat_messages([turn]) == [{"role": "assistant", "content": "Hi."}]
    assert chat_messages([turn], reasoning=True) == [
        {"role": "assistant", "content": "Hi.", "reasoning_content": "The user greets me."}]


# --------------------------------------------------------------------------------------------- frames


def test_records_frame_string_list_column_stays_list() -> None:
    nodes = [
        TreeNode(node_id="a", parent_id=None, name="Weather", level=0, is_functionality=False, doc_ids=["d1", "d2"]),
        TreeNode(node_id="b", parent_id="a", name="Get", level=1, is_functionality=True, doc_ids=["d1"]),
    ]
    frame = records_frame(nodes)
    assert frame.columns == list(TreeNode.model_fields)
    assert frame.schema["doc_ids"] == pl.List(pl.String)
    assert frame["doc_ids"].to_list() == [["d1", "d2"], ["d1"]]
    assert frame["parent_id"].to_list() == [None, "a"]
    assert frame.schema["level"].is_integer()
    assert frame.schema["is_functionality"] == pl.Boolean


def test_records_frame_empty_lists_ok() -> None:
    docs = [MinedDocument(doc_id=f"d{i}", source="s", title="t", relevance_score=0.1 * i) for i in range(3)]
    docs[2].subdomains = ["Forecasts"]
    frame = records_frame(docs)
    assert frame.height == 3
    assert frame.schema["subdomains"] == pl.List(pl.String)
    assert frame.schema["functionalities"] == pl.List(pl.String)
    assert frame.schema["raw_outputs"] == pl.List(pl.String)
    assert frame["subdomains"].to_list() == [[], [], ["Forecasts"]]
    assert frame["functionalities"].to_list() == [[], [], []]


def test_records_frame_all_empty_lists() -> None:
    docs = [MinedDocument(doc_id="d", source="s", title="t", relevance_score=0.0)]
    frame = records_frame(docs)
    assert frame.schema["subdomains"] == pl.List(pl.String)
    assert frame["subdomains"].to_list() == [[]]


def test_records_frame_nested_become_json(parallel_dialog: Dialog) -> None:
    frame = records_frame([parallel_dialog])
    assert frame.schema["tools"] == pl.String
    assert frame.schema["turns"] == pl.String
    assert frame.schema["apis_used"] == pl.List(pl.String)
    tools = json.loads(frame["tools"][0])
    assert [t["name"] for t in tools] == ["get_weather", "get_time"]
    assert tools[0]["parameters"] == parallel_dialog.tools[0].parameters
    turns = json.loads(frame["turns"][0])
    assert turns[1]["tool_calls"][1]["arguments"] == {"city": "Rome", "days": 2}


def test_records_frame_dict_columns_become_json() -> None:
    apis = [make_api("a"), make_api("b", parameters={"type": "object", "properties": {}})]
    frame = records_frame(apis)
    assert frame.schema["parameters"] == pl.String
    assert frame.schema["result_schema"] == pl.String
    assert json.loads(frame["parameters"][1]) == {"type": "object", "properties": {}}
    assert frame.schema["node_ids"] == pl.List(pl.String)


def test_records_frame_empty() -> None:
    assert records_frame([]).shape == (0, 0)


def test_records_frame_dicts_mixed_list_column_is_json() -> None:
    rows = [{"id": 1, "values": [1, 2], "names": ["a"], "extra": {"k": "v"}},
            {"id": 2, "values": [], "names": [], "extra": {}}]
    frame = records_frame_dicts(rows)
    assert frame.schema["names"] == pl.List(pl.String)
    assert frame.schema["values"] == pl.String  # not a list of strings: JSON text
    assert frame["values"].to_list() == ["[1, 2]", "[]"]
    assert [json.loads(v) for v in frame["extra"].to_list()] == [{"k": "v"}, {}]


# --------------------------------------------------------------------------------------------- manifest helpers


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:password@host.example.com/v1", "https://host.example.com/v1"),
    ("http://token@localhost:8000/v1", "http://localhost:8000/v1"),
    ("s3://AKIAKEY:secret@bucket/run", "s3://bucket/run"),
    ("http://localhost:8000/v1", "http://localhost:8000/v1"),
    ("https://host/v1?email=a@b.c", "https://host/v1?email=a@b.c"),
    (None, None),
    ("", ""),
])
def test_redact_url(url: str | None, expected: str | None) -> None:
    assert redact_url(url) == expected


def test_redact_url_password_with_at_sign() -> None:
    """httpx and urllib read 'user:p@ss@host' as user 'user', password 'p@ss': none of it may remain."""
    redacted = redact_url("https://user:p@ss@host.example.com/v1")
    assert redacted == "https://host.example.com/v1"


def test_file_listing(tmp_path: Path) -> None:
    files = {"manifest_input.json": b'{"a": 1}\n', "tables/docs.parquet": b"\x00\x01binary" * 100,
             "tables/deep/empty.txt": b""}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    listing = file_listing(str(tmp_path))
    assert [e["path"] for e in listing] == sorted(files)
    for entry in listing:
        data = files[entry["path"]]
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_file_listing_trailing_slash_and_empty(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"abc")
    listing = file_listing(str(tmp_path) + "/")
    assert listing == [{"path": "a.txt", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert file_listing(str(empty)) == []
