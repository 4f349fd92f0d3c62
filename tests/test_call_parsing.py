"""Parsing function calls from model output with ``ast`` (never eval), and comparing call lists."""

from __future__ import annotations

import ast
import os
import subprocess
from typing import Any

import pytest

from schemas.records import ToolCall
from tasks.formats import call_parsing
from tasks.formats.call_format import render_calls
from tasks.formats.call_parsing import MAX_DEPTH, MAX_TEXT_CHARS, CallParseError, parse_calls


def call(name: str, call_id: str = "x", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def pairs(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.arguments) for c in calls]


# ------------------------------------------------------------------------------------------- round trips

ROUND_TRIP_VALUES: list[Any] = [
    0, 1, -1, 42, -7, 10**30, -(10**18), 3.5, -0.25, 1e-05, -2.5e10, 0.1, 1.0, -0.0,
    True, False, None,
    "", "x", "Oslo", "with space", 'say "hi"', "it's", "back\\slash", "line\nbreak\ttab", "\x00\x1f ctrl",
    "ünïcødé", "日本語のテキスト", "emoji 🎉👩‍💻", "RTL عربى", "brackets ] [ ) ( } {", "f(a=1)", "[g(b=2)]",
    "```fence```", "#comment", "\\u0041 literal escape", "{\"json\": true}",
    [], [1, 2, 3], ["a", "b"], [1, "two", 3.0, None, True], [[1, 2], [3, [4, [5]]]],
    {}, {"k": None}, {"nested": {"deeper": {"deepest": [1, {"x": "y"}]}}}, {"quote\"key": 1, "ünï": "v"},
    [{"name": "a", "tags": ["x", "y"]}, {"name": "b", "tags": []}],
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=[repr(v)[:40] for v in ROUND_TRIP_VALUES])
def test_round_trip_each_value(value: Any) -> None:
    calls = [call("search_songs", value=value)]
    parsed = parse_calls(render_calls(calls))
    assert pairs(parsed) == pairs(calls)
    assert parsed[0].id == "call_0"
    assert type(parsed[0].arguments["value"]) is type(value)


def test_round_trip_parallel_calls_keeps_order_ids_and_dotted_names() -> None:
    calls = [
        call("get_weather", city="Oslo", days=3, units="metric"),
        call("weather.forecast.get", city="Köln", include={"wind": True, "rain": None}, hours=[-1, 0, 1]),
        call("ping"),
        call("get_weather", city="São Paulo", days=-2, units="imperial"),
    ]
    text = render_calls(calls)
    parsed = parse_calls(text)
    assert pairs(parsed) == pairs(calls)
    assert [c.id for c in parsed] == ["call_0", "call_1", "call_2", "call_3"]
    assert parse_calls(render_calls(parsed)) == parsed  # stable


def test_round_trip_all_values_in_one_call() -> None:
    arguments = {f"p{i}": v for i, v in enumerate(ROUND_TRIP_VALUES)}
    calls = [ToolCall(id="c", name="everything", arguments=arguments)]
    assert pairs(parse_calls(render_calls(calls))) == pairs(calls)


# ------------------------------------------------------------------------------------------ accepted forms


def test_brief_example() -> None:
    parsed = parse_calls('[f(a=1, b="x"), g(c=[1, 2], d={"k": None})]')
    assert pairs(parsed) == [("f", {"a": 1, "b": "x"}), ("g", {"c": [1, 2], "d": {"k": None}})]


@pytest.mark.parametrize("text", [
    "f(a=1)", "  f(a=1)\n", "[f(a=1)]", "\n\t [ f( a = 1 ) ] \n", "(f(a=1))", "[f(a=1),]", "[\n  f(\n    a=1,\n  )\n]",
])
def test_single_call_forms(text: str) -> None:
    assert pairs(parse_calls(text)) == [("f", {"a": 1})]


def test_tuple_of_calls_without_brackets() -> None:
    assert pairs(parse_calls("f(a=1), g(b=2)")) == [("f", {"a": 1}), ("g", {"b": 2})]


def test_no_arguments_and_empty_list() -> None:
    assert pairs(parse_calls("[ping()]")) == [("ping", {})]
    assert parse_calls("[]") == []
    assert parse_calls(" [ ] ") == []


def test_json_names_tuples_negative_numbers_and_single_quotes() -> None:
    parsed = parse_calls("[f(a=true, b=false, c=null, d=(1, 2), e=-3, f=-2.5, g='single', h=[(1,), ()])]")
    assert parsed[0].arguments == {"a": True, "b": False, "c": None, "d": [1, 2], "e": -3, "f": -2.5,
                                   "g": "single", "h": [[1], []]}


def test_json_style_values_inside_dicts() -> None:
    parsed = parse_calls('[book(options={"refundable": true, "seat": null, "legs": [{"from": "OSL", "n": -1}]})]')
    assert parsed[0].arguments == {"options": {"refundable": True, "seat": None, "legs": [{"from": "OSL", "n": -1}]}}


def test_dict_scalar_keys_become_json_keys() -> None:
    parsed = parse_calls("[f(m={1: 'a', 2.5: 'b', True: 'c', None: 'd', 'k': 'e'})]")
    assert parsed[0].arguments == {"m": {"1": "a", "2.5": "b", "true": "c", "null": "d", "k": "e"}}


def test_implicit_string_concatenation_is_one_literal() -> None:
    assert parse_calls('[f(a="x" "y")]')[0].arguments == {"a": "xy"}


@pytest.mark.parametrize("text", [
    'Sure! Here is the call: [get_weather(city="Oslo", days=2)]',
    'Here you go:\n[get_weather(city="Oslo", days=2)]\nLet me know if you need more.',
    "I'll call it now: [get_weather(city=\"Oslo\", days=2)] (that's all)",
    '```\n[get_weather(city="Oslo", days=2)]\n```',
    '```python\n[get_weather(city="Oslo", days=2)]\n```',
    'Result:\n```python\nget_weather(city="Oslo", days=2)\n```\nDone.',
    '```py\nget_weather(city="Oslo", days=2)\n```',
    '[Note] the call is [get_weather(city="Oslo", days=2)]',
    '[Answer: [get_weather(city="Oslo", days=2)]]',
    '[get_weather(city="Oslo", days=2)]`',
    'The list [1, 2] is not it; [get_weather(city="Oslo", days=2)] is.',
    '[get_weather(city="Oslo", days=2)] trailing words',
])
def test_embedded_and_fenced(text: str) -> None:
    assert pairs(parse_calls(text)) == [("get_weather", {"city": "Oslo", "days": 2})]


def test_embedded_parallel_calls_and_brackets_inside_strings() -> None:
    text = 'Calling both: [f(q="a ] tricky [ string", r=[1]), g(s="it\'s (fine)")] done.'
    assert pairs(parse_calls(text)) == [("f", {"q": "a ] tricky [ string", "r": [1]}), ("g", {"s": "it's (fine)"})]


def test_first_call_list_in_text_wins() -> None:
    assert pairs(parse_calls("First [f(a=1)] then [g(b=2)]")) == [("f", {"a": 1})]


# --------------------------------------------------------------------------------------------- rejections

REJECTED: list[tuple[str, str]] = [
    ('[f(a=__import__("os").system("echo hi"))]', "call inside an argument"),
    ("[f(1)]", "positional argument"),
    ('[f("x", b=2)]', "positional argument"),
    ("[f(*args)]", "positional argument"),
    ("[f(**kwargs)]", "'**' unpacking"),
    ("[f(a={**base})]", "'**' unpacking"),
    ("[f(a=[*xs])]", "'*' unpacking"),
    ("[f(a=x)]", "variable 'x'"),
    ("[f(a=True_)]", "variable 'True_'"),
    ("[f(a=os.environ)]", "attribute"),
    ("[f(a=g())]", "call inside an argument"),
    ("[f(a=[g(b=1)])]", "call inside an argument"),
    ("[f(a=f'{x}')]", "f-strings"),
    ('[f(a=f"plain")]', "f-strings"),
    ("[f(a=lambda: 1)]", "lambda"),
    ("[f(a=[i for i in range(3)])]", "comprehension"),
    ("[f(a={k: 1 for k in y})]", "comprehension"),
    ("[f(a=(i for i in y))]", "generator"),
    ("[f(a=1 + 2)]", "operator"),
    ("[f(a='a' * 10)]", "operator"),
    ("[f(a=2 ** 100)]", "operator"),
    ("[f(a=not True)]", "UnaryOp"),
    ("[f(a=~1)]", "UnaryOp"),
    ("[f(a=--1)]", "minus sign"),
    ("[f(a=-True)]", "minus sign"),
    ("[f(a=-x)]", "minus sign"),
    ("[f(a=1 if x else 2)]", "conditional"),
    ("[f(a=x[0])]", "subscript"),
    ("[f(a=(b := 1))]", "assignment expression"),
    ("[f(a={1, 2})]", "set"),
    ("[f(a=b'bytes')]", "bytes"),
    ("[f(a=1j)]", "complex"),
    ("[f(a=...)]", "ellipsis"),
    ("[f(a=1e999)]", "not finite"),
    ("[f(a=1 < 2)]", "comparison"),
    ("[f(a=1, a=2)]", "given twice"),
    ("[f(a={'k': 1, 'k': 2})]", "repeated"),
    ("[f(a={[1]: 2})]", "dict key"),
    ("[f()()]", "function must be a name"),
    ("[fs[0](a=1)]", "function must be a name"),
    ("['f'(a=1)]", "function must be a name"),
    ("[(lambda: 1)()]", "function must be a name"),
    ("[f(a=1), 2]", "no function call list"),
    ("[f(a=1), [g(b=2)]]", "no function call list"),
    ("", "empty text"),
    ("   \n ", "empty text"),
    ("I cannot help with that.", "no function call list"),
    ("[1, 2, 3]", "no function call list"),
    ("f(a=1) and g(b=2)", "no function call list"),
    ("import os; os.system('echo hi')", "no function call list"),
    ("f(a=1)\ng(b=2)", "no function call list"),
    ("[f(a=1)", "no function call list"),
    ('[f(a="unterminated)]', "no function call list"),
    ("[[f(a=1)]]", "no function call list"),
    ("Answer: [[f(a=1)], 2]", "no function call list"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED, ids=[t[:40] for t, _ in REJECTED])
def test_rejections_raise_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CallParseError) as excinfo:
        parse_calls(text)
    assert reason.lower() in str(excinfo.value).lower()
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("text", [
    'Sure: [f(a=__import__("os").system("echo hi"))]',
    '```python\n[f(a=open("/etc/passwd").read())]\n```',
    '[f(a=x)] but [g(b=1)] is fine',  # the first call list decides; nothing after it is tried
    '[g(x=[f(a=1)])]',  # an inner call list is not taken out of an argument
])
def test_a_bad_call_list_in_text_is_decisive(text: str) -> None:
    with pytest.raises(CallParseError):
        parse_calls(text)


def test_payload_runs_nothing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setattr(os, "system", lambda *_: pytest.fail("os.system was called"))
    monkeypatch.setattr(subprocess, "run", lambda *_, **__: pytest.fail("subprocess.run was called"))
    monkeypatch.setattr(subprocess, "Popen", lambda *_, **__: pytest.fail("subprocess.Popen was called"))
    payloads = [
        f'[f(a=__import__("os").system("touch {marker}"))]',
        f'[f(a=open("{marker}", "w").write("x"))]',
        f'[f(a=exec("open(\'{marker}\', \'w\')"))]',
        f'[f(a=eval("__import__(\'os\').system(\'touch {marker}\')"))]',
        f'[f(**{{"a": __import__("os").system("touch {marker}")}})]',
        f'[__import__("os").system("touch {marker}")]',
        f'__import__("os").system("touch {marker}")',
        f'[f(a=(lambda: __import__("os").system("touch {marker}"))())]',
    ]
    for payload in payloads:
        with pytest.raises(CallParseError):
            parse_calls(payload)
    monkeypatch.undo()
    assert not marker.exists()


def test_module_never_uses_eval_exec_compile_or_literal_eval() -> None:
    with open(call_parsing.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                called.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                called.add(f"{getattr(node.func.value, 'id', '?')}.{node.func.attr}")
    assert not called & {"eval", "exec", "compile", "__import__", "ast.literal_eval", "builtins.eval"}
    assert "ast.parse" in called


# ----------------------------------------------------------------------------------------------- guards


def test_text_over_the_size_limit_is_refused() -> None:
    text = "[f(a=" + '"' + "x" * MAX_TEXT_CHARS + '")]'
    with pytest.raises(CallParseError, match="limit"):
        parse_calls(text)
    just_under = "[f(a=" + '"' + "x" * (MAX_TEXT_CHARS - 9) + '")]'
    assert len(just_under) == MAX_TEXT_CHARS
    assert len(parse_calls(just_under)[0].arguments["a"]) == MAX_TEXT_CHARS - 9


def nested(depth: int) -> str:
    """A call whose argument is nested so that the text's deepest bracket is at ``depth``."""
    inner = depth - 2  # the call list and the call's parentheses
    return "[f(a=" + "[" * inner + "]" * inner + ")]"


def test_nesting_limit() -> None:
    assert parse_calls(nested(MAX_DEPTH))[0].name == "f"
    with pytest.raises(CallParseError, match="deeper than 50"):
        parse_calls(nested(MAX_DEPTH + 1))
    with pytest.raises(CallParseError, match="deeper than 50"):
        parse_calls("[" * 5000 + "]" * 5000)
    with pytest.raises(CallParseError, match="deeper than 50"):
        parse_calls("I'm answering: " + "[" * 300 + "f(a=1)" + "]" * 300)
    with pytest.raises(CallParseError, match="deeper than 50"):
        parse_calls("[f(a=" + "{'k': " * 60 + "1" + "}" * 60 + ")]")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[f(a="' + "[" * 200 + '")]'
    assert parse_calls(text)[0].arguments == {"a": "[" * 200}


@pytest.mark.parametrize("text", [
    "-" * 99_000 + "1",
    "[f(a=1" + "+1" * 40_000 + ")]",
    "[f(a=x" + ".y" * 40_000 + ")]",
    "[a" + ".b" * 40_000 + "(x=1)]",
    "[f" + "()" * 40_000 + "]",
    "[f(a=" + "1" * 5_000 + ")]",
    "[f(a=\x00)]",
    "[f(a=\"\ud800\")]",
])
def test_pathological_inputs_fail_cleanly(text: str) -> None:
    with pytest.raises(CallParseError):
        parse_calls(text)


def test_non_text_is_refused() -> None:
    with pytest.raises(CallParseError, match="expected text"):
        parse_calls(None)  # type: ignore[arg-type]


def test_parsed_answer_reads_back_the_calls_it_was_rendered_from() -> None:
    reference = [call("get_weather", "r0", city="Oslo", days=3), call("get_time", "r1", tz="Europe/Oslo")]
    answer = 'Sure:\n```python\n[get_time(tz="Europe/Oslo"), get_weather(days=3, city="Oslo")]\n```'
    assert [(c.name, c.arguments) for c in parse_calls(answer)] == [("get_time", {"tz": "Europe/Oslo"}),
                                                                   ("get_weather", {"days": 3, "city": "Oslo"})]
    assert [(c.name, c.arguments) for c in parse_calls(render_calls(reference))] == [
        (c.name, c.arguments) for c in reference]


# ------------------------------------------------------------------------ names and arguments ast cannot read

OFFERED = ["Market Trends API", "User Feed (Video Posts) V2", "User Feed", "math.factorial", "/madlibs-diceware"]


@pytest.mark.parametrize(("text", "expected"), [
    ('[Market Trends API(trend_type="MARKET_INDEXES")]', [("Market Trends API", {"trend_type": "MARKET_INDEXES"})]),
    ("[math.factorial(number=5)]", [("math.factorial", {"number": 5})]),
    ('[User Feed (Video Posts) V2(username="x")]', [("User Feed (Video Posts) V2", {"username": "x"})]),
    ('[User Feed(username="x")]', [("User Feed", {"username": "x"})]),
    ("[/madlibs-diceware(nphrase=2)]", [("/madlibs-diceware", {"nphrase": 2})]),
    ('[f(from="2025-01-01", to="b", class=1, lambda=None)]',
     [("f", {"from": "2025-01-01", "to": "b", "class": 1, "lambda": None})]),
    ('Market Trends API(trend_type="x")', [("Market Trends API", {"trend_type": "x"})]),
    # a name that is not offered is still read up to its "(" (the rule layer then says it is unknown)
    ('[Unknown Thing(a=1), User Feed(u="a, b(")]', [("Unknown Thing", {"a": 1}), ("User Feed", {"u": "a, b("})]),
    # names inside string values are left alone
    ('[f(a="Market Trends API(x)", b="from=1")]', [("f", {"a": "Market Trends API(x)", "b": "from=1"})]),
])
def test_names_with_spaces_parentheses_and_keyword_arguments(text: str, expected: list) -> None:
    assert pairs(parse_calls(text, OFFERED)) == expected


def test_every_call_of_the_toolace_release_sample_parses() -> None:
    import json
    from pathlib import Path

    sample = Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"
    call_turns = calls = 0
    for line in sample.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        start = row["system"].index("[", row["system"].index("Here is a list of functions"))
        tools, _ = json.JSONDecoder().raw_decode(row["system"][start:])
        names = [t["name"] for t in tools]
        for turn, after in zip(row["conversations"], [*row["conversations"][1:], None], strict=True):
            if turn["from"] == "assistant" and turn["value"].lstrip().startswith("["):
                parsed = parse_calls(turn["value"], names)
                assert parsed and all(c.name in names for c in parsed), turn["value"]
                if after and after["from"] == "tool":
                    results = [r["name"] for r in json.loads(after["value"])]
                    assert sorted(c.name for c in parsed) == sorted(results)
                call_turns += 1
                calls += len(parsed)
    assert (call_turns, calls) == (166, 181)


def test_json_style_calls() -> None:
    text = '[{"name": "f", "arguments": "{\\"a\\": 1}"}, {"name": "g", "parameters": {"b": [2]}}, {"h": {"c": -1}}]'
    assert pairs(call_parsing.parse_json_calls(text)) == [("f", {"a": 1}), ("g", {"b": [2]}), ("h", {"c": -1})]
    assert pairs(call_parsing.parse_json_calls({"name": "f", "arguments": None})) == [("f", {})]
    for bad, reason in [('{"name": "f", "arguments": "{oops"}', "not valid JSON"), ("[1]", "not an object"),
                        ('{"a": 1, "b": 2}', "no 'name'"), ('{"name": "f", "arguments": [1]}', "not an object"),
                        ("[" * 10_000 + "]" * 10_000, "nested deeper"), ('{"name": "f"', "not valid JSON")]:
        with pytest.raises(CallParseError, match=reason):
            call_parsing.parse_json_calls(bad)


def test_hostile_sizes_fail_with_a_reason() -> None:
    with pytest.raises(CallParseError, match="nested deeper"):
        parse_calls("[f(a=" + "[" * 10_000 + "]" * 10_000 + ")]", OFFERED)
    with pytest.raises(CallParseError, match="over the 100000 limit"):
        parse_calls('[f(a="' + "x" * 5_000_000 + '")]', OFFERED)
