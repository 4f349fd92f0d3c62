"""Function-calling datasets read and written in five formats, through :class:`schemas.samples.Sample`.

The formats (one row = one sample):

- ``toolace`` (Team-ACE/ToolACE release, and our own published rows, which add ``id`` and ``meta``):
  ``{"system": str, "conversations": [{"from": "user"|"assistant"|"tool", "value": str}]}``. The tool list
  is JSON inside ``system``, after "Here is a list of functions in JSON format that you can invoke:",
  in the ``dict``/``float``/``int`` dialect. Assistant call turns are Python call lists
  (``[Market Trends API(trend_type="X")]``); tool turns are JSON ``[{"name": ..., "results": ...}]``.
- ``openai``: ``{"messages": [...], "tools": [{"type": "function", "function": {...}}]}`` with assistant
  ``tool_calls`` (JSON-string ``arguments``) and ``tool`` messages carrying ``tool_call_id``.
- ``sharegpt`` (LLaMA-Factory function calling): ``{"conversations": [{"from": "human"|"gpt"|
  "function_call"|"observation"|"system", "value": str}], "tools": "<JSON list>", "system": str?}``;
  a ``function_call`` value is JSON ``{"name", "arguments"}`` or a list of them, an ``observation`` the result.
- ``xlam`` (Salesforce xlam-function-calling-60k): ``{"id": int, "query": str, "tools": "<JSON>",
  "answers": "<JSON>"}``; tool parameters are a flat ``{"param": {"type": "str, optional", ...}}`` dict.
- ``bfcl`` (Berkeley Function Calling Leaderboard): ``{"id", "question": [[{"role", "content"}]],
  "function": [...]}`` plus a reference ``"ground_truth": [{"func": {"param": [possible values]}}]`` or a
  model answer ``"result": "[func(a=1)]"``.

Reading (:func:`sample_from_row`, :func:`read_samples`) never raises for bad data: each problem becomes a
:class:`~schemas.samples.Problem` of the sample (``sample_json_v1``, ``sample_fields_v1``,
``tools_present_v1``, ``tools_json_v1``, ``call_syntax_v1``, ``format_detect_v1``) and the next rows are
read on. Only a file that cannot be read at all raises :class:`toolace.errors.UserError`.

Decisions worth knowing:

- Calls get ids ``call_<turn>_<n>``; tool turns get the matching ``tool_call_id`` (by the source's id where
  it has one, else by name, else by position among the calls still unanswered).
- ``Sample.system`` keeps a ToolACE system prompt whole (it carries the tool list and the call format).
  Writing ``toolace`` splices the tool list back into that prompt (keeping its own wording, and any text
  after the list); other writers do not copy such a tool-list carrier as a system message: only a text
  written before ToolACE's instruction ("You are an expert in composing functions...") is kept, as the
  system message. Writing ``toolace`` from a sample with a plain system prompt puts that prompt before
  ToolACE's instruction, so it comes back out the same way.
- ToolACE tool results: a ``results`` value that is a string becomes the tool turn's content as is,
  anything else its JSON text; writing turns content that is a JSON object/array back into JSON and
  leaves other text a string (so a number result comes back as a string).
- A row's ``meta`` object and any unknown top-level fields go into ``Sample.meta``; writers write
  ``Sample.meta`` as the row's ``meta`` (when not empty).
- Losses on writing: ``toolace`` and ``sharegpt`` cannot hold text and calls in one assistant turn, so the
  text of such a turn is dropped. A ToolACE instruction's own wording does not survive other formats (it is
  written again as :data:`tasks.formats.call_format.TOOLACE_SYSTEM_PROMPT`). ``xlam`` holds only the first user
  query and the first call turn, and cannot say "required, with a default" (a default makes a parameter
  optional there). ``bfcl`` holds the turns up to the first call turn and that turn's calls as
  ``ground_truth`` (each value wrapped in a one-item list; a BFCL model answer, ``result``, is written back
  as ``ground_truth``); an argument whose value is ``""`` does not survive a BFCL round trip (BFCL's ``""``
  means "may be omitted"). A call that did not parse is written as the raw text it came from
  (``call_text``), so in ToolACE it reads back as plain text unless it still looks like a call.
- Tool ``parameters`` are kept in the dialect they were read in and written through
  :mod:`tasks.formats.type_dialects` (the one place that reads and writes type dialects; its docstring has the rules):
  ``toolace`` output is :func:`~tasks.formats.type_dialects.to_toolace_dialect` (JSON Schema with object→dict,
  number→float, integer→int) plus a top-level ``"required": null``; ``openai`` output is JSON Schema
  (:func:`~tasks.formats.type_dialects.parameters_schema`); xLAM's flat parameters are read with
  :func:`~tasks.formats.type_dialects.xlam_to_schema` (a parameter with ``", optional"`` or a ``default`` is not
  required) and written with :func:`~tasks.formats.type_dialects.schema_to_xlam`; ``sharegpt`` and ``bfcl`` pass them
  through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.records import ToolCall
from schemas.samples import FORMATS, FormatName, Problem, Sample, SampleTurn, ToolSpec
from tasks.formats.call_format import TOOLACE_SYSTEM_PROMPT, openai_example, render_calls
from tasks.formats.call_parsing import parse_calls, parse_json_calls
from tasks.formats.type_dialects import parameters_schema, schema_to_xlam, to_toolace_dialect, xlam_to_schema
from toolace.errors import UserError

TOOL_LIST_MARKER = "Here is a list of functions in JSON format that you can invoke:"
TOOLACE_INSTRUCTION_START = "You are an expert in composing functions"
_CALL_ATTEMPT = re.compile(r"^\[\s*[^\]\[]+\(")
_FALLBACK_TRIES = 50
_PARQUET_BATCH = 256

FileKind = Literal["jsonl", "json", "parquet"]

_KNOWN_FIELDS: dict[str, set[str]] = {
    "toolace": {"id", "system", "conversations", "meta"},
    "openai": {"id", "messages", "tools", "meta"},
    "sharegpt": {"id", "conversations", "tools", "system", "meta"},
    "xlam": {"id", "query", "tools", "answers", "meta"},
    "bfcl": {"id", "question", "function", "ground_truth", "result", "meta"},
}
_COLUMNS: dict[str, list[str]] = {
    "toolace": ["id", "system", "conversations", "meta"],
    "openai": ["id", "tools", "messages", "meta"],
    "sharegpt": ["id", "conversations", "tools", "system", "meta"],
    "xlam": ["id", "query", "tools", "answers", "meta"],
    "bfcl": ["id", "question", "function", "ground_truth", "result", "meta"],
}
_SHAREGPT_ROLES = {"human", "gpt", "function_call", "observation"}


# ---------------------------------------------------------------------------------------- small helpers


def _decoded(value: Any) -> Any:
    """A JSON string holding an object or array (as parquet cells often do) decoded; anything else as is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content_text(content: Any) -> str | None:
    """Message content as text: OpenAI content parts are joined, other non-strings written as JSON."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return _dumps(content)


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."


def _turn_text(turn: SampleTurn) -> str:
    """What a turn says as text: its content, or the raw call text of a call that did not parse."""
    if turn.content is not None and turn.call_error and turn.call_text:
        return turn.content + "\n" + turn.call_text
    if turn.content is not None:
        return turn.content
    return turn.call_text or ""


def _result_value(content: str | None) -> Any:
    """A tool turn's content as a ToolACE ``results`` value: JSON objects/arrays decoded, a JSON string
    (``"12:00"`` with its quotes, as our tool agent writes a text result) unquoted, other text kept."""
    if content is None:
        return None
    if content.startswith('"') and content.endswith('"') and len(content) > 1:
        try:
            text = json.loads(content)
        except ValueError:
            return content
        return text if isinstance(text, str) else content
    value = _decoded(content)
    return value if isinstance(value, dict | list) else content


def _result_content(value: Any) -> str:
    return value if isinstance(value, str) else _dumps(value)


class _Builder:
    """Collects turns and problems for one sample; gives call ids and matches tool turns to calls."""

    def __init__(self, tool_names: list[str] | None = None) -> None:
        self.turns: list[SampleTurn] = []
        self.problems: list[Problem] = []
        self.tool_names = tool_names or []
        self.pending: list[ToolCall] = []
        self.id_map: dict[str, str] = {}
        self.system_parts: list[str] = []

    def problem(self, check: str, reason: str) -> None:
        self.problems.append(Problem(check=check, reason=reason))

    def user(self, content: str | None) -> None:
        self.turns.append(SampleTurn(role="user", content=content))

    def assistant_text(self, content: str | None) -> None:
        self.pending = []
        self.turns.append(SampleTurn(role="assistant", content=content))

    def assistant_calls(self, calls: list[ToolCall], content: str | None = None, call_text: str | None = None,
                        original_ids: list[Any] | None = None) -> None:
        turn_index = len(self.turns)
        renamed = [ToolCall(id=f"call_{turn_index}_{n}", name=c.name, arguments=c.arguments)
                   for n, c in enumerate(calls)]
        for original, call in zip(original_ids or [], renamed, strict=False):
            if isinstance(original, str) and original:
                self.id_map[original] = call.id
        self.pending = list(renamed)
        self.turns.append(SampleTurn(role="assistant", content=content, tool_calls=renamed, call_text=call_text))

    def assistant_error(self, call_text: str, error: str, where: str, content: str | None = None) -> None:
        self.pending = []
        self.problem("call_syntax_v1", f"{where}: {error}")
        self.turns.append(SampleTurn(role="assistant", content=content, call_text=call_text, call_error=error))

    def tool(self, content: str | None, name: str | None = None, original_id: Any = None) -> None:
        match: ToolCall | None = None
        call_id: str | None = None
        if isinstance(original_id, str) and original_id in self.id_map:
            call_id = self.id_map[original_id]
            match = next((c for c in self.pending if c.id == call_id), None)
        if call_id is None and name:
            match = next((c for c in self.pending if c.name == name), None)
        if call_id is None and match is None and self.pending:
            match = self.pending[0]
        if match is not None:
            self.pending.remove(match)
            call_id = match.id
        self.turns.append(SampleTurn(role="tool", content=content, tool_call_id=call_id,
                                     name=name or (match.name if match else None)))

    def python_calls(self, text: str, where: str, attempt_only_if_bracketed: bool) -> None:
        """An assistant answer in Python call syntax: a call turn, a call_syntax_v1 turn, or plain text.

        With ``attempt_only_if_bracketed`` (ToolACE) only text starting with ``[`` is tried, and a failure
        counts only when the text looks like a call attempt; otherwise (BFCL ``result``) any text is tried.
        """
        stripped = text.strip()
        if attempt_only_if_bracketed and not stripped.startswith("["):
            self.assistant_text(text)
            return
        try:
            calls = parse_calls(text, self.tool_names)
        except Exception as exc:  # CallParseError, and anything unforeseen: never raise for bad data
            if _CALL_ATTEMPT.match(stripped) or (not attempt_only_if_bracketed and stripped.startswith("[")):
                self.assistant_error(text, _error_text(exc), where)
            else:
                self.assistant_text(text)
            return
        if calls:
            self.assistant_calls(calls, call_text=text)
        else:
            self.assistant_text(text)

    def json_calls(self, value: Any, raw: str, where: str, content: str | None = None) -> None:
        """An assistant call in JSON style (ShareGPT ``function_call``, xLAM ``answers``, BFCL decoded)."""
        try:
            calls = parse_json_calls(value)
        except Exception as exc:  # CallParseError, and anything unforeseen
            self.assistant_error(raw, _error_text(exc), where, content)
            return
        if calls:
            self.assistant_calls(calls, content=content)
        elif content is not None:
            self.assistant_text(content)


def _tool_spec(entry: Any, position: int, builder: _Builder) -> ToolSpec | None:
    """One tool entry (``{"type": "function", "function": {...}}`` or bare) as a ToolSpec, or a problem."""
    if isinstance(entry, dict) and isinstance(entry.get("function"), dict) and "name" not in entry:
        entry = entry["function"]
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        builder.problem("tools_json_v1", f"tool {position} is not an object with a name")
        return None
    parameters = _decoded(entry.get("parameters", {}))
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        builder.problem("tools_json_v1", f"tool {entry['name']!r}: parameters is not an object")
        parameters = {}
    result_schema = entry.get("result_schema")
    extra = {k: v for k, v in entry.items()
             if k not in ("name", "description", "parameters", "result_schema") and not (k == "required" and v is None)}
    description = entry.get("description")
    return ToolSpec(name=entry["name"], description=description if isinstance(description, str) else "",
                    parameters=parameters, result_schema=result_schema if isinstance(result_schema, dict) else None,
                    extra=extra)


def _tools(value: Any, field: str, builder: _Builder,
           parameters: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[ToolSpec]:
    """The tool list of a row field: a list of tool objects or a JSON string of one."""
    if value is None:
        builder.problem("tools_present_v1", f"no tool list: {field!r} is missing")
        return []
    if isinstance(value, str):
        if not value.strip():
            builder.problem("tools_present_v1", f"no tool list: {field!r} is empty")
            return []
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            builder.problem("tools_json_v1", f"{field!r} is not valid JSON: {_error_text(exc)}")
            return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        builder.problem("tools_json_v1", f"{field!r} is not a list of tools but {type(value).__name__}")
        return []
    specs = [s for s in (_tool_spec(e, i, builder) for i, e in enumerate(value)) if s is not None]
    if parameters is not None:
        for spec in specs:
            spec.parameters = parameters(spec.parameters)
    return specs


def _is_tool_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, dict) and isinstance(v.get("name"), str) for v in value)


def _tool_list_span(system: str) -> tuple[int, int, Any] | None:
    """Where the JSON tool list sits in a ToolACE system prompt: (start, end, decoded value), else None.

    The first ``[`` after the marker line is decoded; failing that, the first ``[`` (of the first few) that
    decodes to a list of objects with a name.
    """
    decoder = json.JSONDecoder()
    marker = system.find(TOOL_LIST_MARKER)
    if marker >= 0:
        start = system.find("[", marker + len(TOOL_LIST_MARKER))
        if start >= 0:
            try:
                value, end = decoder.raw_decode(system, start)
            except (ValueError, RecursionError):
                pass
            else:
                if isinstance(value, list):
                    return start, end, value
    start = system.find("[")
    for _ in range(_FALLBACK_TRIES):
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(system, start)
        except (ValueError, RecursionError):
            pass
        else:
            if _is_tool_list(value):
                return start, end, value
        start = system.find("[", start + 1)
    return None


def custom_system(system: str | None) -> str | None:
    """The part of a system prompt that is not ToolACE's tool-list carrier (None when there is none)."""
    if system is None or not system.strip():
        return None
    if TOOL_LIST_MARKER not in system:
        return system
    head = system.find(TOOLACE_INSTRUCTION_START)
    if head > 0 and system[:head].strip():
        return system[:head].rstrip()
    return None


def _system_of(parts: list[str]) -> str | None:
    return "\n\n".join(parts) if parts else None


# ---------------------------------------------------------------------------------------------- detection


def detect_format(row: dict[str, Any]) -> FormatName | None:
    """The format a row is written in, from its keys and shape; None when nothing fits."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        if "tools" in row:
            return "sharegpt"
        conversations = _decoded(row["conversations"])
        roles = {c.get("from") for c in conversations[:50] if isinstance(c, dict)} \
            if isinstance(conversations, list) else set()
        if roles & _SHAREGPT_ROLES:
            return "sharegpt"
        return "toolace"
    if "query" in row and ("answers" in row or "tools" in row):
        return "xlam"
    if "question" in row:
        return "bfcl"
    return None


# ------------------------------------------------------------------------------------------------ readers


def _read_toolace(row: dict[str, Any], builder: _Builder) -> list[ToolSpec]:
    system = row.get("system")
    tools: list[ToolSpec] = []
    if isinstance(system, str):
        builder.system_parts.append(system)
        span = _tool_list_span(system)
        if span is not None:
            tools = _tools(span[2], "system", builder)
        elif TOOL_LIST_MARKER in system:
            builder.problem("tools_json_v1", "the tool list after the marker line in 'system' is not valid JSON")
        else:
            builder.problem("tools_present_v1", "no JSON tool list in 'system'")
    elif system is None:
        builder.problem("tools_present_v1", "no tool list: 'system' is missing")
    else:
        builder.problem("sample_fields_v1", f"'system' is not a string but {type(system).__name__}")
    builder.tool_names = [t.name for t in tools]
    conversations = _decoded(row.get("conversations"))
    if not isinstance(conversations, list):
        builder.problem("sample_fields_v1", "'conversations' is missing or not a list")
        return tools
    for i, item in enumerate(conversations):
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            builder.problem("sample_fields_v1", f"conversations[{i}] is not an object with a string 'value'")
            continue
        role, value = item.get("from"), item["value"]
        if role == "user":
            builder.user(value)
        elif role == "assistant":
            builder.python_calls(value, f"conversations[{i}]", attempt_only_if_bracketed=True)
        elif role == "tool":
            _toolace_results(value, builder)
        elif role == "system":
            builder.system_parts.append(value)
        else:
            builder.problem("sample_fields_v1", f"conversations[{i}] has an unknown role {role!r}")
    return tools


def _toolace_results(value: str, builder: _Builder) -> None:
    """A ToolACE tool turn: each ``{"name", "results"}`` entry becomes one tool turn."""
    decoded = _decoded(value)
    if isinstance(decoded, dict):
        decoded = [decoded]
    if isinstance(decoded, list) and decoded and all(isinstance(e, dict) and "name" in e for e in decoded):
        for entry in decoded:
            name = entry.get("name")
            builder.tool(_result_content(entry.get("results")), name=name if isinstance(name, str) else None)
    else:
        builder.tool(value)


def _read_openai(row: dict[str, Any], builder: _Builder) -> list[ToolSpec]:
    tools = _tools(_decoded(row.get("tools")), "tools", builder)
    messages = _decoded(row.get("messages"))
    if not isinstance(messages, list):
        builder.problem("sample_fields_v1", "'messages' is missing or not a list")
        return tools
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            builder.problem("sample_fields_v1", f"messages[{i}] is not an object")
            continue
        role, content = message.get("role"), _content_text(message.get("content"))
        if role in ("system", "developer"):
            builder.system_parts.append(content or "")
        elif role == "user":
            builder.user(content)
        elif role == "assistant":
            _openai_assistant(message, content, f"messages[{i}]", builder)
            reasoning = message.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:  # kept for trainers whose chat template renders it
                builder.turns[-1].reasoning_content = reasoning
        elif role in ("tool", "function"):
            name = message.get("name")
            builder.tool(content, name=name if isinstance(name, str) else None,
                         original_id=message.get("tool_call_id"))
        else:
            builder.problem("sample_fields_v1", f"messages[{i}] has an unknown role {role!r}")
    return tools


def _openai_assistant(message: dict[str, Any], content: str | None, where: str, builder: _Builder) -> None:
    raw_calls = _decoded(message.get("tool_calls"))
    if not raw_calls and isinstance(message.get("function_call"), dict):
        raw_calls = [{"function": message["function_call"]}]
    if not raw_calls:
        builder.assistant_text(content)
        return
    if not isinstance(raw_calls, list):
        raw_calls = [raw_calls]
    calls: list[ToolCall] = []
    ids: list[Any] = []
    errors: list[str] = []
    for n, raw in enumerate(raw_calls):
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            errors.append(f"tool_calls[{n}] has no function name")
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError) as exc:
                errors.append(f"tool_calls[{n}] ({function['name']}): arguments are not valid JSON: "
                              f"{_error_text(exc)}")
                continue
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            errors.append(f"tool_calls[{n}] ({function['name']}): arguments are not an object")
            continue
        calls.append(ToolCall(id=f"call_{n}", name=function["name"], arguments=arguments))
        ids.append(raw.get("id"))
    if errors:
        builder.assistant_error(_dumps(raw_calls), "; ".join(errors), where, content)
    else:
        builder.assistant_calls(calls, content=content, original_ids=ids)


def _read_sharegpt(row: dict[str, Any], builder: _Builder) -> list[ToolSpec]:
    tools = _tools(row.get("tools"), "tools", builder)
    builder.tool_names = [t.name for t in tools]
    if isinstance(row.get("system"), str) and row["system"]:
        builder.system_parts.append(row["system"])
    conversations = _decoded(row.get("conversations"))
    if not isinstance(conversations, list):
        builder.problem("sample_fields_v1", "'conversations' is missing or not a list")
        return tools
    for i, item in enumerate(conversations):
        if not isinstance(item, dict) or "value" not in item:
            builder.problem("sample_fields_v1", f"conversations[{i}] is not an object with a 'value'")
            continue
        role, value = item.get("from"), item["value"]
        text = value if isinstance(value, str) else _dumps(value)
        if role in ("human", "user"):
            builder.user(text)
        elif role in ("gpt", "assistant"):
            builder.assistant_text(text)
        elif role == "function_call":
            decoded = value
            if isinstance(value, str):
                try:
                    decoded = json.loads(value)
                except (ValueError, RecursionError) as exc:
                    builder.assistant_error(value, f"not valid JSON: {_error_text(exc)}", f"conversations[{i}]")
                    continue
            builder.json_calls(decoded, text, f"conversations[{i}]")
        elif role in ("observation", "tool"):
            _sharegpt_observation(text, builder)
        elif role == "system":
            builder.system_parts.append(text)
        else:
            builder.problem("sample_fields_v1", f"conversations[{i}] has an unknown role {role!r}")
    return tools


def _sharegpt_observation(text: str, builder: _Builder) -> None:
    """One observation; after several calls, a JSON array with one item per call is split into tool turns."""
    count = len(builder.pending)
    if count > 1:
        decoded = _decoded(text)
        if isinstance(decoded, list) and len(decoded) == count:
            for item in decoded:
                builder.tool(_result_content(item))
            return
    builder.tool(text)


def _read_xlam(row: dict[str, Any], builder: _Builder) -> list[ToolSpec]:
    tools = _tools(row.get("tools"), "tools", builder, parameters=xlam_to_schema)
    query = row.get("query")
    if not isinstance(query, str):
        builder.problem("sample_fields_v1", "'query' is missing or not a string")
    else:
        builder.user(query)
    answers = row.get("answers")
    if answers is None:
        builder.problem("sample_fields_v1", "'answers' is missing")
        return tools
    raw = answers if isinstance(answers, str) else _dumps(answers)
    if isinstance(answers, str):
        try:
            answers = json.loads(answers)
        except (ValueError, RecursionError) as exc:
            builder.assistant_error(raw, f"not valid JSON: {_error_text(exc)}", "answers")
            return tools
    if answers == []:
        return tools  # no call: the query is not answerable with the tools
    builder.json_calls(answers, raw, "answers")
    return tools


def _bfcl_ground_truth_calls(ground_truth: list[Any]) -> list[dict[str, Any]]:
    """BFCL's ``[{"func": {"param": [possible values]}}]`` as ``[{"func": {"param": value}}]``: the first
    possible value that is not ``""``; a parameter whose possible values are all ``""`` is left out."""
    out: list[dict[str, Any]] = []
    for entry in ground_truth:
        if not isinstance(entry, dict):
            out.append(entry)
            continue
        decoded: dict[str, Any] = {}
        for name, params in entry.items():
            if not isinstance(params, dict):
                decoded[name] = params
                continue
            arguments: dict[str, Any] = {}
            for param, possible in params.items():
                if not isinstance(possible, list):
                    arguments[param] = possible
                    continue
                chosen = [v for v in possible if v != ""]
                if chosen:
                    arguments[param] = chosen[0]
            decoded[name] = arguments
        out.append(decoded)
    return out


def _read_bfcl(row: dict[str, Any], builder: _Builder) -> list[ToolSpec]:
    tools = _tools(_decoded(row.get("function")), "function", builder)
    builder.tool_names = [t.name for t in tools]
    question = _decoded(row.get("question"))
    groups: list[list[Any]] = []
    if isinstance(question, str):
        groups = [[{"role": "user", "content": question}]]
    elif isinstance(question, list):
        groups = [g if isinstance(g, list) else [g] for g in question]
    else:
        builder.problem("sample_fields_v1", "'question' is missing or not a list")
    ground_truth = _decoded(row.get("ground_truth"))
    result = _decoded(row.get("result")) if "result" in row else None
    per_turn: list[list[str]] | None = None
    if result is None and isinstance(ground_truth, list) and ground_truth \
            and all(isinstance(g, list) and all(isinstance(s, str) for s in g) for g in ground_truth) \
            and len(ground_truth) == len(groups):
        per_turn = ground_truth  # multi-turn: call strings per user turn
    for g, group in enumerate(groups):
        for m, message in enumerate(group):
            if not isinstance(message, dict):
                builder.problem("sample_fields_v1", f"question[{g}][{m}] is not an object")
                continue
            role, content = message.get("role"), _content_text(message.get("content"))
            if role == "system":
                builder.system_parts.append(content or "")
            elif role == "user":
                builder.user(content)
            elif role == "assistant":
                builder.assistant_text(content)
            else:
                builder.problem("sample_fields_v1", f"question[{g}][{m}] has an unknown role {role!r}")
        if per_turn is not None:
            for s, text in enumerate(per_turn[g]):
                builder.python_calls(text, f"ground_truth[{g}][{s}]", attempt_only_if_bracketed=False)
    if per_turn is not None:
        return tools
    if result is not None:
        if isinstance(row.get("result"), str):
            builder.python_calls(row["result"], "result", attempt_only_if_bracketed=False)
        else:
            builder.json_calls(result, _dumps(result), "result")
    elif isinstance(ground_truth, list):
        if all(isinstance(g, str) for g in ground_truth):
            for s, text in enumerate(ground_truth):
                builder.python_calls(text, f"ground_truth[{s}]", attempt_only_if_bracketed=False)
        elif ground_truth:
            builder.json_calls(_bfcl_ground_truth_calls(ground_truth), _dumps(ground_truth), "ground_truth")
    elif ground_truth is not None:
        builder.assistant_error(_dumps(ground_truth), "ground_truth is not a list", "ground_truth")
    return tools


_READERS: dict[str, Callable[[dict[str, Any], _Builder], list[ToolSpec]]] = {
    "toolace": _read_toolace, "openai": _read_openai, "sharegpt": _read_sharegpt, "xlam": _read_xlam,
    "bfcl": _read_bfcl,
}


def _meta_of(row: dict[str, Any], fmt: FormatName) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raw_meta = _decoded(row.get("meta"))
    if isinstance(raw_meta, dict):
        meta.update(raw_meta)
    elif raw_meta is not None:
        meta["meta"] = raw_meta
    for key, value in row.items():
        if key not in _KNOWN_FIELDS[fmt]:
            meta[str(key)] = value
    if fmt == "bfcl" and "result" in row and "ground_truth" in row:
        meta["ground_truth"] = row["ground_truth"]  # the result was read as the calls; keep the reference
    return meta


def _problem_sample(index: int, fmt: FormatName | None, check: str, reason: str,
                    sample_id: str | None = None) -> Sample:
    return Sample(index=index, id=sample_id or str(index), format=fmt, problems=[Problem(check=check, reason=reason)])


def sample_from_row(row: Any, fmt: FormatName | Literal["auto"], index: int) -> Sample:
    """One row as a Sample; never raises for bad data (problems are recorded in ``sample.problems``).

    With ``fmt="auto"`` the format is detected from the row; a row whose format cannot be detected gets a
    ``format_detect_v1`` problem and no format.
    """
    if fmt != "auto" and fmt not in FORMATS:
        return _problem_sample(index, None, "format_detect_v1", f"unknown format {fmt!r}")
    if not isinstance(row, dict):
        return _problem_sample(index, fmt if fmt != "auto" else None, "sample_fields_v1",
                               f"row is not a JSON object but {type(row).__name__}")
    sample_id = str(row["id"]) if row.get("id") is not None else str(index)
    if fmt == "auto":
        detected = detect_format(row)
        if detected is None:
            return _problem_sample(index, None, "format_detect_v1",
                                   f"no known format fits a row with fields {sorted(map(str, row))[:20]}", sample_id)
        fmt = detected
    builder = _Builder()
    try:
        tools = _READERS[fmt](row, builder)
        meta = _meta_of(row, fmt)
        dialog_type = meta.get("dialog_type")
        segments = meta.get("segments")
        return Sample(index=index, id=sample_id, format=fmt, system=_system_of(builder.system_parts), tools=tools,
                      turns=builder.turns, problems=builder.problems, meta=meta,
                      dialog_type=dialog_type if isinstance(dialog_type, str) else None,
                      segments=[str(x) for x in segments] if isinstance(segments, list) else [])
    except Exception as exc:  # a shape no reader foresaw: still a sample, with the reason
        sample = _problem_sample(index, fmt, "sample_fields_v1",
                                 f"row could not be read: {type(exc).__name__}: {_error_text(exc)}", sample_id)
        sample.problems[:0] = builder.problems
        return sample


# ------------------------------------------------------------------------------------------------ writers


def _tool_entry(tool: ToolSpec, parameters: dict[str, Any], result_schema: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": tool.name, "description": tool.description, "parameters": parameters}
    if result_schema and tool.result_schema is not None:
        entry["result_schema"] = tool.result_schema
    entry.update({k: v for k, v in tool.extra.items() if k not in entry})
    return entry


def _toolace_tools(sample: Sample) -> str:
    entries = []
    for tool in sample.tools:
        entry = _tool_entry(tool, to_toolace_dialect(tool.parameters))
        entry.setdefault("required", None)
        entries.append(entry)
    return _dumps(entries)


def _toolace_system(sample: Sample) -> str:
    tools_json = _toolace_tools(sample)
    system = sample.system
    if system:
        span = _tool_list_span(system)
        if span is not None and (TOOL_LIST_MARKER in system or [
                t.get("name") for t in span[2] if isinstance(t, dict)] == [t.name for t in sample.tools]):
            return system[:span[0]] + tools_json + system[span[1]:]  # this sample's own carrier: re-fill it
        custom = custom_system(system)
        if custom:
            return custom.rstrip("\n") + "\n\n" + TOOLACE_SYSTEM_PROMPT + tools_json
    return TOOLACE_SYSTEM_PROMPT + tools_json


def _with_meta(row: dict[str, Any], sample: Sample) -> dict[str, Any]:
    meta = dict(sample.meta)
    if sample.dialog_type and "dialog_type" not in meta:
        meta["dialog_type"] = sample.dialog_type
    if meta:
        row["meta"] = meta
    return row


def _grouped(turns: list[SampleTurn]) -> Iterator[SampleTurn | list[SampleTurn]]:
    """Turns, with each run of consecutive tool turns as one list."""
    run: list[SampleTurn] = []
    for turn in turns:
        if turn.role == "tool":
            run.append(turn)
            continue
        if run:
            yield run
            run = []
        yield turn
    if run:
        yield run


def _write_toolace(sample: Sample) -> dict[str, Any]:
    conversations: list[dict[str, str]] = []
    for item in _grouped(sample.turns):
        if isinstance(item, list):
            results = [{"name": t.name, "results": _result_value(t.content)} for t in item]
            conversations.append({"from": "tool", "value": _dumps(results)})
        elif item.tool_calls:
            conversations.append({"from": "assistant", "value": render_calls(item.tool_calls)})
        else:
            conversations.append({"from": item.role, "value": _turn_text(item)})
    return _with_meta({"id": sample.id, "system": _toolace_system(sample), "conversations": conversations}, sample)


def _write_openai(sample: Sample) -> dict[str, Any]:
    tools = [{"type": "function", "function": _tool_entry(t, parameters_schema(t.parameters), result_schema=False)}
             for t in sample.tools]
    example = openai_example(sample.turns, tools, sample.id, custom_system(sample.system), _turn_text)
    return _with_meta({"id": sample.id, "tools": example["tools"], "messages": example["messages"]}, sample)


def _call_json(calls: list[ToolCall]) -> str:
    entries = [{"name": c.name, "arguments": c.arguments} for c in calls]
    return _dumps(entries[0] if len(entries) == 1 else entries)


def _write_sharegpt(sample: Sample) -> dict[str, Any]:
    conversations: list[dict[str, str]] = []
    for item in _grouped(sample.turns):
        if isinstance(item, list):
            value = (item[0].content or "") if len(item) == 1 else _dumps([_result_value(t.content) for t in item])
            conversations.append({"from": "observation", "value": value})
        elif item.role == "user":
            conversations.append({"from": "human", "value": item.content or ""})
        elif item.tool_calls:
            conversations.append({"from": "function_call", "value": _call_json(item.tool_calls)})
        elif item.call_error:
            conversations.append({"from": "function_call", "value": item.call_text or ""})
        else:
            conversations.append({"from": "gpt", "value": item.content or ""})
    row: dict[str, Any] = {"id": sample.id, "conversations": conversations,
                           "tools": _dumps([_tool_entry(t, t.parameters) for t in sample.tools])}
    custom = custom_system(sample.system)
    if custom:
        row["system"] = custom
    return _with_meta(row, sample)


def _write_xlam(sample: Sample) -> dict[str, Any]:
    query = next((t.content or "" for t in sample.turns if t.role == "user"), "")
    first = next((t for t in sample.turns if t.role == "assistant" and (t.tool_calls or t.call_error)), None)
    if first is not None and first.call_error:
        answers = first.call_text or ""
    else:
        calls = first.tool_calls if first is not None else []
        answers = _dumps([{"name": c.name, "arguments": c.arguments} for c in calls])
    row = {"id": int(sample.id) if sample.id.isdigit() else sample.id, "query": query,
           "tools": _dumps([_tool_entry(t, schema_to_xlam(t.parameters)) for t in sample.tools]), "answers": answers}
    return _with_meta(row, sample)


def _write_bfcl(sample: Sample) -> dict[str, Any]:
    question: list[dict[str, Any]] = []
    custom = custom_system(sample.system)
    if custom:
        question.append({"role": "system", "content": custom})
    first: SampleTurn | None = None
    for turn in sample.turns:
        if turn.role == "assistant" and (turn.tool_calls or turn.call_error):
            first = turn
            break
        if turn.role in ("user", "assistant"):
            question.append({"role": turn.role, "content": _turn_text(turn)})
    row: dict[str, Any] = {"id": sample.id, "question": [question],
                           "function": [_tool_entry(t, t.parameters) for t in sample.tools]}
    if first is not None and first.call_error:
        row["result"] = first.call_text or ""
    else:
        calls = first.tool_calls if first is not None else []
        row["ground_truth"] = [{c.name: {k: [v] for k, v in c.arguments.items()}} for c in calls]
    return _with_meta(row, sample)


_WRITERS: dict[str, Callable[[Sample], dict[str, Any]]] = {
    "toolace": _write_toolace, "openai": _write_openai, "sharegpt": _write_sharegpt, "xlam": _write_xlam,
    "bfcl": _write_bfcl,
}


def row_from_sample(sample: Sample, fmt: FormatName) -> dict[str, Any]:
    """The sample as one row of ``fmt`` (see the module docstring for what each format cannot hold)."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _WRITERS[fmt](sample)


# ------------------------------------------------------------------------------------------------- files


def _strip_compression(path: str) -> str:
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zstd"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _file_kind(url: str) -> FileKind:
    """How the file is written (by extension, else by its first bytes); UserError when it cannot be read."""
    path = _strip_compression(url.split("?", 1)[0].lower())
    try:
        if path.endswith((".parquet", ".pq")):
            with fsspec.open(url, "rb") as handle:
                pq.ParquetFile(handle)
            return "parquet"
        with fsspec.open(url, "rb", compression="infer") as handle:
            head = handle.read(4096)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {url}: {type(exc).__name__}: {_error_text(exc)}") from None
    if path.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if head.startswith(b"PAR1"):
        return "parquet"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"[":
        return "json"
    if first == b"{" or (not first and path.endswith(".json")):
        return "jsonl"
    raise UserError(f"cannot read {url}: not a JSON, JSONL or parquet file (by its name or its first bytes)")


def _row_of(raw: Any, text_column: str | None) -> tuple[Any, Problem | None]:
    """The row a record holds: itself, or the JSON in its ``text_column``."""
    if text_column is None:
        return raw, None
    if not isinstance(raw, dict) or text_column not in raw:
        return None, Problem(check="sample_fields_v1", reason=f"no column {text_column!r}")
    value = raw[text_column]
    if isinstance(value, str):
        try:
            return json.loads(value), None
        except (ValueError, RecursionError) as exc:
            return None, Problem(check="sample_json_v1",
                                 reason=f"{text_column!r} is not valid JSON: {_error_text(exc)}")
    return value, None


def _raw_jsonl(url: str) -> Iterator[tuple[Any, Problem | None]]:
    with fsspec.open(url, "r", encoding="utf-8", errors="replace", compression="infer") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line), None
            except (ValueError, RecursionError) as exc:
                yield None, Problem(check="sample_json_v1",
                                    reason=f"line {number} is not valid JSON: {_error_text(exc)}")


def _raw_json_array(url: str) -> Iterator[tuple[Any, Problem | None]]:
    """The items of a top-level JSON array, one by one; a broken item ends the file with one problem."""
    with fsspec.open(url, "r", encoding="utf-8", errors="replace", compression="infer") as handle:
        text = handle.read()
    decoder = json.JSONDecoder()
    pos = text.find("[") + 1
    number = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            yield None, Problem(check="sample_json_v1",
                                reason=f"the JSON array ends early (cut off after item {number})")
            return
        if text[pos] == "]":
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            yield None, Problem(check="sample_json_v1",
                                reason=f"item {number} of the JSON array is not valid JSON: {_error_text(exc)}")
            return
        number += 1
        yield value, None


def _raw_parquet(url: str) -> Iterator[tuple[Any, Problem | None]]:
    with fsspec.open(url, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                yield row, None


def read_samples(url: str, fmt: str = "auto", text_column: str | None = None) -> Iterator[Sample]:
    """The samples of a JSON (top-level array), JSONL or parquet file, local or any fsspec URL, streamed.

    ``fmt="auto"`` detects each row's format. ``text_column`` names a column holding each sample as a JSON
    string (or object). A row that cannot be read becomes a Sample with its problem (``sample_json_v1``
    for a line or cell that is not JSON; its ``format`` is the last detected one, or ``toolace``). Raises
    :class:`UserError` (at the call, before any row) only when the file itself cannot be read.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    kind = _file_kind(url)
    raw_rows = {"jsonl": _raw_jsonl, "json": _raw_json_array, "parquet": _raw_parquet}[kind](url)
    return _samples(raw_rows, fmt, text_column)


def _samples(raw_rows: Iterator[tuple[Any, Problem | None]], fmt: str, text_column: str | None) -> Iterator[Sample]:
    last: FormatName | None = fmt if fmt in FORMATS else None  # type: ignore[assignment]
    for index, (raw, problem) in enumerate(raw_rows):
        row = raw
        if problem is None:
            row, problem = _row_of(raw, text_column)
        if problem is not None:
            yield Sample(index=index, id=str(index), format=last, problems=[problem])
            continue
        sample = sample_from_row(row, fmt, index)  # type: ignore[arg-type]
        if not any(p.check == "format_detect_v1" for p in sample.problems):
            last = sample.format
        yield sample


def _cell(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _dumps(value)


def write_samples(samples: Iterable[Sample], fmt: FormatName, url: str) -> int:
    """Write samples as rows of ``fmt``: parquet when the URL ends with ``.parquet`` (every column a string,
    nested values JSON-encoded), a JSON array when it ends with ``.json``, else JSONL. Returns the count."""
    if fmt not in _WRITERS:
        raise UserError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = url.split("?", 1)[0].lower()
    count = 0
    if path.endswith(".parquet"):
        columns = _COLUMNS[fmt]
        schema = pa.schema([(c, pa.string()) for c in columns])
        with fsspec.open(url, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
            batch: list[dict[str, Any]] = []
            for sample in samples:
                row = row_from_sample(sample, fmt)
                batch.append({c: _cell(row.get(c)) for c in columns})
                count += 1
                if len(batch) >= _PARQUET_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or count == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        return count
    as_array = _strip_compression(path).endswith(".json")
    with fsspec.open(url, "w", encoding="utf-8", compression="infer") as handle:
        if as_array:
            handle.write("[")
        for sample in samples:
            line = _dumps(row_from_sample(sample, fmt))
            if as_array:
                handle.write(("," if count else "") + "\n" + line)
            else:
                handle.write(line + "\n")
            count += 1
        if as_array:
            handle.write("\n]\n")
    return count


def convert(url_in: str, fmt_in: str, url_out: str, fmt_out: FormatName) -> dict[str, int]:
    """Read ``url_in`` (``fmt_in`` or ``"auto"``) and write ``url_out`` in ``fmt_out``, streaming.

    Every sample with turns is written, problems and all (a call that did not parse travels as its raw
    text); a sample with no turns (a line that is not JSON, a row of the wrong shape) is skipped. Returns
    ``{"read", "written", "with_problems", "skipped"}``.
    """
    counts = {"read": 0, "written": 0, "with_problems": 0, "skipped": 0}
    samples = read_samples(url_in, fmt_in)  # raises UserError here, before the output is opened

    def kept() -> Iterator[Sample]:
        for sample in samples:
            counts["read"] += 1
            if sample.problems:
                counts["with_problems"] += 1
            if not sample.turns:
                counts["skipped"] += 1
                continue
            yield sample

    counts["written"] = write_samples(kept(), fmt_out, url_out)
    return counts
