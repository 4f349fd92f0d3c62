"""Tool-call formats (issue 21 item 2): each family's parser reads back the calls real chat templates write
(llama.cpp's copies of the models' templates, rendered with transformers' renderer), follows vLLM's rules on
the cases that matter, and never raises on hostile text."""

from __future__ import annotations

import json
import keyword
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import ToolCall
from tasks.formats.call_format import render_calls
from tasks.formats.chat_templates import ChatTemplate, load_family, render
from tasks.formats.tool_call_formats import (
    DETECTION_ORDER,
    MAX_TEXT_CHARS,
    TOOL_FORMATS,
    ParsedAnswer,
    ParsedCall,
    bfcl_calls,
    detect_tool_format,
    parse_apertus,
    parse_deepseek_v3,
    parse_deepseek_v4,
    parse_deepseek_v31,
    parse_deepseek_v32,
    parse_gemma4,
    parse_glm45,
    parse_glm47,
    parse_harmony,
    parse_hermes,
    parse_kimi_k2,
    parse_kimi_k3,
    parse_lfm2,
    parse_llama3_json,
    parse_minimax_m2,
    parse_mistral,
    parse_nemotron_nano_v2,
    parse_pythonic,
    parse_qwen3_coder,
    parse_seed_oss,
    parse_tool_calls,
    probe_messages,
    probe_tools,
    rendered_assistant_turn,
    schema_value,
)
from toolace.chat_template_files import find_templates_dir

TEMPLATES = find_templates_dir()
needs_templates = pytest.mark.skipif(TEMPLATES is None, reason="llama.cpp chat templates not extracted (make setup)")

# family -> the format its template writes calls in (None: a format none of our parsers reads)
FAMILY_FORMATS = {
    "qwen2.5": "hermes", "qwen3": "hermes", "hermes3": "hermes", "granite4": "hermes",
    "llama3.1": "llama3_json", "llama3.2": "llama3_json", "llama3.3": "llama3_json",
    "mistral-nemo": "mistral", "mistral-small3": "mistral",
    "qwen3.5": "qwen3_coder", "deepseek-v3": "deepseek_v31", "gemma4": "gemma4",
}
# llama.cpp's templates of families outside the gate's list, by file -> the format they write (None: none we read)
FILE_FORMATS = {
    "Qwen3-Coder.jinja": "qwen3_coder", "StepFun3.5-Flash.jinja": "qwen3_coder", "GLM-4.6.jinja": "glm45",
    "inclusionai-ling-3.0-flash.jinja": "glm45", "poolside-Laguna-XS.2.jinja": "glm45",
    "GigaChat3-10B-A1.8B.jinja": "llama3_json",  # writes only the first of two calls: read on one call
    # a <seed:tool_call> per call: qwen3_coder reads one call right, but two calls as one; seed_oss reads both
    "ByteDance-Seed-OSS.jinja": "seed_oss",
    "poolside-Laguna-S-2.1.jinja": "glm47",  # <tool_call>NAME<arg_key>: no line break after the name
    "GLM-4.7-Flash.jinja": "glm47", "Spark2.5.jinja": "glm47",
    # generation prompts that open a thought the turn does not keep: the turn is found with a sentinel
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": "qwen3_coder", "Qwen-QwQ-32B.jinja": "hermes",
    "google-gemma-4-31B-it-interleaved.jinja": "gemma4",
    "moonshotai-Kimi-K2.jinja": "kimi_k2",
    "openai-gpt-oss-120b.jinja": "harmony",  # one call per message: writes only the first of two
    "MiniMax-M2.jinja": "minimax_m2", "deepseek-ai-DeepSeek-V3.2.jinja": "deepseek_v32",
    "deepseek-ai-DeepSeek-V4.jinja": "deepseek_v4", "deepseek-ai-DeepSeek-V4-Flash-0731.jinja": "deepseek_v4",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "deepseek_v3", "LFM2.5-8B-A1B.jinja": "lfm2",
    "Kimi-K3.jinja": "kimi_k3", "Apertus-8B-Instruct.jinja": "apertus",
    # opens a thought before a text turn, not before calls: the turn is what follows the chat it shares
    "NVIDIA-Nemotron-Nano-v2.jinja": "nemotron_nano_v2",
    "MiniMax-M3.jinja": None, "meetkai-functionary-medium-v3.1.jinja": None,
}
ONE_CALL_FILES = {"GigaChat3-10B-A1.8B.jinja", "openai-gpt-oss-120b.jinja"}
SINGLE_CALL_ONLY = {"llama3.1", "llama3.2", "llama3.3"}


def _template(family: str):
    assert TEMPLATES is not None
    return load_family(family, TEMPLATES)


def _render_turn(family: str | ChatTemplate, calls: list[tuple[str, dict]], tools: list[dict] | None = None) -> str:
    """The text a family's template (or a template file's) writes for an assistant turn making ``calls`` (its
    end-of-turn cut off, as generation stops there)."""
    template = family if isinstance(family, ChatTemplate) else _template(family)
    messages = [{"role": "user", "content": "Do it."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": f"abcdefgh{k}", "type": "function", "function": {"name": name, "arguments": arguments}}
                    for k, (name, arguments) in enumerate(calls)]}]
    tools = tools or tools_for(calls)
    turn = rendered_assistant_turn(lambda m, g: render(template, m, tools, g), messages).rstrip()
    return turn[: -len(template.eos_token)] if template.eos_token and turn.endswith(template.eos_token) else turn


def _json_schema(value: Any) -> dict:
    """A parameter's schema for ``value``: null as an optional string (Hermes 3's template recurses without end on
    ``{"type": "null"}``)."""
    if value is None:
        return {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
                     dict: "object"}[type(value)]}


def tools_for(calls: list[tuple[str, dict]]) -> list[dict]:
    """The tools offered for ``calls``, each argument typed as its value is (what the model was shown, and what
    the formats that write values as text read them back by)."""
    properties: dict[str, dict[str, dict]] = {}
    for name, arguments in calls:
        properties.setdefault(name, {}).update({k: _json_schema(v) for k, v in arguments.items()})
    return [{"type": "function", "function": {"name": name, "description": "A tool.", "parameters": {
        "type": "object", "properties": props}}} for name, props in properties.items()]


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
    calls = [("get_weather_forecast", ARGUMENTS)]
    parsed = parse_tool_calls(_render_turn(family, calls), fmt, tools_for(calls))
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall("get_weather_forecast", ARGUMENTS)]


def _file_template(file: str) -> ChatTemplate:
    assert TEMPLATES is not None
    return ChatTemplate(file, (TEMPLATES / file).read_text(encoding="utf-8"))


@needs_templates
@pytest.mark.parametrize("file", sorted(FILE_FORMATS))
def test_other_real_templates_formats_are_detected_or_refused_with_the_reason(file):
    template = _file_template(file)
    found, why = detect_tool_format(lambda m, g: render(template, m, probe_tools(), g))
    assert found == FILE_FORMATS[file], why
    if FILE_FORMATS[file] is None:
        assert "none of the formats" in why


@needs_templates
def test_a_format_that_reads_one_call_right_but_two_as_one_is_not_taken():
    """qwen3_coder reads Seed-OSS's one <seed:tool_call> block right, but its two blocks as one call: without
    seed_oss the template is refused, saying so, rather than read wrong."""
    template = _file_template("ByteDance-Seed-OSS.jinja")
    formats = tuple(f for f in DETECTION_ORDER if f != "seed_oss")
    found, why = detect_tool_format(lambda m, g: render(template, m, probe_tools(), g), formats=formats)
    assert found is None and "does not read as two" in why and "qwen3_coder" in why


# LFM2.5's template writes a string between single quotes as it is (one holding a quote is no Python: not read, by
# vLLM's parser either) and an object as JSON (a true, false or null in it is no Python literal)
FILE_ARGUMENTS = {"LFM2.5-8B-A1B.jinja": {**ARGUMENTS, "code": 'print("hi"); {}'},
                  # Seed-OSS's template writes None as Python's "None", which vLLM's seed_oss keeps as text (it reads
                  # only "null" as None)
                  "ByteDance-Seed-OSS.jinja": {k: v for k, v in ARGUMENTS.items() if k != "note"}}


@needs_templates
@pytest.mark.parametrize("file", [f for f, fmt in FILE_FORMATS.items() if fmt])
def test_calls_rendered_by_other_real_templates_are_read_back(file):
    template = _file_template(file)
    calls = [("get_weather_forecast", FILE_ARGUMENTS.get(file, ARGUMENTS)), ("get_time", {"zone": "CET", "h24": False})]
    calls = calls[:1] if file in ONE_CALL_FILES else calls
    parsed = parse_tool_calls(_render_turn(template, calls), FILE_FORMATS[file], tools_for(calls))
    assert parsed.error is None, parsed.error
    assert [(c.name, c.arguments) for c in parsed.calls] == calls


@needs_templates
@pytest.mark.parametrize("family", [f for f, fmt in FAMILY_FORMATS.items() if fmt and f not in SINGLE_CALL_ONLY])
def test_parallel_calls_rendered_by_a_real_template_are_read_back_in_order(family):
    calls = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET", "h24": False}),
             ("get_weather", {"city": "Lima", "days": 2})]
    parsed = parse_tool_calls(_render_turn(family, calls), FAMILY_FORMATS[family], tools_for(calls))
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
       family=st.sampled_from(["qwen2.5", "llama3.1", "mistral-nemo", "mistral-small3", "qwen3.5", "deepseek-v3"]))
def test_any_arguments_round_trip_through_real_templates(name, arguments, family):
    calls = [(name, arguments)]
    parsed = parse_tool_calls(_render_turn(family, calls), FAMILY_FORMATS[family], tools_for(calls))
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall(name, arguments)]


def _minimax_top_level(value: Any) -> bool:
    """MiniMax M2 writes a string argument bare and vLLM's parser strips it and reads null/none/nil as None (any
    type), so such strings cannot come back; nested ones are JSON and can."""
    return not isinstance(value, str) or (value == value.strip() and value.lower() not in ("null", "none", "nil")
                                          and "</" not in value)


@needs_templates
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, arguments=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                                             JSON_VALUES.filter(_minimax_top_level), max_size=5)
       .filter(lambda a: "</think>" not in json.dumps(a)),  # the answer is what follows the last </think>
       file=st.sampled_from(["MiniMax-M2.jinja", "deepseek-ai-DeepSeek-V3.2.jinja", "deepseek-ai-DeepSeek-V4.jinja",
                             "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "Kimi-K3.jinja",
                             "Apertus-8B-Instruct.jinja", "NVIDIA-Nemotron-Nano-v2.jinja"]))
def test_any_arguments_round_trip_through_minimax_and_deepseek_templates(name, arguments, file):
    calls = [(name, arguments)]
    parsed = parse_tool_calls(_render_turn(_file_template(file), calls), FILE_FORMATS[file], tools_for(calls))
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall(name, arguments)]


def _seed_writes_back(value: Any) -> bool:
    """Seed-OSS's template writes a top-level value as Python's ``str`` of it, bare: None comes out as "None" (vLLM's
    seed_oss reads only "null" as None), and a string reading null, with a line break at an end or holding the
    format's tags cannot come back."""
    if value is None:
        return False
    if not isinstance(value, str):
        return True
    return (value.lower() != "null" and not value.startswith("\n") and not value.endswith("\n")
            and not any(tag in value for tag in ("</parameter>", "<parameter=", "</function>", "<function=", "<seed:",
                                                 "</seed:")))


@needs_templates
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, arguments=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                                             JSON_VALUES.filter(_seed_writes_back), max_size=5)
       .filter(lambda a: "</think>" not in json.dumps(a)))
def test_any_arguments_round_trip_through_seed_osss_template(name, arguments):
    calls = [(name, arguments)]
    template = _file_template("ByteDance-Seed-OSS.jinja")
    parsed = parse_tool_calls(_render_turn(template, calls), "seed_oss", tools_for(calls))
    assert parsed.error is None, parsed.error
    assert parsed.calls == [ParsedCall(name, arguments)]


def _gemma_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects whose keys are names: Gemma 4 writes a nested object's keys bare (``{a:1}``), so a key with
    blanks, ``:`` or ``,`` cannot come back (nor in vLLM's parser)."""
    return st.lists(inner, max_size=4) | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True),
                                                         inner, max_size=4)


# Gemma 4 writes numbers bare and reads one as a float only when it has a "." (as vLLM's parser does): a float
# Python writes with an exponent (1e+16) comes back as text, so these floats are written without one
GEMMA_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: "e" not in repr(f))
    | st.text(max_size=20).filter(lambda t: '<|"|>' not in t), _gemma_containers, max_leaves=12)


@needs_templates
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, arguments=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), GEMMA_VALUES,
                                             max_size=5))
def test_any_arguments_round_trip_through_gemma4s_template(name, arguments):
    calls = [(name, arguments)]
    parsed = parse_tool_calls(_render_turn("gemma4", calls), "gemma4")
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


WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "units": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "hourly": {"type": "boolean"}, "ratio": {"type": "number"}, "spots": {"type": "array"},
    "filters": {"type": "object"}}}}}]


def test_qwen3_coder_rules():
    assert parse_qwen3_coder("It is sunny.") == ParsedAnswer([], "It is sunny.")
    two = parse_qwen3_coder(
        "Let me look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSão Paulo\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n<parameter=units>\nNone\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nLima", WEATHER_TOOLS)  # the last one left open
    assert two.calls == [ParsedCall("get_weather", {"city": "São Paulo", "days": 3, "units": None}),
                         ParsedCall("get_weather", {"city": "Lima"})] and two.content == "Let me look.\n"
    # the schema types the values; a value that does not convert stays text; no schema: every value is text
    typed = ("<tool_call>\n<function=get_weather>\n<parameter=extra>\n7\n</parameter>\n<parameter=days>\nthree\n"
             "</parameter>\n<parameter=hourly>\nTrue\n</parameter>\n<parameter=ratio>\n2.0\n</parameter>\n"
             "<parameter=spots>\n(1, 'a')\n</parameter>\n<parameter=filters>\n{'min': -1}\n</parameter>\n</function>\n"
             "</tool_call>")
    assert parse_qwen3_coder(typed, WEATHER_TOOLS).calls == [ParsedCall("get_weather", {
        "extra": "7", "days": "three", "hourly": True, "ratio": 2, "spots": [1, "a"], "filters": {"min": -1}})]
    # as in vLLM, a parameter the tool does not have, after one it has, is read as part of the value before it
    swallowed = parse_qwen3_coder("<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n"
                                  "<parameter=extra>\n7\n</parameter>\n</function>\n</tool_call>", WEATHER_TOOLS)
    assert swallowed.calls == [ParsedCall("get_weather", {
        "city": "Rome\n</parameter>\n<parameter=extra>\n7\n</parameter>"})]
    assert parse_qwen3_coder(typed).calls[0].arguments["days"] == "three"
    assert parse_qwen3_coder(typed).calls[0].arguments["hourly"] == "True"
    # a </parameter> inside a value that is not followed by another parameter or the end is the value's text
    code = parse_qwen3_coder("<tool_call>\n<function=get_weather>\n<parameter=city>\na </parameter> b\n</parameter>"
                             "\n</function>\n</tool_call>", WEATHER_TOOLS)
    assert code.calls == [ParsedCall("get_weather", {"city": "a </parameter> b"})]
    # a missing </parameter>: the next known parameter ends the value
    missing = parse_qwen3_coder("<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n<parameter=days>\n2\n"
                                "</parameter>\n</function>\n</tool_call>", WEATHER_TOOLS)
    assert missing.calls == [ParsedCall("get_weather", {"city": "Oslo", "days": 2})]
    # no <tool_call> block: the whole text is read; a name that is a template's leftover is no call
    assert parse_qwen3_coder("<function=f>\n<parameter=a>\n1\n</parameter>\n</function>").calls == [
        ParsedCall("f", {"a": "1"})]
    phantom = parse_qwen3_coder("<tool_call>\n<function={{ tc.name }}>\n</function>\n</tool_call>")
    assert phantom.calls == [] and "no <function=NAME>" in phantom.error
    thought = parse_tool_calls("<think>maybe <function=x></think>\n\n<tool_call>\n<function=get_weather>\n"
                               "</function>\n</tool_call>", "qwen3_coder", WEATHER_TOOLS)
    assert thought.calls == [ParsedCall("get_weather", {})] and thought.content is None


def test_schema_value_follows_vllm_qwen3_coder():
    assert schema_value("7", None) == "7" and schema_value("null", {"type": "string"}) == "null"
    assert schema_value("null", {"type": ["string", "null"]}) is None  # a type list reads as neither string nor null
    assert schema_value("none", {"type": "integer"}) is None and schema_value("12", {"type": "int64"}) == 12
    assert schema_value("1.5", {"type": "number"}) == 1.5 and schema_value("1e400", {"type": "number"}) == "1e400"
    assert schema_value("nan", {"type": "float"}) == "nan" and schema_value("yes", {"type": "boolean"}) is False
    assert schema_value('"{\'a\': 1}"', {"type": "object"}) == {"a": 1}  # a Python repr written as a JSON string
    assert schema_value("[1, 2", {"type": "array"}) == "[1, 2"
    assert schema_value("{1, 2}", {"type": "array"}) == "{1, 2}"  # a set: JSON cannot hold it, so it stays text
    assert schema_value("__import__('os').system('true')", {"type": "object"}) == "__import__('os').system('true')"
    assert schema_value("[" * 5_000 + "]" * 5_000, {"type": "array"}) == "[" * 5_000 + "]" * 5_000  # too deep: text


def test_glm45_rules():
    assert parse_glm45("Hi there") == ParsedAnswer([], "Hi there")
    two = parse_glm45("Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value> Rome </arg_value>\n"
                      "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n<arg_key>spots</arg_key><arg_value>['a', 1]"
                      "</arg_value>\n</tool_call>\n<tool_call>now\n</tool_call>", WEATHER_TOOLS)
    assert two.calls == [ParsedCall("get_weather", {"city": " Rome ", "days": 2, "spots": ["a", 1]}),
                         ParsedCall("now", {})] and two.content == "Checking.\n"
    assert parse_glm45("<tool_call>f\n<arg_key>x</arg_key><arg_value>abc</arg_value></tool_call>").calls == [
        ParsedCall("f", {"x": "abc"})]  # neither JSON nor a literal: text
    unclosed = parse_glm45("<tool_call>f\n<arg_key>x</arg_key><arg_value>1</arg_value>")
    assert unclosed.calls == [] and "no closed" in unclosed.error
    assert parse_glm45("<tool_call>f<arg_key>x</arg_key><arg_value>1</arg_value></tool_call>").calls == []


def test_glm47_rules():
    inline = parse_glm47("<tool_call>get_weather<arg_key>city</arg_key>\\n<arg_value>Rome</arg_value>"
                         "<arg_key>days</arg_key> <arg_value>2</arg_value></tool_call>", WEATHER_TOOLS)
    assert inline.calls == [ParsedCall("get_weather", {"city": "Rome", "days": 2})]  # a literal \\n between them
    assert parse_glm47("<tool_call>now</tool_call>").calls == [ParsedCall("now", {})]
    assert parse_glm45("<tool_call>now</tool_call>").calls == []  # GLM-4.5 wants the name's line to end


def test_gemma4_rules():
    assert parse_gemma4("No call.") == ParsedAnswer([], "No call.")
    text = ('Sure. <|tool_call>call:get_weather{city:<|"|>São Paulo, {centre}<|"|>,days:3,ratio:-0.5,hourly:true,'
            'units:null,spots:[<|"|>a<|"|>,1,[2.0]],filters:{min:{deep:<|"|>x]<|"|>},n:7}}<tool_call|>'
            '<|tool_call>call:now{}<tool_call|><|tool_response>')
    two = parse_gemma4(text)
    assert two.calls == [ParsedCall("get_weather", {"city": "São Paulo, {centre}", "days": 3, "ratio": -0.5,
                                                    "hourly": True, "units": None, "spots": ["a", 1, [2.0]],
                                                    "filters": {"min": {"deep": "x]"}, "n": 7}}),
                         ParsedCall("now", {})] and two.content == "Sure."
    assert parse_gemma4("<|tool_call>call:f{n:1e5,x:abc}<tool_call|>").calls == [ParsedCall("f", {"n": "1e5",
                                                                                                 "x": "abc"})]
    unclosed = parse_gemma4('<|tool_call>call:f{a:<|"|>b')
    assert unclosed.calls == [] and "no complete" in unclosed.error
    # an object or list left open inside a call: a bare value at its end may be cut short, and is left out
    assert parse_gemma4("<|tool_call>call:f{a:{b:1}<tool_call|>").calls == [ParsedCall("f", {"a": {}})]
    assert parse_gemma4("<|tool_call>call:f{a:[1,2.}<tool_call|>").calls == [ParsedCall("f", {"a": [1]})]
    deep = parse_gemma4("<|tool_call>call:f{a:" + "{a:" * 500 + "}" * 501 + "<tool_call|>")
    assert deep.calls == [] and "nested too deeply" in deep.error


def test_a_turn_the_generation_prompt_does_not_start_is_found_with_a_sentinel():
    """Gemma 4's generation prompt opens an empty thought (``<|channel>thought\\n<channel|>``) that a past turn does
    not keep: the turn is what follows the chat before it."""
    template = _template("gemma4")
    tools = probe_tools()
    turn = rendered_assistant_turn(lambda m, g: render(template, m, tools, g), probe_messages())
    assert turn.startswith('<|tool_call>call:tcprobe_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>')
    assert not render(template, probe_messages(), tools, False).startswith(
        render(template, probe_messages()[:1], tools, True))


@needs_templates
def test_a_turn_neither_the_prompt_nor_a_sentinel_starts_is_what_follows_the_shared_chat():
    """Nemotron Nano 2 opens a thought before a text turn (and in its generation prompt) but writes calls straight
    after ``Assistant``: the turn is what follows what the whole shares with them, cut at a line's end."""
    template = _file_template("NVIDIA-Nemotron-Nano-v2.jinja")
    tools = probe_tools()
    turn = rendered_assistant_turn(lambda m, g: render(template, m, tools, g), probe_messages())
    assert turn.startswith('<TOOLCALL>[{"name": "tcprobe_weather", "arguments": {"city": "Paris", "days": 3}}]')


def test_a_turn_is_not_guessed_when_the_shared_chat_lacks_the_message_before_it():
    def render_fn(messages: list[dict], generation_prompt: bool) -> str:  # never shows the user's message
        last = messages[-1]
        text = last["content"] if last["role"] == "assistant" else ""
        return "SYSTEM\nassistant: " + ("CALL" if last.get("tool_calls") else "<think>" + text)

    with pytest.raises(ValueError, match="does not render the chat before an assistant turn"):
        rendered_assistant_turn(render_fn, probe_messages())


def test_nemotron_nano_v2_rules():
    assert parse_nemotron_nano_v2("Plain.") == ParsedAnswer([], "Plain.")
    two = parse_nemotron_nano_v2('Sure.<TOOLCALL>[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": '
                                 '"{\\"b\\": 2}"}]</TOOLCALL> and <TOOLCALL>{"name": "h", "arguments": {}}</TOOLCALL>')
    # a second block is read too; brackets are added where missing; a string holding an object is that object
    assert two == ParsedAnswer([ParsedCall("f", {"a": 1}), ParsedCall("g", {"b": 2}), ParsedCall("h", {})], "Sure.")
    # a call without a name or arguments is skipped, as vLLM skips it; an open block is not read
    assert parse_nemotron_nano_v2('<TOOLCALL>[{"arguments": {}}, {"name": 3, "arguments": {}}, {"name": "f", '
                                  '"arguments": {}}]</TOOLCALL>').calls == [ParsedCall("f", {})]
    for text, reason in [('<TOOLCALL>[{"name": "f", "arguments": {}}]', "no closed <TOOLCALL>"),
                         ('<TOOLCALL>[{"name": "f", "arguments": {]</TOOLCALL>', "not JSON"),
                         ('<TOOLCALL>[{"name": "f", "arguments": [1]}]</TOOLCALL>', "arguments are a list"),
                         ('<TOOLCALL>[{"name": "f", "arguments": "x"}]</TOOLCALL>', "a string that is not JSON")]:
        parsed = parse_nemotron_nano_v2(text)
        assert parsed.calls == [] and reason in parsed.error, (text, parsed)


def test_kimi_k2_rules():
    assert parse_kimi_k2("Hello.") == ParsedAnswer([], "Hello.")
    text = ('Let me see.<|tool_calls_section_begin|><|tool_call_begin|> functions.get_weather:0 '
            '<|tool_call_argument_begin|>{"city": "Rome"} <|tool_call_end|><|tool_call_begin|>now:1'
            '<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>')
    two = parse_kimi_k2(text)
    assert two.calls == [ParsedCall("get_weather", {"city": "Rome"}), ParsedCall("now", {})]
    assert two.content == "Let me see."
    no_index = parse_kimi_k2("<|tool_calls_section_begin|><|tool_call_begin|>f<|tool_call_argument_begin|>{}"
                             "<|tool_call_end|>")
    assert no_index.calls == [] and "no complete" in no_index.error  # the id needs its :N
    bad = parse_kimi_k2("<|tool_calls_section_begin|><|tool_call_begin|>f:0<|tool_call_argument_begin|>{x}"
                        "<|tool_call_end|>")
    assert "call 1 (f): arguments are not JSON" in bad.error


def test_harmony_rules():
    assert parse_harmony("<|channel|>final<|message|>It is sunny.") == ParsedAnswer(
        [], "<|channel|>final<|message|>It is sunny.")
    text = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_weather <|constrain|>json<|message|>{"city": "Rome"}<|call|>')
    assert parse_harmony(text).calls == [ParsedCall("get_weather", {"city": "Rome"})]
    written = ' to=functions.get_weather<|channel|>commentary<|message|>{"city": "Rome"}<|call|>'  # no type: JSON
    assert parse_harmony(written).calls == [ParsedCall("get_weather", {"city": "Rome"})]
    assert "not JSON" in parse_harmony(" to=functions.f<|channel|>commentary<|message|>{x}<|call|>").error
    typed = parse_harmony(" to=functions.f<|channel|>commentary code<|message|>print(1)<|call|>")
    assert typed.calls == [] and "content type 'code'" in typed.error


def test_deepseek_v31_rules():
    assert parse_deepseek_v31("Plain.") == ParsedAnswer([], "Plain.")
    text = ('Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Rome"}'
            '<｜tool▁call▁end｜><｜tool▁call▁begin｜>now<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    two = parse_deepseek_v31(text)
    assert two.calls == [ParsedCall("get_weather", {"city": "Rome"}), ParsedCall("now", {})] and two.content == "Sure."
    bad = parse_deepseek_v31('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{"a": <｜tool▁call▁end｜>')
    assert bad.calls == [] and "call 1 (f): arguments are not JSON" in bad.error
    # vLLM's pattern does not cross a line: a call whose arguments span lines is not read
    split = parse_deepseek_v31('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{"a":\n1}<｜tool▁call▁end｜>')
    assert split.calls == [] and "no complete" in split.error


def test_deepseek_v3_rules():
    begin, sep, end = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "\n```<｜tool▁call▁end｜>"
    assert parse_deepseek_v3("Plain.") == ParsedAnswer([], "Plain.")
    text = (f'Sure.{begin}function{sep}get_weather\n```json\n{{"city": "Rome"}}{end}\n<｜tool▁call▁begin｜>function'
            f'{sep}now\n```json\n{{}}{end}<｜tool▁calls▁end｜>')
    two = parse_deepseek_v3(text)
    assert two.calls == [ParsedCall("get_weather", {"city": "Rome"}), ParsedCall("now", {})] and two.content == "Sure."
    bad = parse_deepseek_v3(f'{begin}function{sep}f\n```json\n{{"a": }}{end}')
    assert bad.calls == [] and "call 1 (f): arguments are not JSON" in bad.error
    # vLLM's pattern does not cross lines: arguments written over two lines are no call
    split = parse_deepseek_v3(f'{begin}function{sep}f\n```json\n{{"a":\n1}}{end}')
    assert split.calls == [] and "no complete" in split.error
    # vLLM's ToolCall takes only the type "function": another type fails its whole reading, the good call too
    typed = parse_deepseek_v3(f"{begin}function{sep}f\n```json\n{{}}{end}"
                              f"<｜tool▁call▁begin｜>tool{sep}g\n```json\n{{}}{end}")
    assert typed.calls == [] and "call 2 (g): its type is 'tool', not 'function'" in typed.error
    # the type runs to the line's last separator, the name from there to the line's end
    assert parse_deepseek_v3(f"{begin}function{sep}a b{sep}c\n```json\n{{}}{end}").error.endswith(
        f"its type is 'function{sep}a b', not 'function'")
    assert parse_deepseek_v3(f"{begin}function{sep}f(x) \n```json\n[1]{end}").calls == [ParsedCall("f(x) ", [1])]


def test_lfm2_rules():
    assert parse_lfm2("Plain.") == ParsedAnswer([], "Plain.")
    two = parse_lfm2("Sure. <|tool_call_start|>[f(a=1), g(b='x', c=[True, None])]<|tool_call_end|> Done.")
    assert two.calls == [ParsedCall("f", {"a": 1}), ParsedCall("g", {"b": "x", "c": [True, None]})]
    assert two.content == "Sure.\nDone."
    # LFM2 may echo its calls after the end token and close them again: that echo is not content
    echo = parse_lfm2("<|tool_call_start|>[f()]<|tool_call_end|>[f()]<|tool_call_end|>")
    assert echo == ParsedAnswer([ParsedCall("f", {})], None)
    assert parse_lfm2("<|tool_call_start|>[f(a=2)]").calls == [ParsedCall("f", {"a": 2})]  # no end token: to the end
    for text, reason in [("<|tool_call_start|>f(a=1)<|tool_call_end|>", "no [...] call list"),
                         ("<|tool_call_start|>[f(a='it's')]<|tool_call_end|>", "not Python"),
                         ("<|tool_call_start|>[f(a=x)]<|tool_call_end|>", "must be literals"),
                         ("<|tool_call_start|>[1, f()]<|tool_call_end|>", "not a list of function calls")]:
        parsed = parse_lfm2(text)
        assert parsed.calls == [] and parsed.content == text and reason in parsed.error, (text, parsed)


def test_kimi_k3_rules():
    o, c, s = "<|open|>", "<|close|>", "<|sep|>"
    assert parse_kimi_k3("Plain.") == ParsedAnswer([], "Plain.")
    text = (f'{o}response{s}Checking.{c}response{s}{o}tools{s}{o}call tool="get_weather" index="1"{s}'
            f'{o}argument key="city" type="string"{s} 42 {c}argument{s}{o}argument key="days" type="number"{s}3'
            f'{c}argument{s}{c}call{s}{o} call  tool="a&amp;b&quot;" {s}{o}argument key="x" type="object"{s}{{bad'
            f'{c}argument{s}{c} call {s}{c}tools{s}')
    two = parse_kimi_k3(text)
    # a string is the raw text (blanks kept); another type is JSON, else the raw text; attributes are unescaped
    assert two.calls == [ParsedCall("get_weather", {"city": " 42 ", "days": 3}), ParsedCall('a&b"', {"x": "{bad"})]
    assert two.content == "Checking."
    nameless = parse_kimi_k3(f'{o}tools{s}{o}call index="1"{s}{c}call{s}')
    assert nameless.calls == [] and "no complete call" in nameless.error
    unclosed = parse_kimi_k3(f'{o}tools{s}{o}call tool="f"{s}{o}argument key="a"{s}1')
    assert unclosed.calls == [] and "no complete call" in unclosed.error
    # JSON nested past the decoder's limit fails vLLM's whole reading (its except takes only JSONDecodeError)
    deep = parse_kimi_k3(f'{o}tools{s}{o}call tool="f"{s}{o}argument key="a" type="array"{s}' + "[" * 5000 + "]" * 5000
                         + f"{c}argument{s}{c}call{s}")
    assert deep.calls == [] and "kimi_k3: a value's" in deep.error


def test_seed_oss_rules():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer"}, "x": {"type": "number"}, "ok": {"type": "boolean"}, "s": {"type": "string"},
        "o": {"type": "object"}, "a": {"type": "array"}, "u": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}}}]
    assert parse_seed_oss("Plain.", tools) == ParsedAnswer([], "Plain.")
    text = ("<seed:think>plan <function=no></seed:think>Sure.<seed:tool_call>\n<function=f>\n<parameter=n>\n7\n"
            "</parameter>\n<parameter=x>2.0</parameter>\n<parameter=ok>yes</parameter>\n<parameter=s>null"
            "</parameter>\n<parameter=o>{'k': [1]}</parameter>\n<parameter=a>[true]</parameter>\n<parameter=u>5"
            "</parameter>\n<parameter=extra>1</parameter>\n</function>\n</seed:tool_call>")
    (call,) = parse_seed_oss(text, tools).calls
    # one line break each side dropped; a whole number is an int; anything but "true" is False; "null" is None even
    # for a string; an object is JSON, else Python; an array is Python only (JSON's true stays text); anyOf names no
    # type, so its value is text; a key the tool lacks stays text
    assert call == ParsedCall("f", {"n": 7, "x": 2, "ok": False, "s": None, "o": {"k": [1]}, "a": "[true]",
                                    "u": "5", "extra": "1"})
    assert parse_seed_oss(text, tools).content == "<seed:think>plan <function=no></seed:think>Sure."
    # no block: the whole text is read; an open block and an open function run to the end
    assert parse_seed_oss("<function=f>\n<parameter=n>1</parameter>", tools).calls == [ParsedCall("f", {"n": 1})]
    assert parse_seed_oss("<seed:tool_call><function=f><parameter=n>2", tools).calls == [ParsedCall("f", {"n": 2})]
    for text, reason in [("<function=f", "call 1: no '>' after its name"),
                         ("<function=f><parameter=n", "a parameter has no '>'"),
                         ("<function=f><parameter=x>inf</parameter></function>", "is infinite")]:
        parsed = parse_seed_oss(text, tools)
        assert parsed.calls == [] and reason in parsed.error, (text, parsed)
    assert parse_seed_oss("<function=f><parameter=x>nan</parameter></function>", tools).calls[0].arguments == {
        "x": "nan"}
    # an object JSON cannot read for any ValueError (here an integer over Python's digit limit) is read on as text;
    # JSON nested past the decoder's limit fails the whole reading
    long_number = "{" + '"k": ' + "9" * 5000 + "}"
    assert parse_seed_oss(f"<function=f><parameter=o>{long_number}</parameter></function>", tools).calls[0].arguments \
        == {"o": long_number}
    deep = parse_seed_oss("<function=f><parameter=o>" + "[" * 5000 + "]" * 5000 + "</parameter></function>", tools)
    assert deep.calls == [] and "seed_oss: a value's" in deep.error


def test_apertus_rules():
    p, s = "<|tools_prefix|>", "<|tools_suffix|>"
    assert parse_apertus("Plain.") == ParsedAnswer([], "Plain.")
    two = parse_apertus(f'Sure. {p}[{{"f": {{"a": 1}}}}, {{"g": {{}}}}]{s} Done.')
    assert two == ParsedAnswer([ParsedCall("f", {"a": 1}), ParsedCall("g", {})], "Sure.\nDone.")
    # a lone object is a list of one; text after the JSON inside the block is content too
    assert parse_apertus(f'{p} {{"f": {{"a": 1}}}} and more{s}') == ParsedAnswer([ParsedCall("f", {"a": 1})],
                                                                                "and more")
    # cut off by the token limit: completed as vLLM completes it (partial_json_parser), what is there counts
    cut = parse_apertus(f'{p}[{{"f": {{"a": 1}}}}, {{"g": {{"city": "Par')
    assert cut.calls == [ParsedCall("f", {"a": 1}), ParsedCall("g", {"city": "Par"})] and cut.error is None
    assert parse_apertus(f'{p}[{{"f": {{"ok": tr').calls == [ParsedCall("f", {"ok": True})]
    for text, reason in [(f"{p}garbage", "not JSON, even completed"), (f'{p}[{{"f": 5}}]', "arguments are a int"),
                         (f"{p}[]", "no {"), (f"{p}" + "[" * 3000 + "]" * 3000, "nested too deeply")]:
        parsed = parse_apertus(text)
        assert parsed.calls == [] and parsed.content == text and reason in parsed.error, (text, parsed)


KIMI_K3_PIECES = ["<|open|>", "<|close|>", "<|sep|>", "tools", "call", "argument", "response", "message", " ",
                  'tool="f"', 'key="a"', 'type="number"', 'type="string"', "1", "x", '"', "\n",
                  '<|open|>tools<|sep|>', '<|open|>call tool="g" index="1"<|sep|>', "<|close|>call<|sep|>",
                  '<|open|>argument key="b" type="object"<|sep|>{"c": [1]}<|close|>argument<|sep|>',
                  "<|open|>response<|sep|>", "<|close|>response<|sep|>",
                  '<|open|>tools<|sep|><|open|>call tool="h"<|sep|><|open|>argument key="n" type="number"<|sep|>2'
                  '<|close|>argument<|sep|><|close|>call<|sep|>']


def _kimi_k3_by_vllms_patterns(text: str) -> ParsedAnswer:
    """The reading vLLM's kimi_k3 parser makes, by its own regular expressions, for the reference."""
    o, c, s = r"<\|open\|>", r"<\|close\|>", r"<\|sep\|>"
    until_sep = r"(?:(?!" + s + r").)*?"
    tools = re.search(o + r"\s*tools\s*" + s, text)
    if tools is None:
        return ParsedAnswer([], text)
    end = re.compile(c + r"\s*tools\s*" + s).search(text, tools.end())
    section = text[tools.end():] if end is None else text[tools.end():end.start()]
    call = re.compile(o + r"\s*call\s+(?P<attrs>" + until_sep + r")" + s + r"(?P<body>.*?)" + c + r"\s*call\s*" + s,
                      re.DOTALL)
    argument = re.compile(o + r"\s*argument\s+(?P<attrs>" + until_sep + r")" + s + r"(?P<val>.*?)" + c
                          + r"\s*argument\s*" + s, re.DOTALL)

    def attrs(text: str) -> dict[str, str]:
        return {m["k"]: m["v"].replace("&quot;", '"').replace("&amp;", "&")
                for m in re.finditer(r'(?P<k>\w+)="(?P<v>[^"]*)"', text)}

    calls = []
    for found in call.finditer(section):
        arguments = {}
        for arg in argument.finditer(found["body"]):
            a = attrs(arg["attrs"])
            try:
                value = arg["val"] if a.get("type", "string") == "string" else json.loads(arg["val"])
            except json.JSONDecodeError:
                value = arg["val"]
            arguments[a.get("key", "")] = value
        if attrs(found["attrs"]).get("tool", ""):
            calls.append(ParsedCall(attrs(found["attrs"])["tool"], arguments))
    return ParsedAnswer(calls, None, None if calls else "no call")


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.sampled_from(KIMI_K3_PIECES), max_size=40))
def test_kimi_k3_reads_what_vllms_patterns_read(parts):
    text = "".join(parts)
    ours, reference = parse_kimi_k3(text), _kimi_k3_by_vllms_patterns(text)
    assert (ours.calls, ours.error is None) == (reference.calls, reference.error is None)


DEEPSEEK_V3_PIECES = ["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "\n",
                      "```json", "```", "function", "f", " ", '{"a": 1}', "{", "}", "[]", "x",
                      # whole calls and their parts, so that random texts hold calls, near misses and several per line
                      '<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{"a": 1}\n```<｜tool▁call▁end｜>',
                      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>g", "\n```json\n", "\n```<｜tool▁call▁end｜>"]


def _deepseek_v3_by_vllms_pattern(text: str) -> ParsedAnswer:
    """The reading vLLM's deepseek_v3 parser makes, by its own regular expression (no DOTALL), for the reference."""
    if "<｜tool▁calls▁begin｜>" not in text:
        return ParsedAnswer([], text)
    pattern = re.compile(re.escape("<｜tool▁call▁begin｜>") + r"(?P<type>.*)" + re.escape("<｜tool▁sep｜>")
                         + r"(?P<name>.*)\n```json\n(?P<arguments>.*)\n```" + re.escape("<｜tool▁call▁end｜>"))
    found = pattern.findall(text)
    if not found or any(kind != "function" for kind, _, _ in found):
        return ParsedAnswer([], text, "no call")
    try:
        calls = [ParsedCall(name, json.loads(arguments)) for _, name, arguments in found]
    except ValueError:
        return ParsedAnswer([], text, "arguments")
    content = text[: text.find("<｜tool▁calls▁begin｜>")]
    return ParsedAnswer(calls, content or None)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.sampled_from(DEEPSEEK_V3_PIECES), max_size=40))
def test_deepseek_v3_reads_what_vllms_pattern_reads(parts):
    text = "".join(parts)
    ours, reference = parse_deepseek_v3(text), _deepseek_v3_by_vllms_pattern(text)
    assert (ours.calls, ours.content, ours.error is None) == (reference.calls, reference.content,
                                                              reference.error is None)


def test_minimax_m2_rules():
    assert parse_minimax_m2("Sunny.") == ParsedAnswer([], "Sunny.")
    text = ('Checking.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">\n São Paulo \n'
            '</parameter>\n<parameter name="days">3</parameter><parameter name="hourly">yes</parameter>'
            '<parameter name="ratio">2.0</parameter><parameter name="units">nil</parameter>'
            '<parameter name="spots">["a", 1]</parameter><parameter name="filters">{"min": -1}</parameter>'
            "<parameter name='extra'>7</parameter></invoke>\n<invoke name='now'></invoke>\n</minimax:tool_call>")
    two = parse_minimax_m2(text, WEATHER_TOOLS)
    assert two.calls == [ParsedCall("get_weather", {"city": "São Paulo", "days": 3, "hourly": True, "ratio": 2,
                                                    "units": None, "spots": ["a", 1], "filters": {"min": -1},
                                                    "extra": "7"}),  # a parameter the tool lacks stays text
                         ParsedCall("now", {})] and two.content == "Checking.\n"
    assert type(two.calls[0].arguments["ratio"]) is int  # a whole number is an int, as vLLM converts it
    untyped = parse_minimax_m2(text).calls[0].arguments  # no tools: text, but null/none/nil is None
    assert untyped["days"] == "3" and untyped["units"] is None and untyped["spots"] == '["a", 1]'
    assert parse_minimax_m2('<minimax:tool_call><invoke name="get_weather"><parameter name="days">three'
                            "</parameter></invoke></minimax:tool_call>", WEATHER_TOOLS).calls[0].arguments == {
        "days": "three"}  # it does not convert: the text
    enum = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"n": {"enum": [1, 2]}}}}}]
    assert parse_minimax_m2('<minimax:tool_call><invoke name="f"><parameter name="n">2</parameter></invoke>'
                            "</minimax:tool_call>", enum).calls == [ParsedCall("f", {"n": 2})]  # typed by its enum
    unclosed = parse_minimax_m2('<minimax:tool_call><invoke name="f"></invoke>')
    assert unclosed.calls == [] and "no complete" in unclosed.error
    infinite = parse_minimax_m2('<minimax:tool_call><invoke name="get_weather"><parameter name="ratio">inf'
                                "</parameter></invoke></minimax:tool_call>", WEATHER_TOOLS)
    assert infinite.calls == [] and "infinite" in infinite.error  # vLLM's conversion raises: the answer is text


DSML_WEATHER = ('<｜DSML｜invoke name="get_weather">\n'
                '<｜DSML｜parameter name="city" string="true"> Lima </｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="hourly" string="false">1</｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="units" string="false">null</｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="ratio" string="false">2.5</｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="extra" string="false">{"a": [1]}</｜DSML｜parameter>\n'
                '<｜DSML｜parameter name="skipped" string="maybe">x</｜DSML｜parameter>\n'
                "</｜DSML｜invoke>\n")


def test_deepseek_dsml_rules():
    assert parse_deepseek_v32("Plain.") == ParsedAnswer([], "Plain.")
    expected = ParsedCall("get_weather", {"city": " Lima ", "days": 3, "hourly": True, "units": None, "ratio": 2.5,
                                          "extra": {"a": [1]}})  # string="true" kept as written; a bad header: none
    v32 = parse_deepseek_v32("Sure.\n\n<｜DSML｜function_calls>\n" + DSML_WEATHER + "</｜DSML｜function_calls>",
                             WEATHER_TOOLS)
    assert v32.calls == [expected] and v32.content == "Sure.\n\n"
    v4_text = "<｜DSML｜tool_calls>\n" + DSML_WEATHER + "</｜DSML｜tool_calls>"
    assert parse_deepseek_v4(v4_text, WEATHER_TOOLS).calls == [expected]
    assert parse_deepseek_v4(v4_text, WEATHER_TOOLS).content is None
    assert parse_deepseek_v32(v4_text, WEATHER_TOOLS).calls == []  # each reads its own block token only

    def one(parameters: str, tools: list | None = WEATHER_TOOLS) -> Any:
        parsed = parse_deepseek_v32('<｜DSML｜function_calls><｜DSML｜invoke name="get_weather">' + parameters
                                    + "</｜DSML｜invoke></｜DSML｜function_calls>", tools)
        return parsed.calls[0].arguments if parsed.calls else parsed.error

    assert one('<｜DSML｜parameter name="days" string="false">three</｜DSML｜parameter>') == {"days": "three"}
    assert one('<｜DSML｜parameter name="hourly" string="false">yes</｜DSML｜parameter>') == {"hourly": "yes"}  # strict
    assert one('<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>', None) == {"days": 3}  # JSON
    wrapped = '<｜DSML｜parameter name="arguments" string="false">{"city": "Rome", "days": 2}</｜DSML｜parameter>'
    assert one(wrapped) == {"city": "Rome", "days": 2}  # a wrapper the tool lacks, holding its parameters: unwrapped
    assert one('<｜DSML｜parameter name="input" string="false">{"town": "Rome"}</｜DSML｜parameter>') == {
        "input": {"town": "Rome"}}  # holding others: kept
    assert one('<｜DSML｜parameter name="__vllm_param_arguments__" string="true">x</｜DSML｜parameter>'
               '<｜DSML｜parameter name="days" string="false">1</｜DSML｜parameter>') == {"arguments": "x", "days": 1}
    unclosed = parse_deepseek_v32('<｜DSML｜function_calls><｜DSML｜invoke name="f"></｜DSML｜invoke>')
    assert unclosed.calls == [] and "no complete" in unclosed.error
    deep = one('<｜DSML｜parameter name="q" string="false">' + "[" * 30_000 + "</｜DSML｜parameter>")
    assert isinstance(deep, str) and "nested too deeply" in deep


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
           "]", "(", ")", '"', "'", ";", ",", "=", ":", "\\", "</think>", "name", "arguments", "f(", "\x00", "\ud800",
           "<function=", "</function>", "<parameter=", "</parameter>", ">", "\n", "<arg_key>", "</arg_key>",
           "<arg_value>", "</arg_value>", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>",
           "<｜tool▁call▁end｜>", "city", "days", "None", "True", "1e400", "<|tool_call>call:", "}<tool_call|>",
           '<|"|>', "<|tool_call>", "<|tool_calls_section_begin|>", "<|tool_call_begin|>", ":0",
           "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|start|>", "<|message|>", "<|call|>", "<|end|>",
           " to=functions.", "<|channel|>", "commentary", "json", "<minimax:tool_call>", "</minimax:tool_call>",
           "<invoke name=", "</invoke>", "<parameter name=", 'name="', 'string="false">', 'string="true">',
           "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "<｜DSML｜tool_calls>", "<｜DSML｜invoke ",
           "</｜DSML｜invoke>", "<｜DSML｜parameter ", "</｜DSML｜parameter>", "nil", "inf", "```json", "\n```",
           "function", "<|tool_call_start|>", "<|tool_call_end|>", "<|open|>", "<|close|>", "<|sep|>", "tools",
           "call ", "argument ", 'tool="', 'type="array"', "<|tools_prefix|>", "<|tools_suffix|>",
           "<seed:tool_call>", "</seed:tool_call>", "<seed:think>", "</seed:think>", "<TOOLCALL>", "</TOOLCALL>"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(MARKERS) | st.text(max_size=12), max_size=30),
       fmt=st.sampled_from(TOOL_FORMATS))
def test_hostile_text_never_raises(parts, fmt):
    parsed = parse_tool_calls("".join(parts), fmt, WEATHER_TOOLS)
    assert isinstance(parsed, ParsedAnswer)
    assert all(isinstance(c.name, str) for c in parsed.calls)
    assert not (parsed.calls and parsed.error)


@pytest.mark.parametrize("text", [
    "[" * 50_000, "{" * 50_000, '{"name": "f", "arguments": ' + "[" * 20_000 + "]" * 20_000 + "}",
    "<tool_call>" * 8_000, "[TOOL_CALLS]" * 8_000, "[TOOL_CALLS][{" * 7_000, "[f(a=" + "[" * 30_000 + "])]",
    '<tool_call>{"name": "f", "arguments": ' + "[" * 30_000 + "}</tool_call>", "{}" * 40_000,
    "[f(a=1)]" + " " * (MAX_TEXT_CHARS + 1), "x" * 10 + "<|python_tag|>" + "{" * 40_000,
    "<tool_call>\n<function=f>\n" + "<parameter=a>\n" * 7_000, "<function=f>\n" + "</parameter>\n" * 8_000,
    "<function=f>\n<parameter=a>\n" + "<parameter=a>\n</parameter>x" * 4_000,
    "<tool_call>f\n" + "<arg_key>" * 10_000 + "</tool_call>", "<tool_call>f\n" + "<arg_key>a</arg_key>" * 5_000
    + "</tool_call>", "<tool_call>f\n" + "<arg_key>a</arg_key><arg_value>" * 4_000 + "</tool_call>",
    "<｜tool▁calls▁begin｜>" + "<｜tool▁call▁begin｜>f<｜tool▁sep｜>" * 5_000,
    "<｜tool▁calls▁begin｜>" + "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n" * 2_500,
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function" + "<｜tool▁sep｜>" * 8_000 + "f\n```json\n{}\n```",
    "<|tool_call_start|>[" + "f(a=[" * 8_000 + "<|tool_call_end|>", "<|tool_call_start|>" * 8_000 + "[f()]",
    "<|open|>tools<|sep|>" + '<|open|>call tool="f"<|sep|>' * 4_000, "<|open|>tools<|sep|>" + "<|open|> call " * 9_000,
    '<|open|>tools<|sep|><|open|>call tool="f"<|sep|>' + '<|open|>argument key="a"<|sep|>' * 3_000,
    "<|open|>tools<|sep|><|open|>call tool=\"f\"<|sep|>" + "<|close|>" + " " * 80_000,
    "<|tools_prefix|>" + '[{"a": "' + "x" * 90_000, "<|tools_prefix|>" + '[{"f": {}}, ' * 7_000,
    "<|tools_prefix|>" + '[{"a": {"b": ' * 3_000, "<|tools_prefix|>[" * 6_000,
    "<seed:tool_call>" * 6_000 + "<function=f>", "<function=f>" + "<parameter=a>" * 7_000,
    "<seed:tool_call><function=f>" + "<parameter=a>x</parameter>" * 3_000 + "</function>" * 2,
    "<TOOLCALL>" * 9_000 + "</TOOLCALL>", "<TOOLCALL>" + "[" * 30_000 + "</TOOLCALL>",
    "<tool_call>\n<function=get_weather>\n<parameter=spots>\n" + "[" * 30_000 + "\n</parameter>",
    "<|tool_call>call:f{" + "a:{" * 20_000 + "}<tool_call|>", "<|tool_call>call:f{" + "a:[" * 20_000 + "}<tool_call|>",
    "<|tool_call>call:f{" + 'a:<|"|>' * 10_000 + "}<tool_call|>", "<|tool_call>call:" * 6_000,
    "<|tool_call>call:f{" + "a:1," * 20_000 + "}<tool_call|>", "<tool_call>" + "<arg_key>" * 9_000 + "</tool_call>",
    "<|tool_calls_section_begin|>" + "<|tool_call_begin|>f:0" * 4_000, "<|tool_calls_section_begin|>"
    + "<|tool_call_begin|>" + " " * 60_000 + "f:0<|tool_call_argument_begin|>{}<|tool_call_end|>",
    "<|tool_calls_section_begin|><|tool_call_begin|>" + "a" * 60_000 + ":0<|tool_call_argument_begin|>{}",
    " to=functions.f" + "<|start|>" * 10_000 + "<|message|>" * 5_000,
    "<minimax:tool_call>" + "<invoke name=" * 8_000, "<minimax:tool_call><invoke name=f>"
    + "<parameter name=a>" * 6_000 + "</invoke></minimax:tool_call>",
    '<minimax:tool_call><invoke name="get_weather"><parameter name="spots">' + "[" * 30_000
    + "</parameter></invoke></minimax:tool_call>",
    '<｜DSML｜function_calls><｜DSML｜invoke name="' * 5_000, "<｜DSML｜tool_calls><｜DSML｜invoke" + " " * 60_000,
    '<｜DSML｜function_calls><｜DSML｜invoke name="f">' + '<｜DSML｜parameter name="a" string="false">' * 4_000
    + "</｜DSML｜invoke></｜DSML｜function_calls>",
])
def test_deep_long_and_repeated_input_is_an_error_quickly(text):
    started = time.monotonic()
    for fmt in TOOL_FORMATS:
        parsed = parse_tool_calls(text, fmt, WEATHER_TOOLS)
        assert parsed.calls == [] or all(isinstance(c.arguments, dict | list) for c in parsed.calls)
    assert time.monotonic() - started < 20  # a deadline against quadratic scans, not a speed figure


def test_non_text_answers_are_an_error():
    assert parse_tool_calls(None, "hermes").error == "hermes: the answer is a NoneType, not text"
    assert parse_tool_calls(json.loads("[1]"), "pythonic").error.startswith("pythonic: the answer is a list")
