"""Reading a model's tool calls in its family's own format, the way vLLM's tool parsers read them.

A model served with function calling writes its calls in the format its chat template taught it; an
OpenAI-compatible server (vLLM's ``--tool-call-parser``) reads them out of the text. This module does the
same for a local model's answer, one function per format, mirroring vLLM's ``extract_tool_calls`` (non
streaming) rule by rule:

- ``hermes`` (Hermes 2/3, Qwen2.5, Qwen3, Granite 4: vLLM's ``hermes``): every ``<tool_call>...</tool_call>``
  block (the last may be left open at the end of the text) holds one JSON object with ``name`` and
  ``arguments``; the text before the first block is the content. No ``<tool_call>`` at all: a text answer.
- ``llama3_json`` (Llama 3.1/3.2/3.3: vLLM's ``llama3_json``): every JSON object in the text (found at each
  ``{`` outside an object already read, with a JSON decoder, so any nesting depth) is a call with ``name`` and
  ``arguments`` or ``parameters``; ``<|python_tag|>`` and ``;`` between objects are skipped over. No ``{`` at
  all: a text answer.
- ``mistral`` (vLLM's ``mistral``): the text is split at ``[TOOL_CALLS]``; before it is the content. The older
  form (Mistral 7B v0.3, Nemo: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, one ``[TOOL_CALLS]``)
  is a JSON list, else the span from the first ``[{`` to the last ``}]``; the newer one (tokenizer v11+,
  Mistral Small 3.2, Devstral: ``[TOOL_CALLS]name{...}``, or ``[TOOL_CALLS]name[ARGS]{...}`` with an optional
  ``[CALL_ID]id`` after the name) gives one call per ``[TOOL_CALLS]``. The form is told from the text: the
  older one starts with ``[`` after the token.
- ``pythonic`` (Llama 3.2/4 pythonic, ToolACE-8B: vLLM's ``pythonic``): the whole answer is a Python list of
  calls ``[f(a=1), g(b="x")]``, read with :mod:`ast` (never run); keyword values must be literals (strings,
  numbers, booleans, None, lists, dicts with literal keys; a negated number is also taken, which vLLM refuses).
  Positional arguments are ignored, as vLLM does. An answer that does not start like a call list is text.

As in vLLM, a text answer is not an error, and an answer that tries to call (its format's marker is there) but
does not parse is read as text: :class:`ParsedAnswer` then has no call and says why in ``error``. Reasoning
(``<think>...</think>``) before the answer is set aside first, as vLLM's reasoning parsers do. Nothing here
raises on any input: answers longer than :data:`MAX_TEXT_CHARS`, JSON or Python nested too deeply, and any
other malformed text are an ``error``.

:func:`detect_tool_format` tells which of these formats a chat template writes, by rendering a known call
through it (:func:`tasks.formats.chat_templates.render`) and reading it back with each parser.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

ToolFormat = Literal["hermes", "llama3_json", "mistral", "pythonic"]
TOOL_FORMATS: tuple[ToolFormat, ...] = get_args(ToolFormat)
MAX_TEXT_CHARS = 100_000  # as the BFCL checker's answer limit: longer answers are not parsed

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_BOT, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
THINK_END = "</think>"
_PYTHONIC_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


@dataclass(frozen=True)
class ParsedCall:
    """One call: the function's name and its arguments as the model wrote them (an object, normally; any
    JSON value is kept as it is, and a checker then judges a non-object as a malformed call)."""

    name: str
    arguments: Any


@dataclass(frozen=True)
class ParsedAnswer:
    """What a parser read: the calls (none for a text answer), the text besides them, and why an attempted
    call did not parse (``error``; the answer then has no call and its whole text as content)."""

    calls: list[ParsedCall] = field(default_factory=list)
    content: str | None = None
    error: str | None = None

    @property
    def tools_called(self) -> bool:
        return bool(self.calls)


class _ParseFailure(ValueError):
    """An attempted call that does not parse (internal: becomes :attr:`ParsedAnswer.error`)."""


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at character {exc.pos})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"{type(exc).__name__}: {_short(str(exc))}"


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _ParseFailure(_json_problem(exc)) from None


def _call_of(obj: Any, where: str, argument_keys: tuple[str, ...] = ("arguments",)) -> ParsedCall:
    """A ``{"name": ..., "arguments": ...}`` object as a call (vLLM reads ``obj["name"]`` and the arguments key)."""
    if not isinstance(obj, dict):
        raise _ParseFailure(f"{where} is a JSON {type(obj).__name__}, not an object with name and arguments")
    if "name" not in obj:
        raise _ParseFailure(f"{where} has no \"name\"")
    name = obj["name"]
    if not isinstance(name, str):
        raise _ParseFailure(f"{where}: \"name\" is a {type(name).__name__}, not a string")
    key = next((k for k in argument_keys if k in obj), None)
    if key is None:
        raise _ParseFailure(f"{where} has no " + " or ".join(f'"{k}"' for k in argument_keys))
    return ParsedCall(name, obj[key])


# ------------------------------------------------------------------------------------------------- parsers


def parse_hermes(text: str) -> ParsedAnswer:
    """Hermes/Qwen ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (see the module docstring)."""
    if HERMES_START not in text:
        return ParsedAnswer([], text)
    bodies: list[str] = []
    position = 0
    while (start := text.find(HERMES_START, position)) != -1:  # regex <tool_call>(.*?)</tool_call>|<tool_call>(.*)
        begin = start + len(HERMES_START)
        end = text.find(HERMES_END, begin)
        if end == -1:
            bodies.append(text[begin:])
            break
        bodies.append(text[begin:end])
        position = end + len(HERMES_END)
    calls = []
    for k, body in enumerate(bodies, 1):
        where = f"<tool_call> block {k}"
        try:
            calls.append(_call_of(_load_json(body), where))
        except _ParseFailure as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            return ParsedAnswer([], text, f"hermes: {message}")
    content = text[: text.find(HERMES_START)]
    return ParsedAnswer(calls, content or None)


def parse_llama3_json(text: str) -> ParsedAnswer:
    """Llama 3.x JSON calls, ``{"name": ..., "parameters"|"arguments": {...}}``, after an optional
    ``<|python_tag|>``, several separated by ``;`` (see the module docstring)."""
    if PYTHON_TAG not in text and "{" not in text:
        return ParsedAnswer([], text)
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    end = -1
    position = 0
    while (start := text.find("{", position)) != -1:
        position = start + 1
        if start < end:  # inside an object already read
            continue
        where = f"JSON object {len(calls) + 1} (character {start})"
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError) as exc:
            return ParsedAnswer([], text, f"llama3_json: {where}: {_json_problem(exc)}")
        try:
            calls.append(_call_of(obj, where, ("arguments", "parameters")))
        except _ParseFailure as exc:
            return ParsedAnswer([], text, f"llama3_json: {exc}")
    if not calls:
        return ParsedAnswer([], text)
    return ParsedAnswer(calls, None)


def _mistral_json_list(raw: str) -> list[ParsedCall]:
    """The older form's ``[{...}, ...]`` (or, when that is not JSON, the span from the first ``[{`` to the
    last ``}]``, as vLLM's fallback regex ``\\[{.*}\\]`` finds it)."""
    stripped = raw.strip()
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError) as first:
        begin, end = stripped.find("[{"), stripped.rfind("}]")
        if begin == -1 or end < begin + 2:
            raise _ParseFailure(f"the calls after {MISTRAL_BOT} are {_json_problem(first)}") from None
        value = _load_json(stripped[begin: end + 2])
    if not isinstance(value, list):
        raise _ParseFailure(f"the calls after {MISTRAL_BOT} are a JSON {type(value).__name__}, not a list")
    return [_call_of(item, f"call {k}") for k, item in enumerate(value, 1)]


def _mistral_named_call(raw: str, k: int) -> ParsedCall | None:
    """One ``name{...}`` / ``name[ARGS]{...}`` / ``name[CALL_ID]id[ARGS]{...}`` of the newer form (None: no
    ``{``, skipped as vLLM does)."""
    if MISTRAL_ARGS in raw:
        name, arguments = raw.split(MISTRAL_ARGS, 1)
    elif "{" in raw:
        cut = raw.find("{")
        name, arguments = raw[:cut], raw[cut:]
    else:
        return None
    name = name.split(MISTRAL_CALL_ID, 1)[0].strip()
    if not name:
        raise _ParseFailure(f"call {k} after {MISTRAL_BOT} has no function name")
    arguments = arguments.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(arguments)
    except (ValueError, RecursionError) as exc:
        raise _ParseFailure(f"call {k} ({_short(name, 60)}): arguments are {_json_problem(exc)}") from None
    if arguments[end:].strip():
        raise _ParseFailure(f"call {k} ({_short(name, 60)}): text after its arguments: "
                            f"{_short(arguments[end:], 60)!r}")
    return ParsedCall(name, value)


def parse_mistral(text: str) -> ParsedAnswer:
    """Mistral ``[TOOL_CALLS]`` calls, in either form (see the module docstring)."""
    if MISTRAL_BOT not in text:
        return ParsedAnswer([], text)
    content, *raw_calls = text.split(MISTRAL_BOT)
    try:
        if raw_calls[0].lstrip().startswith("["):
            if len(raw_calls) != 1:
                raise _ParseFailure(f"{len(raw_calls)} {MISTRAL_BOT} tokens before JSON call lists; the list form "
                                    "takes one")
            calls = _mistral_json_list(raw_calls[0])
        else:
            found = [_mistral_named_call(raw, k) for k, raw in enumerate(raw_calls, 1)]
            calls = [c for c in found if c is not None]
            if not calls:
                raise _ParseFailure(f"no call after {MISTRAL_BOT}")
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"mistral: {exc}")
    return ParsedAnswer(calls, content or None)


def _literal(node: ast.expr, depth: int = 0) -> Any:
    """A keyword value as vLLM's pythonic parser reads it: constants, lists and dicts with constant keys (and,
    here, a negated number)."""
    if depth > 100:
        raise _ParseFailure("value nested too deeply")
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis or isinstance(node.value, bytes | complex):
            raise _ParseFailure(f"unsupported literal {ast.unparse(node)[:40]}")
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        return -node.operand.value
    if isinstance(node, ast.List):
        return [_literal(e, depth + 1) for e in node.elts]
    if isinstance(node, ast.Dict):
        if not all(isinstance(k, ast.Constant) for k in node.keys):
            raise _ParseFailure("dict arguments must have literal keys")
        keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        return {k: _literal(v, depth + 1) for k, v in zip(keys, node.values, strict=True)}
    raise _ParseFailure(f"arguments must be literals, not {type(node).__name__}")


def parse_pythonic(text: str) -> ParsedAnswer:
    """A pythonic call list ``[f(a=1), g(b="x")]``, read with :mod:`ast` (see the module docstring)."""
    stripped = text.strip()
    if not _PYTHONIC_START.match(stripped):
        return ParsedAnswer([], text)
    try:
        try:
            module = ast.parse(stripped)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise _ParseFailure(f"not Python ({type(exc).__name__}: {_short(str(exc), 120)})") from None
        node = module.body[0].value if module.body and isinstance(module.body[0], ast.Expr) else None
        if not isinstance(node, ast.List) or not all(isinstance(e, ast.Call) for e in node.elts):
            raise _ParseFailure("the answer is not a list of function calls")
        calls = []
        for element in node.elts:
            if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Name):
                    raise _ParseFailure(f"invalid function name {_short(ast.unparse(element), 60)!r}")
            arguments: dict[str, Any] = {}
            for keyword in element.keywords:
                if keyword.arg is None:
                    raise _ParseFailure("** arguments are not literals")
                arguments[keyword.arg] = _literal(keyword.value)
            calls.append(ParsedCall(element.func.id, arguments))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"pythonic: {exc}")
    except RecursionError:
        return ParsedAnswer([], text, "pythonic: nested too deeply")
    return ParsedAnswer(calls, None)


PARSERS: dict[ToolFormat, Callable[[str], ParsedAnswer]] = {
    "hermes": parse_hermes,
    "llama3_json": parse_llama3_json,
    "mistral": parse_mistral,
    "pythonic": parse_pythonic,
}


def without_reasoning(text: str) -> str:
    """The answer after its reasoning: the text after the last ``</think>`` (as BFCL's handlers and vLLM's
    reasoning parsers cut it), or the whole text."""
    return text.rsplit(THINK_END, 1)[1].lstrip("\n") if THINK_END in text else text


def parse_tool_calls(text: Any, tool_format: str) -> ParsedAnswer:
    """The calls of a model's answer in ``tool_format`` (one of :data:`TOOL_FORMATS`). Never raises for any
    text: a malformed call, an over-long answer or a non-string are an ``error`` (and no call)."""
    if tool_format not in PARSERS:
        raise ValueError(f"unknown tool-call format {tool_format!r}: choose from {', '.join(TOOL_FORMATS)}")
    if not isinstance(text, str):
        return ParsedAnswer([], None, f"{tool_format}: the answer is a {type(text).__name__}, not text")
    if len(text) > MAX_TEXT_CHARS:
        return ParsedAnswer([], text, f"{tool_format}: the answer is {len(text)} characters, over the "
                                      f"{MAX_TEXT_CHARS} limit")
    try:
        return PARSERS[tool_format](without_reasoning(text))  # type: ignore[index]
    except (RecursionError, MemoryError) as exc:  # belt and braces: each parser already turns these into errors
        return ParsedAnswer([], text, f"{tool_format}: {type(exc).__name__}")


def bfcl_calls(calls: list[ParsedCall]) -> list[dict[str, Any]]:
    """Calls in the structure BFCL's checker takes (what its FC handlers' ``decode_ast`` gives): one
    ``{name: arguments}`` per call."""
    return [{call.name: call.arguments} for call in calls]


# ------------------------------------------------------------------------------------- a template's format


def tokenizer_template(tokenizer: Any, name: str) -> Any:
    """A tokenizer's chat template as a :class:`tasks.formats.chat_templates.ChatTemplate` (its ``tool_use``
    one when it has several) with its special tokens; None when it has none."""
    from tasks.formats.chat_templates import ChatTemplate

    text = getattr(tokenizer, "chat_template", None)
    if isinstance(text, dict):
        text = text.get("tool_use") or text.get("default")
    if not text:
        return None
    return ChatTemplate(name, str(text), getattr(tokenizer, "bos_token", None) or "",
                        getattr(tokenizer, "eos_token", None) or "")

PROBE_TOOL_NAME = "tcprobe_weather"
PROBE_ARGUMENTS: dict[str, Any] = {"city": "Paris", "days": 3}


def probe_tools() -> list[dict[str, Any]]:
    return [{"type": "function", "function": {
        "name": PROBE_TOOL_NAME, "description": "Forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}}]


def probe_messages(calls: int = 1) -> list[dict[str, Any]]:
    """A user request and an assistant turn that makes ``calls`` probe calls (ids as Mistral wants them)."""
    return [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": f"tcProbe0{k}", "type": "function",
                 "function": {"name": PROBE_TOOL_NAME, "arguments": dict(PROBE_ARGUMENTS)}} for k in range(calls)]}]


def rendered_assistant_turn(render: Callable[[list[dict[str, Any]], bool], str],
                            messages: list[dict[str, Any]]) -> str:
    """The text a template writes for the last (assistant) message: the whole chat rendered, less the chat
    before it rendered with the generation prompt. ``render(messages, add_generation_prompt)``."""
    full = render(messages, False)
    prompt = render(messages[:-1], True)
    if not full.startswith(prompt):
        raise ValueError("the template does not render the chat before an assistant turn as a prefix of the chat "
                         "with it")
    return full[len(prompt):]


def detect_tool_format(render: Callable[[list[dict[str, Any]], bool], str],
                       eos_token: str = "") -> tuple[ToolFormat | None, str]:
    """Which format a chat template writes calls in: a probe call is rendered (``render(messages,
    add_generation_prompt)``, e.g. the template with the probe tools), its end-of-turn ``eos_token`` cut off
    (generation stops there), and read back by each parser, the most specific first (hermes, mistral,
    pythonic, then llama3_json, which takes any JSON object). Returns the format and the rendered turn, or
    None and why not."""
    try:
        turn = rendered_assistant_turn(render, probe_messages()).rstrip()
    except Exception as exc:  # noqa: BLE001 - any template error is the answer
        return None, f"rendering a tool call fails: {type(exc).__name__}: {_short(str(exc))}"
    if eos_token and turn.endswith(eos_token):
        turn = turn[: -len(eos_token)]
    expected = [ParsedCall(PROBE_TOOL_NAME, PROBE_ARGUMENTS)]
    for name in ("hermes", "mistral", "pythonic", "llama3_json"):
        parsed = parse_tool_calls(turn, name)
        if parsed.calls == expected:
            return name, turn  # type: ignore[return-value]
    return None, (f"it writes a tool call as {_short(turn, 160)!r}, which none of the formats "
                  f"{', '.join(TOOL_FORMATS)} reads")
