"""Tool-call formats (issue 21 item 2): each family's parser reads back the calls real chat templates write
(llama.cpp's copies of the models' templates, rendered with transformers' renderer), follows vLLM's rules on
the cases that matter, and never raises on hostile text."""

from __future__ import annotations

import json
import keyword
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import ToolCall
from tasks.formats.call_format import render_calls
from tasks.formats.chat_templates import load_family, render
from tasks.formats.tool_call_formats import (
    MAX_TEXT_CHARS,
    TOOL_FORMATS,
    ParsedAnswer,
    ParsedCall,
    bfcl_calls,
    detect_tool_format,
    parse_hermes,
    parse_llama3_json,
    parse_mistral,
    parse_pythonic,
    parse_tool_calls,
    probe_tools,
    rendered_assistant_turn,
)
from toolace.chat_template_files import find_templates_dir

TEMPLATES = find_templates_dir()
needs_templates = pytest.mark.skipif(TEMPLATES is None, reason="llama.cpp chat templates not extracted (make setup)")

# family -> the format its template writes calls in (None: a format none of our parsers reads)
FAMILY_FORMATS = {
    "qwen2.5": "hermes", "qwen3": "hermes", "hermes3": "hermes", "granite4": "hermes",
    "llama3.1": "llama3_json", "llama3.2": "llama3_json", "llama3.3": "llama3_json",
    "mistral-nemo": "mistral", "mistral-small3": "mistral",
    "qwen3.5": None, "deepseek-v3": None, "gemma4": None,
}
SINGLE_CALL_ONLY = {"llama3.1", "llama3.2", "llama3.3"}


def _template(family: str):
    assert TEMPLATES is not None
    return load_family(family, TEMPLATES)


def _render_turn(family: str, calls: list[tuple[str, dict]], tools: list[dict] | None = None) -> str:
    """The text a family's template writes for an assistant turn making ``calls`` (its end-of-turn cut off,
    as generation stops there)."""
    template = _template(family)
    messages = [{"role": "user", "content": "Do it."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": f"abcdefgh{k}", "type": "function", "function": {"name": name, "arguments": arguments}}
                    for k, (name, arguments) in enumerate(calls)]}]
    tools = tools or [{"type": "function", "function": {"name": name, "description": "A tool.", "parameters": {
        "type": "object", "properties": {}}}} for name in {name for name, _ in calls}]
    turn = rendered_assistant_turn(lambda m, g: render(template, m, tools, g), messages).rstrip()
    return turn[: -len(template.eos_token)] if template.eos_token and turn.endswith(template.eos_token) else turn


# ----------------------------------------------------------------------------------------- real templates


@needs_templates
@pytest.mark.parametrize("family", sorted(FAMILY_FORMATS))
def test_the_format_is_detected_from_the_template(family):
    template = _template(family)
    found, why = detect_tool_format(lambda m, g: render(template, m, probe_tools(), g), template.eos_token)
    assert found == FAMILY_FORMATS[family], why
    if found is None:
        assert "none of the formats" in why or "rendering a tool call fails" in why


ARGUMENTS = {"city": "São Paulo \"centro\"", "days": 3, "ratio": -0.25, "metric": True, "note": None,
             "tags": ["a", "b, c", "[x]"], "filters": {"min": {"deep": [1, {"k": "v}"}]}, "text": "x"},
             "code": "print('hi'); {}"}


@needs_templates
@pytest.mark.parametrize("family", [f for f, fmt in FAMILY_FORMATS.items() if fmt])
def test_a_call_rendered_by_a_real_template_is_read_back(family):
    """Round trip: the template writes the call, the family's parser reads the same name and arguments."""
    fmt = FAMILY_FORMATS[family]
    turn = _render_turn(family, [("get_weather_forecast", ARGUMENTS)])
    parsed = parse_tool_calls(turn, fmt)
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall("get_weather_forecast", ARGUMENTS)]


@needs_templates
@pytest.mark.parametrize("family", [f for f, fmt in FAMILY_FORMATS.items() if fmt and f not in SINGLE_CALL_ONLY])
def test_parallel_calls_rendered_by_a_real_template_are_read_back_in_order(family):
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET", "h24": False}),
             ("get_weather", {"city": "Lima", "days": 2})]
    parsed = parse_tool_calls(_render_turn(family, calls), FAMILY_FORMATS[family])
    assert parsed.error is None and [(c.name, c.arguments) for c in parsed.calls] == calls


def _containers(inner: st.SearchStrategy[Any], size: int = 4, key_size: int = 8) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner``: a named function, not a lambda: Hypothesis describes a recursive strategy's
    lambda by searching ``sys.modules`` for its source, which fails when another thread imports at that moment."""
    return st.lists(inner, max_size=size) | st.dictionaries(st.text(max_size=key_size), inner, max_size=size)


def _small_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _containers(inner, size=3, key_size=6)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20), _containers, max_leaves=12)
NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)
# A Python keyword cannot be a function or argument name in Python syntax (`[as()]`, `[f(as=1)]` do not parse, for
# vLLM's pythonic parser either); our synthesized names never are one (tasks.apis.synthesis.snake_case appends "_")
PYTHON_NAMES = NAMES.filter(lambda name: not keyword.iskeyword(name))
ARGUMENT_OBJECTS = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), JSON_VALUES, max_size=5)


@needs_templates
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, arguments=ARGUMENT_OBJECTS,
       family=st.sampled_from(["qwen2.5", "llama3.1", "mistral-nemo", "mistral-small3"]))
def test_any_arguments_round_trip_through_real_templates(name, arguments, family):
    parsed = parse_tool_calls(_render_turn(family, [(name, arguments)]), FAMILY_FORMATS[family])
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall(name, arguments)]


@settings(max_examples=80, deadline=None)
@given(calls=st.lists(st.tuples(PYTHON_NAMES, st.dictionaries(PYTHON_NAMES,
                                                       st.recursive(st.none() | st.booleans()
                                                                    | st.integers(-10**9, 10**9)
                                                                    | st.floats(allow_nan=False, allow_infinity=False)
                                                                    | st.text(max_size=15),
                                                                    _small_containers, max_leaves=8),
                                                       max_size=4)),
                      min_size=1, max_size=3))
def test_pythonic_reads_back_what_the_toolace_call_writer_writes(calls):
    """No real template among the families writes pythonic calls: ToolACE's own writer (``[f(a=1)]``, the
    format the pythonic parser exists for) is the reference."""
    text = render_calls([ToolCall(id=f"c{k}", name=n, arguments=a) for k, (n, a) in enumerate(calls)])
    parsed = parse_pythonic(text)
    assert parsed.error is None, (text, parsed.error)
    assert [(c.name, c.arguments) for c in parsed.calls] == calls


# -------------------------------------------------------------------------------------------- vLLM's rules


def test_hermes_rules():
    assert parse_hermes("The answer is 4.") == ParsedAnswer([], "The answer is 4.")
    two = parse_hermes('Let me check.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
                       '<tool_call>{"name": "g", "arguments": {}}')  # the last block may be left open
    assert two.calls == [ParsedCall("f", {"a": 1}), ParsedCall("g", {})] and two.content == "Let me check.\n"
    broken = parse_hermes('<tool_call>{"name": "f", "arguments": {"a": </tool_call>')
    assert broken.calls == [] and broken.content.startswith("<tool_call>") and "not JSON" in broken.error
    assert "no \"arguments\"" in parse_hermes('<tool_call>{"name": "f"}</tool_call>').error
    assert "not a string" in parse_hermes('<tool_call>{"name": 3, "arguments": {}}</tool_call>').error
    # reasoning is set aside first, so a <tool_call> mentioned while thinking is not a call
    thought = parse_tool_calls('<think>I could use <tool_call>?</think>\n<tool_call>{"name": "f", "arguments": {}}'
                               '</tool_call>', "hermes")
    assert thought.calls == [ParsedCall("f", {})] and thought.error is None


def test_llama3_json_rules():
    assert parse_llama3_json("No tools needed.") == ParsedAnswer([], "No tools needed.")
    calls = parse_llama3_json('<|python_tag|>{"name": "f", "parameters": {"a": {"b": {"c": [1, {"d": 2}]}}}}; '
                              '{"name": "g", "arguments": {"x": "}{"}}')
    assert calls.calls == [ParsedCall("f", {"a": {"b": {"c": [1, {"d": 2}]}}}), ParsedCall("g", {"x": "}{"})]
    assert parse_llama3_json('Sure: {"name": "f", "parameters": {}} done').calls == [ParsedCall("f", {})]
    assert "not JSON" in parse_llama3_json("use {x} here").error  # a brace that is not JSON: text, with why
    assert parse_llama3_json('{"city": "Paris"}').error.endswith('has no "name"')
    assert parse_llama3_json('{"name": "f", "parameters": {}} {"oops": 1}').calls == []  # one bad object: none


def test_mistral_rules():
    assert parse_mistral("Hello") == ParsedAnswer([], "Hello")
    old = parse_mistral('[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}, "id": "abcdefghi"}, '
                        '{"name": "g", "arguments": {}}]')
    assert old.calls == [ParsedCall("f", {"a": 1}), ParsedCall("g", {})]
    fallback = parse_mistral('[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}] and then text')  # regex fallback
    assert fallback.calls == [ParsedCall("f", {"a": 1})]
    new = parse_mistral('Checking.[TOOL_CALLS]get_weather{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"tz": "CET"}'
                        '[TOOL_CALLS]lookup[CALL_ID]abcdefghi[ARGS]{"q": [1, 2]}')
    assert new.calls == [ParsedCall("get_weather", {"city": "Paris"}), ParsedCall("get_time", {"tz": "CET"}),
                         ParsedCall("lookup", {"q": [1, 2]})] and new.content == "Checking."
    assert "arguments are not JSON" in parse_mistral('[TOOL_CALLS]f{"a": 1').error
    assert "several" not in (parse_mistral('[TOOL_CALLS][{"name": "f", "arguments": {}}]').error or "")
    assert "list form takes one" in parse_mistral('[TOOL_CALLS][{"name": "f", "arguments": {}}][TOOL_CALLS][]').error
    assert "no call" in parse_mistral("[TOOL_CALLS]nothing here").error


def test_pythonic_rules():
    assert parse_pythonic("I cannot help with that.") == ParsedAnswer([], "I cannot help with that.")
    ok = parse_pythonic('  [get_weather(city="Paris", days=-2, opts={"a": [1, None]}), now()]\n')
    assert ok.calls == [ParsedCall("get_weather", {"city": "Paris", "days": -2, "opts": {"a": [1, None]}}),
                        ParsedCall("now", {})]
    assert parse_pythonic('[f("positional", a=1)]').calls == [ParsedCall("f", {"a": 1})]  # positional: ignored
    assert "literals" in parse_pythonic("[f(a=g(1))]").error
    assert "literals" in parse_pythonic("[f(a=__import__('os').system('true'))]").error  # never run
    assert "literals" in parse_pythonic("[f(a=(1, 2))]").error
    assert "not Python" in parse_pythonic("[f(a=1]").error
    assert "** arguments" in parse_pythonic("[f(**{'a': 1})]").error


def test_calls_in_the_structure_the_bfcl_checker_takes():
    from tasks.evaluation.bfcl_checker import check_calls, is_call_list

    decoded = bfcl_calls(parse_tool_calls('<tool_call>{"name": "calc_area", "arguments": {"base": 10, "height": 5}}'
                                          "</tool_call>", "hermes").calls)
    assert decoded == [{"calc_area": {"base": 10, "height": 5}}] and is_call_list(decoded)
    function = {"name": "calc_area", "parameters": {"type": "dict", "properties": {
        "base": {"type": "integer"}, "height": {"type": "integer"}}, "required": ["base", "height"]}}
    assert check_calls("simple", [function], decoded, [{"calc_area": {"base": [10], "height": [5]}}]).valid


def test_unknown_format_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral, pythonic"):
        parse_tool_calls("x", "xml")


# -------------------------------------------------------------------------------------------- hostile text

MARKERS = ["<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "{", "}", "[",
           "]", "(", ")", '"', "'", ";", ",", "=", ":", "\\", "</think>", "name", "arguments", "f(", "\x00", "\ud800"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(MARKERS) | st.text(max_size=12), max_size=30),
       fmt=st.sampled_from(TOOL_FORMATS))
def test_hostile_text_never_raises(parts, fmt):
    parsed = parse_tool_calls("".join(parts), fmt)
    assert isinstance(parsed, ParsedAnswer)
    assert all(isinstance(c.name, str) for c in parsed.calls)
    assert not (parsed.calls and parsed.error)


@pytest.mark.parametrize("text", [
    "[" * 50_000, "{" * 50_000, '{"name": "f", "arguments": ' + "[" * 20_000 + "]" * 20_000 + "}",
    "<tool_call>" * 8_000, "[TOOL_CALLS]" * 8_000, "[TOOL_CALLS][{" * 7_000, "[f(a=" + "[" * 30_000 + "])]",
    '<tool_call>{"name": "f", "arguments": ' + "[" * 30_000 + "}</tool_call>", "{}" * 40_000,
    "[f(a=1)]" + " " * (MAX_TEXT_CHARS + 1), "x" * 10 + "<|python_tag|>" + "{" * 40_000,
])
def test_deep_long_and_repeated_input_is_an_error_quickly(text):
    started = time.monotonic()
    for fmt in TOOL_FORMATS:
        parsed = parse_tool_calls(text, fmt)
        assert parsed.calls == [] or all(isinstance(c.arguments, dict | list) for c in parsed.calls)
    assert time.monotonic() - started < 20  # a deadline against quadratic scans, not a speed figure


def test_non_text_answers_are_an_error():
    assert parse_tool_calls(None, "hermes").error == "hermes: the answer is a NoneType, not text"
    assert parse_tool_calls(json.loads("[1]"), "pythonic").error.startswith("pythonic: the answer is a list")
