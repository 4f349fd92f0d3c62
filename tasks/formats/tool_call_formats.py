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
- ``lfm2`` (LFM2/LFM2.5: vLLM's ``lfm2``): a pythonic call list between ``<|tool_call_start|>`` and
  ``<|tool_call_end|>`` (or the end of the text), read as ``pythonic`` reads one once it starts with ``[`` and ends
  with ``]``; the content is the text before the start token and after the end token (up to a last, orphan end
  token: LFM2 echoes its calls), joined by a line break. No start token: a text answer.
- ``kimi_k3`` (Kimi K3's XTML: vLLM's ``kimi_k3``): after ``<|open|>tools<|sep|>`` (to ``<|close|>tools<|sep|>`` or
  the end), each ``<|open|>call tool="NAME" ...<|sep|>`` element up to the first ``<|close|>call<|sep|>``, holding
  ``<|open|>argument key="KEY" type="TYPE"<|sep|>value<|close|>argument<|sep|>`` elements (blanks allowed inside the
  markers; attribute values unescaped from ``&quot;`` and ``&amp;``). A ``string`` value is the raw text; any other
  type is JSON, else the raw text; a call without a tool name is dropped. The content is the ``response`` channel's
  text. No tools channel: a text answer.
- ``apertus`` (Apertus: vLLM's ``apertus``): after ``<|tools_prefix|>`` (to ``<|tools_suffix|>`` or the end), a JSON
  list of one-key objects ``{"NAME": {arguments}}`` (a lone object is taken as a list of one); a truncated list is
  completed as vLLM completes it (``partial_json_parser``), so a call cut off by the token limit still counts with
  what it has. Text before the block and after it is the content. Arguments that are not an object are an error
  (vLLM passes them on; BFCL's checkers cannot score them). No prefix token: a text answer.
- ``seed_oss`` (ByteDance Seed-OSS: vLLM's ``seed_oss``, adapted from an older ``qwen3_coder``): after the first
  ``</seed:think>`` (when ``<seed:think>`` is there too), every ``<seed:tool_call>`` block (to its close, else to the
  end; no block at all: the whole text) holds ``<function=NAME>`` elements (to ``</function>``, else the end) of
  ``<parameter=KEY>value</parameter>`` (one line break each side dropped). Values are typed by the offered tools with
  its own rules (:func:`seed_value`): ``null`` is None whatever the type, a boolean that does not read ``true`` is
  False, arrays are Python literals (JSON's ``true`` keeps one text). A name or key without its ``>`` fails vLLM's
  whole reading. No ``<function=``: a text answer. Tried after ``qwen3_coder`` in detection, since it reads that
  format too.
- ``nemotron_nano_v2`` (NVIDIA Nemotron Nano 2: vLLM's ``nemotron_nano_v2``): every closed ``<TOOLCALL>...</TOOLCALL>``
  block holds JSON calls ``{"name": ..., "arguments": {...}}`` (wrapped in ``[...]`` where the brackets are missing);
  a call without a string name or without arguments is skipped, as vLLM skips it; arguments written as a string are
  read as the JSON object it holds (as BFCL's handler reads what vLLM passes on), anything else that is not an object
  is an error. The text before the first block is the content. No ``<TOOLCALL>``: a text answer.
- ``qwen3_coder`` (Qwen3-Coder, Qwen3.5, Step 3.5, Nemotron 3: vLLM's ``qwen3_coder``): ``<tool_call>`` blocks (a block
  ends at a ``</tool_call>`` followed by another ``<tool_call>`` or the end; the last may be left open; no block
  at all: the whole text) holding ``<function=NAME>`` and one ``<parameter=KEY>value</parameter>`` per argument
  (a parameter starts a line; its value ends at a ``</parameter>`` followed by another parameter, ``</function>``,
  ``</tool_call>`` or the end; one newline each side is dropped). A value is text; the tool's schema converts it
  (:func:`schema_value`): integer, number, boolean, null, and JSON (or a Python literal) for objects and arrays,
  text when it does not convert. No ``<function=`` at all: a text answer; a name holding ``{}<>"'`` or a space is
  no call.
- ``glm45`` (GLM-4.5/4.6, Ling 3: vLLM's ``glm45``): closed ``<tool_call>NAME`` blocks, the name alone on the
  first line, then ``<arg_key>KEY</arg_key>`` ``<arg_value>value</arg_value>`` pairs; a value is text for a
  string-typed parameter, else JSON, else a Python literal, else text. No ``<tool_call>`` at all: a text answer.
  ``glm47`` (GLM-4.7: vLLM's ``glm47``) is the same but the name runs to the first ``<arg_key>``, with or without
  a line break.
- ``deepseek_v31`` (DeepSeek-V3.1: vLLM's ``deepseek_v31``): ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{arguments
  JSON}<｜tool▁call▁end｜>`` after ``<｜tool▁calls▁begin｜>``, each call on one line; the text before that token
  is the content. No ``<｜tool▁calls▁begin｜>``: a text answer.
- ``deepseek_v3`` (DeepSeek-V3 and R1, its distilled models: vLLM's ``deepseek_v3``): after
  ``<｜tool▁calls▁begin｜>``, each ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME``, then the arguments JSON on a
  line of its own between a `````json`` line and ````` ``<｜tool▁call▁end｜>`` (vLLM's pattern does not cross lines:
  JSON written over several lines is no call); a type other than ``function`` fails vLLM's whole reading, so here
  the answer is text with the reason. The text before the calls token is the content. No calls token: a text
  answer.
- ``gemma4`` (Gemma 4: vLLM's ``gemma4``): ``<|tool_call>call:NAME{key:value,...}<tool_call|>``, keys bare,
  strings between ``<|"|>`` marks, objects ``{...}`` and lists ``[...]`` nested, other values ``true``/``false``,
  ``null``, numbers (a float when written with a ``.``), else the bare text. No ``<|tool_call>``: a text answer.
- ``kimi_k2`` (Kimi K2: vLLM's ``kimi_k2``): after ``<|tool_calls_section_begin|>``, each
  ``<|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{arguments JSON}<|tool_call_end|>`` (the name is
  the id's part before ``:``, after its last ``.``). No section token: a text answer.
- ``harmony`` (gpt-oss: vLLM's ``openai``, which reads OpenAI's harmony messages): the answer is messages, each a
  header (``<|channel|>CHANNEL``, a recipient ``to=...``, a content type), ``<|message|>`` and its text up to
  ``<|end|>``, ``<|call|>`` or ``<|return|>``, the next one after ``<|start|>``; a message to ``functions.NAME`` is a
  call with its text as JSON arguments, the ``final`` channel's text (else a recipient-less ``commentary``'s) is the
  content. Read from the text here (vLLM reads the token ids). No ``to=functions.``: a text answer.
- ``minimax_m2`` (MiniMax M2/M2.5: vLLM's ``minimax_m2``): closed ``<minimax:tool_call>`` blocks of closed
  ``<invoke name="NAME">`` elements, each holding ``<parameter name="KEY">value</parameter>`` (the name runs to the
  first ``>``, one pair of quotes taken off; the value is stripped). A value is text; the tool's schema converts it
  (:func:`minimax_value`: ``null``/``none``/``nil`` is None for any type; integer, number, a lenient boolean, JSON);
  a parameter the tool does not have stays text. The text before the first block is the content. No
  ``<minimax:tool_call>``: a text answer.
- ``deepseek_v32`` (DeepSeek V3.2) and ``deepseek_v4`` (DeepSeek V4): DSML, closed ``<｜DSML｜function_calls>``
  (V4: ``<｜DSML｜tool_calls>``) blocks of ``<｜DSML｜invoke name="NAME">`` elements, each holding
  ``<｜DSML｜parameter name="KEY" string="true|false">value</｜DSML｜parameter>``. Read by the rules of vLLM's DeepSeek
  V4 parser, which subclasses its V3.2 one and adds the typing (:func:`dsml_value`): ``string="true"`` keeps the
  text as it is, else the schema's type converts it, else it is read as JSON; a call whose only argument is an
  ``arguments`` or ``input`` wrapper the tool lacks is unwrapped. (vLLM's first ``deepseek_v32`` release kept every
  value as text; both templates write non-strings as JSON with ``string="false"``.) No block token: a text answer.

``qwen3_coder``, ``glm45``, ``glm47``, ``minimax_m2``, ``deepseek_v32`` and ``deepseek_v4`` take the offered tools
(``tools=``, OpenAI's shape) to type the values, as vLLM's parsers take them from the request; without them every
value of ``qwen3_coder`` and ``minimax_m2`` stays text (``null`` aside), and DSML reads non-strings as JSON.

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

ToolFormat = Literal["hermes", "llama3_json", "mistral", "pythonic", "qwen3_coder", "glm45", "glm47",
                     "deepseek_v31", "gemma4", "kimi_k2", "harmony", "minimax_m2", "deepseek_v32", "deepseek_v4",
                     "deepseek_v3", "lfm2", "kimi_k3", "apertus", "seed_oss", "nemotron_nano_v2"]
TOOL_FORMATS: tuple[ToolFormat, ...] = get_args(ToolFormat)
MAX_TEXT_CHARS = 100_000  # as the BFCL checker's answer limit: longer answers are not parsed

HERMES_START, HERMES_END = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_BOT, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
THINK_END = "</think>"
QWEN3_FUNCTION, QWEN3_FUNCTION_END = "<function=", "</function>"
QWEN3_PARAMETER, QWEN3_PARAMETER_END = "<parameter=", "</parameter>"
GLM_KEY, GLM_KEY_END, GLM_VALUE, GLM_VALUE_END = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"
DEEPSEEK_CALLS = "<｜tool▁calls▁begin｜>"
DEEPSEEK_CALL, DEEPSEEK_SEP, DEEPSEEK_CALL_END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
GEMMA_CALL, GEMMA_CALL_END, GEMMA_QUOTE = "<|tool_call>call:", "}<tool_call|>", '<|"|>'
_GEMMA_NAME = re.compile(r"[\w\-.]+\{")
_GEMMA_MAX_DEPTH = 100
KIMI_SECTION, KIMI_CALL = "<|tool_calls_section_begin|>", "<|tool_call_begin|>"
KIMI_ARGUMENTS, KIMI_CALL_END = "<|tool_call_argument_begin|>", "<|tool_call_end|>"
_KIMI_ID = re.compile(r"([^<]+):\d+\s*")
HARMONY_START, HARMONY_MESSAGE, HARMONY_ENDS = "<|start|>", "<|message|>", ("<|end|>", "<|call|>", "<|return|>")
_HARMONY_RECIPIENT = re.compile(r"to=([^\s<]+)")
_HARMONY_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_PYTHONIC_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
LFM2_START, LFM2_END = "<|tool_call_start|>", "<|tool_call_end|>"
XTML_OPEN, XTML_CLOSE, XTML_SEP = "<|open|>", "<|close|>", "<|sep|>"
APERTUS_START, APERTUS_END = "<|tools_prefix|>", "<|tools_suffix|>"
SEED_CALL, SEED_CALL_END = "<seed:tool_call>", "</seed:tool_call>"
SEED_THINK, SEED_THINK_END = "<seed:think>", "</seed:think>"
NEMOTRON_CALL, NEMOTRON_CALL_END = "<TOOLCALL>", "</TOOLCALL>"
MINIMAX_CALLS, MINIMAX_CALLS_END = "<minimax:tool_call>", "</minimax:tool_call>"
MINIMAX_INVOKE, MINIMAX_INVOKE_END = "<invoke name=", "</invoke>"
MINIMAX_PARAMETER, MINIMAX_PARAMETER_END = "<parameter name=", "</parameter>"
DSML_TOKEN = "｜DSML｜"
DSML_OPEN = "<" + DSML_TOKEN
DSML_BLOCKS = {"deepseek_v32": "function_calls", "deepseek_v4": "tool_calls"}
DSML_ESCAPED_ARGUMENTS = "__vllm_param_arguments__"  # vLLM's name for a parameter called "arguments"


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


def _pythonic_calls(source: str) -> list[ParsedCall]:
    """The calls of a Python list of calls, read with :mod:`ast` as vLLM's ``handle_single_tool`` reads them (its
    first statement; keyword arguments, literal values); raises :class:`_ParseFailure`."""
    try:
        try:
            module = ast.parse(source)
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
    except RecursionError:
        raise _ParseFailure("nested too deeply") from None
    return calls


def parse_pythonic(text: str) -> ParsedAnswer:
    """A pythonic call list ``[f(a=1), g(b="x")]``, read with :mod:`ast` (see the module docstring)."""
    stripped = text.strip()
    if not _PYTHONIC_START.match(stripped):
        return ParsedAnswer([], text)
    try:
        return ParsedAnswer(_pythonic_calls(stripped), None)
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"pythonic: {exc}")


def parse_lfm2(text: str) -> ParsedAnswer:
    """LFM2/LFM2.5's ``<|tool_call_start|>[f(a=1)]<|tool_call_end|>`` (see the module docstring)."""
    start = text.find(LFM2_START)
    if start == -1:
        return ParsedAnswer([], text)
    end = text.find(LFM2_END, start)
    calls_text = text[start + len(LFM2_START): end if end != -1 else len(text)].strip()
    if not (calls_text.startswith("[") and calls_text.endswith("]")):  # vLLM's gate before it parses
        return ParsedAnswer([], text, f"lfm2: no [...] call list after {LFM2_START}")
    try:
        calls = _pythonic_calls(calls_text)
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"lfm2: {exc}")
    after = text[end + len(LFM2_END):] if end != -1 else ""
    after = after[after.rfind(LFM2_END) + len(LFM2_END):] if LFM2_END in after else after  # an echo of the calls
    content = "\n".join(part for part in (text[:start].strip(), after.strip()) if part)
    return ParsedAnswer(calls, content or None)


Tools = list[dict[str, Any]] | None


def tool_properties(tools: Tools, name: str) -> dict[str, Any]:
    """The ``parameters.properties`` of the offered tool named ``name`` (OpenAI's ``{"type": "function",
    "function": {...}}`` or the bare function), {} when there is none (vLLM's ``find_tool_properties``)."""
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if function.get("name") == name:
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, dict) else None
            return properties if isinstance(properties, dict) else {}
    return {}


def _python_literal(text: str) -> Any:
    """``text`` read as a Python literal with :mod:`ast` (never run), tuples as lists; raises ValueError when it is
    none (a set, bytes or complex number is none here: a JSON value cannot hold it)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(type(exc).__name__) from None

    def value(n: ast.expr, depth: int = 0) -> Any:
        if depth > 100:
            raise ValueError("nested too deeply")
        if isinstance(n, ast.Tuple | ast.List):
            return [value(e, depth + 1) for e in n.elts]
        if isinstance(n, ast.Dict):
            keys = [k.value for k in n.keys if isinstance(k, ast.Constant)]
            if len(keys) != len(n.keys):
                raise ValueError("keys must be literals")
            return {k: value(v, depth + 1) for k, v in zip(keys, n.values, strict=True)}
        try:  # a constant or a negated number
            return _literal(n, depth)
        except _ParseFailure as exc:
            raise ValueError(str(exc)) from None

    try:
        return value(node)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _schema_type(schema: Any) -> tuple[str, bool]:
    """A parameter schema's type, lower-cased (the first non-null one of an ``anyOf``; ``string`` when it names
    none), and whether it admits null (as vLLM's ``qwen3_coder`` reads it)."""
    if isinstance(schema, dict) and "type" in schema:
        kind = str(schema["type"]).strip().lower()
        return kind, kind == "null"
    if isinstance(schema, dict) and isinstance(schema.get("anyOf"), list):
        kinds = [str(o["type"]).strip().lower() for o in schema["anyOf"] if isinstance(o, dict) and "type" in o]
        others = [k for k in kinds if k != "null"]
        return (others[0] if others else "string"), "null" in kinds
    return "string", False


# The type names vLLM's qwen3_coder-derived parsers (qwen3_coder, seed_oss) sort a parameter's declared type by
STRING_TYPES = ("string", "str", "text", "varchar", "char", "enum")
INTEGER_PREFIXES = ("int", "uint", "long", "short", "unsigned")
NUMBER_PREFIXES = ("num", "float")
BOOLEAN_TYPES = ("boolean", "bool", "binary")


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def schema_value(text: str, schema: Any) -> Any:
    """A text value converted by its parameter's schema, rule for rule as vLLM's ``qwen3_coder`` converts it: no
    schema or a string type: the text; ``null``/``none`` for a type that admits null (or any non-string type):
    None; integer types: ``int`` (else the text); number/float: a float, an int when it is whole (else the text;
    a non-finite one stays text, which JSON cannot hold); boolean: whether it reads ``true``; objects, arrays and
    anything else: JSON, else a Python literal (read with :mod:`ast`), else the text."""
    if schema is None:
        return text
    kind, nullable = _schema_type(schema)
    if nullable and text.lower() in ("null", "none"):
        return None
    if kind in STRING_TYPES:
        return text
    if text.lower() in ("null", "none"):
        return None
    if kind.startswith(INTEGER_PREFIXES):
        return _int_or_text(text)
    if kind.startswith(NUMBER_PREFIXES):
        try:
            number = float(text)
        except ValueError:
            return text
        if number != number or number in (float("inf"), float("-inf")):
            return text
        return int(number) if number.is_integer() else number
    if kind in BOOLEAN_TYPES:
        return text.lower() == "true"
    container = kind in ("object", "array", "arr") or kind.startswith(("dict", "list"))
    if container:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            if isinstance(parsed, str):  # a Python repr written as a JSON string
                try:
                    return _python_literal(parsed)
                except ValueError:
                    return parsed
            return parsed
    try:
        parsed = _python_literal(text)
    except ValueError:
        return text
    if container and isinstance(parsed, str):
        try:
            return _python_literal(parsed)
        except ValueError:
            return parsed
    return parsed


def _at_line_start(text: str, prefix: str, position: int = 0) -> int:
    """The next ``prefix`` at or after ``position`` that starts the text or a line; -1 when none."""
    while (found := text.find(prefix, position)) != -1:
        if found == 0 or text[found - 1] == "\n":
            return found
        position = found + 1
    return -1


def _qwen3_parameter_name_in(text: str, names: set[str] | None) -> bool:
    """Whether ``text`` (starting with ``<parameter=``) names a parameter of ``names`` (any name when None)."""
    if names is None:
        return True
    close = text.find(">", len(QWEN3_PARAMETER))
    return close != -1 and text[len(QWEN3_PARAMETER):close] in names


def _qwen3_value_end(value: str, names: set[str] | None) -> int:
    """Where a parameter's value ends: the ``</parameter>`` (not matched by a ``<parameter=`` opened inside the
    value) followed by another parameter of ``names``, ``</function>``, ``</tool_call>`` or the end; -1 when
    there is none."""
    depth, position = 0, 0
    while position < len(value):
        opened = _at_line_start(value, QWEN3_PARAMETER, position)
        closed = value.find(QWEN3_PARAMETER_END, position)
        if closed == -1:
            return -1
        if opened != -1 and opened < closed:
            depth, position = depth + 1, opened + len(QWEN3_PARAMETER)
            continue
        position = closed + len(QWEN3_PARAMETER_END)
        if depth:
            depth -= 1
            continue
        after = value[position:].lstrip()
        if (not after or after.startswith((QWEN3_FUNCTION_END, HERMES_END))
                or (after.startswith(QWEN3_PARAMETER) and _qwen3_parameter_name_in(after, names))):
            return closed
    return -1


def _qwen3_function_end(text: str) -> int:
    """The ``</function>`` followed by nothing but blanks, or by ``</tool_call>``; -1 when there is none."""
    position = 0
    while (found := text.find(QWEN3_FUNCTION_END, position)) != -1:
        after = text[found + len(QWEN3_FUNCTION_END):].lstrip()
        if not after or after.startswith(HERMES_END):
            return found
        position = found + len(QWEN3_FUNCTION_END)
    return -1


def _qwen3_blocks(text: str) -> list[str]:
    """The ``<tool_call>`` blocks' bodies (see the module docstring); the whole text when there is no block."""
    blocks: list[str] = []
    position = 0
    while (start := text.find(HERMES_START, position)) != -1:
        body = text[start + len(HERMES_START):]
        search, end = 0, -1
        while (found := body.find(HERMES_END, search)) != -1:
            after = body[found + len(HERMES_END):].lstrip()
            if not after or after.startswith(HERMES_START):
                end = found
                break
            search = found + len(HERMES_END)
        if end == -1:
            blocks.append(body)
            break
        blocks.append(body[:end])
        position = start + len(HERMES_START) + end + len(HERMES_END)
    return blocks or [text]


def _qwen3_call(block: str, tools: Tools) -> ParsedCall | None:
    """The call of one block (None when it has no well-formed ``<function=NAME>``, skipped as vLLM skips it)."""
    begin = block.find(QWEN3_FUNCTION)
    if begin == -1:
        return None
    body = block[begin + len(QWEN3_FUNCTION):]
    close = body.find(">")
    name = body[:close] if close != -1 else ""
    if not name or any(c in '{}<>"\' \t\n\r' for c in name):
        return None
    body = body[close + 1:]
    end = _qwen3_function_end(body)
    body = body if end == -1 else body[:end]
    properties = tool_properties(tools, name)
    names = set(properties) or None
    arguments: dict[str, Any] = {}
    position = 0
    while (start := _at_line_start(body, QWEN3_PARAMETER, position)) != -1:
        close = body.find(">", start + len(QWEN3_PARAMETER))
        if close == -1:
            break
        key, value = body[start + len(QWEN3_PARAMETER):close], body[close + 1:]
        stop = _qwen3_value_end(value, names)
        if stop != -1:
            position = close + 1 + stop + len(QWEN3_PARAMETER_END)
        else:  # no closing tag: the next known parameter, else </function> or the end, ends the value
            stop = _at_line_start(value, QWEN3_PARAMETER)
            while stop != -1 and not _qwen3_parameter_name_in(value[stop:], names):
                stop = _at_line_start(value, QWEN3_PARAMETER, stop + 1)
            if stop != -1:
                position = close + 1 + stop
            else:
                stop = _qwen3_function_end(value)
                stop = len(value) if stop == -1 else stop
                position = len(body)
        value = value[:stop]
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        arguments[key] = schema_value(value, properties[key]) if key in properties else value
    return ParsedCall(name, arguments)


def parse_qwen3_coder(text: str, tools: Tools = None) -> ParsedAnswer:
    """Qwen3-Coder / Qwen3.5 XML calls, ``<tool_call><function=NAME><parameter=KEY>value</parameter>...``, their
    values typed by ``tools``' schemas (see the module docstring)."""
    if QWEN3_FUNCTION not in text:
        return ParsedAnswer([], text)
    calls = [call for block in _qwen3_blocks(text) if (call := _qwen3_call(block, tools)) is not None]
    if not calls:
        return ParsedAnswer([], text, f"qwen3_coder: no {QWEN3_FUNCTION}NAME> with a function name")
    content_end = -1
    position = 0
    while (start := text.find(HERMES_START, position)) != -1:  # the first block that holds a function
        close = text.find(HERMES_END, start + len(HERMES_START))
        limit = close if close != -1 else len(text)
        if text.find(QWEN3_FUNCTION, start + len(HERMES_START), limit) != -1:
            content_end = start
            break
        position = close + len(HERMES_END) if close != -1 else limit
    if content_end == -1:
        content_end = text.find(QWEN3_FUNCTION)
    return ParsedAnswer(calls, text[:content_end] or None)


def _blank_length(text: str, i: int, literal_newlines: bool) -> int:
    """How many characters of blank (and, for GLM-4.7, of literal ``\\n`` pairs) start at ``i``."""
    j = i
    while j < len(text):
        if text[j].isspace():
            j += 1
        elif literal_newlines and text.startswith("\\n", j):
            j += 2
        else:
            break
    return j - i


def _glm_pairs(body: str, literal_newlines: bool = False) -> list[tuple[str, str]]:
    """The ``<arg_key>K</arg_key> <arg_value>V</arg_value>`` pairs of a block, as vLLM's regex
    ``<arg_key>(.*?)</arg_key>\\s*<arg_value>(.*?)</arg_value>`` finds them (GLM-4.7's also skips literal
    ``\\n`` between them), in linear time."""
    pairs: list[tuple[str, str]] = []
    position = 0
    while (start := body.find(GLM_KEY, position)) != -1:
        search = start + len(GLM_KEY)
        while (close := body.find(GLM_KEY_END, search)) != -1:  # the first key end followed by a value
            after = close + len(GLM_KEY_END)
            gap = _blank_length(body, after, literal_newlines)
            if body.startswith(GLM_VALUE, after + gap):
                break
            search = after
        if close == -1:
            break
        value_start = after + gap + len(GLM_VALUE)
        value_end = body.find(GLM_VALUE_END, value_start)
        if value_end == -1:
            break
        pairs.append((body[start + len(GLM_KEY):close], body[value_start:value_end]))
        position = value_end + len(GLM_VALUE_END)
    return pairs


def _glm_value(text: str) -> Any:
    """vLLM's ``glm45`` ``_deserialize``: JSON, else a Python literal, else the text."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return _python_literal(text)
    except ValueError:
        return text


def parse_glm45(text: str, tools: Tools = None) -> ParsedAnswer:
    """GLM-4.5/4.6 ``<tool_call>NAME`` blocks with ``<arg_key>``/``<arg_value>`` pairs (see the module docstring)."""
    return _parse_glm(text, tools, "glm45")


def parse_glm47(text: str, tools: Tools = None) -> ParsedAnswer:
    """GLM-4.7 ``<tool_call>NAME<arg_key>...`` blocks: the name runs to the first ``<arg_key>``."""
    return _parse_glm(text, tools, "glm47")


def _parse_glm(text: str, tools: Tools, variant: str) -> ParsedAnswer:
    if HERMES_START not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    position = 0
    while (start := text.find(HERMES_START, position)) != -1:
        end = text.find(HERMES_END, start + len(HERMES_START))
        if end == -1:
            break
        position = end + len(HERMES_END)
        region = text[start + len(HERMES_START):end]
        if variant == "glm47":  # vLLM's <tool_call>(.*?)(<arg_key>.*?)?</tool_call>
            cut = region.find(GLM_KEY)
            name, body = (region, "") if cut == -1 else (region[:cut], region[cut:])
        elif "\n" in region:  # vLLM's <tool_call>([^\n]*)\n(.*)</tool_call>: the name ends its own line
            name, body = region.split("\n", 1)
        else:
            continue
        name = name.strip()
        properties = tool_properties(tools, name)
        arguments: dict[str, Any] = {}
        for key, value in _glm_pairs(body, literal_newlines=variant == "glm47"):
            key = key.strip()
            schema = properties.get(key)
            string_typed = isinstance(schema, dict) and schema.get("type") == "string"
            arguments[key] = value if string_typed else _glm_value(value.strip())
        calls.append(ParsedCall(name, arguments))
    if not calls:
        where = "with its name on a line of its own" if variant == "glm45" else "with a name"
        return ParsedAnswer([], text, f"{variant}: no closed {HERMES_START}NAME block {where}")
    content = text[: text.find(HERMES_START)]
    return ParsedAnswer(calls, content if content.strip() else None)


def parse_deepseek_v31(text: str) -> ParsedAnswer:
    """DeepSeek-V3.1 ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`` calls (see the module
    docstring)."""
    if DEEPSEEK_CALLS not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    position = 0
    while (start := text.find(DEEPSEEK_CALL, position)) != -1:  # vLLM's regex, without DOTALL: one line each
        line_end = text.find("\n", start)
        line_end = len(text) if line_end == -1 else line_end
        sep = text.find(DEEPSEEK_SEP, start + len(DEEPSEEK_CALL), line_end)
        end = text.find(DEEPSEEK_CALL_END, sep + len(DEEPSEEK_SEP), line_end) if sep != -1 else -1
        if end == -1:  # no later call on this line can close either
            if line_end == len(text):
                break
            position = line_end
            continue
        name = text[start + len(DEEPSEEK_CALL):sep]
        where = f"call {len(calls) + 1} ({_short(name, 60)})"
        try:
            arguments = _load_json(text[sep + len(DEEPSEEK_SEP):end])
        except _ParseFailure as exc:
            return ParsedAnswer([], text, f"deepseek_v31: {where}: arguments are {exc}")
        calls.append(ParsedCall(name, arguments))
        position = end + len(DEEPSEEK_CALL_END)
    if not calls:
        return ParsedAnswer([], text, f"deepseek_v31: no complete {DEEPSEEK_CALL}NAME{DEEPSEEK_SEP}arguments"
                                      f"{DEEPSEEK_CALL_END} after {DEEPSEEK_CALLS}")
    content = text[: text.find(DEEPSEEK_CALLS)]
    return ParsedAnswer(calls, content or None)


DEEPSEEK_V3_ARGUMENTS, DEEPSEEK_V3_ARGUMENTS_END = "\n```json\n", "\n```" + DEEPSEEK_CALL_END


def parse_deepseek_v3(text: str) -> ParsedAnswer:
    """DeepSeek-V3 and R1 ``<｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME`` calls with their arguments in a fenced JSON
    line (see the module docstring)."""
    if DEEPSEEK_CALLS not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    position = 0
    # vLLM's pattern, without DOTALL: TYPE and NAME share the begin token's line (TYPE runs to the line's last
    # separator, NAME to its end), the arguments are the whole next line, then "```" and the end token
    while (start := text.find(DEEPSEEK_CALL, position)) != -1:
        line_end = text.find("\n", start)
        if line_end == -1:
            break
        sep = text.rfind(DEEPSEEK_SEP, start + len(DEEPSEEK_CALL), line_end)
        arguments_start = line_end + len(DEEPSEEK_V3_ARGUMENTS)
        arguments_end = text.find("\n", arguments_start) if text.startswith(DEEPSEEK_V3_ARGUMENTS, line_end) else -1
        if sep == -1 or arguments_end == -1 or not text.startswith(DEEPSEEK_V3_ARGUMENTS_END, arguments_end):
            position = line_end  # a later begin token on this line fails the same way
            continue
        kind, name = text[start + len(DEEPSEEK_CALL):sep], text[sep + len(DEEPSEEK_SEP):line_end]
        where = f"call {len(calls) + 1} ({_short(name, 60)})"
        if kind != "function":  # vLLM's ToolCall takes only "function": its whole reading fails
            return ParsedAnswer([], text, f"deepseek_v3: {where}: its type is {_short(kind, 60)!r}, not 'function'")
        try:
            arguments = _load_json(text[arguments_start:arguments_end])
        except _ParseFailure as exc:
            return ParsedAnswer([], text, f"deepseek_v3: {where}: arguments are {exc}")
        calls.append(ParsedCall(name, arguments))
        position = arguments_end + len(DEEPSEEK_V3_ARGUMENTS_END)
    if not calls:
        return ParsedAnswer([], text, f"deepseek_v3: no complete {DEEPSEEK_CALL}function{DEEPSEEK_SEP}NAME, fenced "
                                      f"JSON arguments and {DEEPSEEK_CALL_END} after {DEEPSEEK_CALLS}")
    content = text[: text.find(DEEPSEEK_CALLS)]
    return ParsedAnswer(calls, content or None)


def _gemma4_bare(text: str) -> Any:
    """A bare Gemma 4 value: ``true``/``false``, ``null``/``none``/``nil``, a number, else the text (stripped)."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text.lower() in ("null", "none", "nil"):
        return None
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def _gemma4_brackets(text: str) -> dict[int, int]:
    """Each ``{`` and ``[`` of ``text`` with the index just past its match, found as vLLM's scan finds it (braces
    counted apart from square brackets, strings between ``<|"|>`` marks skipped), in one pass over the text; an
    opening with no match is not in it."""
    matched: dict[int, int] = {}
    stacks: dict[str, list[int]] = {"{": [], "[": []}
    closers = {"}": "{", "]": "["}
    i = 0
    while i < len(text):
        if text.startswith(GEMMA_QUOTE, i):
            end = text.find(GEMMA_QUOTE, i + len(GEMMA_QUOTE))
            i = len(text) if end == -1 else end + len(GEMMA_QUOTE)
            continue
        char = text[i]
        if char in stacks:
            stacks[char].append(i)
        elif char in closers and stacks[closers[char]]:
            matched[stacks[closers[char]].pop()] = i + 1
        i += 1
    return matched


class _GemmaArguments:
    """vLLM's ``_parse_gemma4_args``/``_parse_gemma4_array`` over one call's argument text, reading each nested
    object or list in place (its end from :func:`_gemma4_brackets`), so a deep text is read in linear time."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.brackets = _gemma4_brackets(text)

    def _value(self, i: int, end: int, stops: str, depth: int, partial: bool) -> tuple[Any, int, bool]:
        """The value starting at ``i`` (blanks skipped), where it ends, and whether ``end`` came inside it (None
        and ``end``: a bare value at the end of an unclosed object or list, which vLLM leaves out)."""
        text = self.text
        if text.startswith(GEMMA_QUOTE, i):
            close = text.find(GEMMA_QUOTE, i + len(GEMMA_QUOTE), end)
            if close == -1:  # an unterminated string: the rest
                return text[i + len(GEMMA_QUOTE):end], end, True
            return text[i + len(GEMMA_QUOTE):close], close + len(GEMMA_QUOTE), False
        if text[i] in "{[":
            past = self.brackets.get(i, end + 1)
            closed = past <= end
            stop = past - 1 if closed else end
            read = self.object if text[i] == "{" else self.list
            return read(i + 1, stop, depth + 1, not closed), (past if closed else end), not closed
        j = i
        while j < end and text[j] not in stops:
            j += 1
        if partial and (j >= end or text[i:j].strip().endswith(".")) and j > i:
            return None, end, True  # may be cut short: left out
        return _gemma4_bare(text[i:j]), j, False

    def object(self, i: int, end: int, depth: int = 0, partial: bool = False) -> dict[str, Any]:
        if depth > _GEMMA_MAX_DEPTH:
            raise _ParseFailure("arguments nested too deeply")
        text, result = self.text, {}
        while i < end:
            while i < end and text[i] in " ,\n\t":
                i += 1
            colon = text.find(":", i, end)
            if i >= end or colon == -1:
                break
            key = text[i:colon].strip()
            if key.startswith(GEMMA_QUOTE) and key.endswith(GEMMA_QUOTE) and len(key) >= 2 * len(GEMMA_QUOTE):
                key = key[len(GEMMA_QUOTE):-len(GEMMA_QUOTE)]
            i = colon + 1
            while i < end and text[i] in " \n\t":
                i += 1
            if i >= end:
                if not partial:
                    result[key] = ""
                break
            value, after, cut = self._value(i, end, ",}]", depth, partial)
            if after == i:  # no progress: malformed, and vLLM stops there
                break
            if not (cut and value is None and after == end and partial):
                result[key] = value
            i = after
            if cut:
                break
        return result

    def list(self, i: int, end: int, depth: int = 0, partial: bool = False) -> list[Any]:
        if depth > _GEMMA_MAX_DEPTH:
            raise _ParseFailure("arguments nested too deeply")
        text, items = self.text, []
        while i < end:
            while i < end and text[i] in " ,\n\t":
                i += 1
            if i >= end:
                break
            value, after, cut = self._value(i, end, ",]", depth, partial)
            if after == i:
                break
            if not (cut and value is None and after == end and partial):
                items.append(value)
            i = after
            if cut:
                break
        return items


def _gemma4_object(text: str) -> dict[str, Any]:
    return _GemmaArguments(text).object(0, len(text))


def parse_gemma4(text: str) -> ParsedAnswer:
    """Gemma 4 ``<|tool_call>call:NAME{...}<tool_call|>`` calls (see the module docstring)."""
    if "<|tool_call>" not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    position = 0
    try:
        while (start := text.find(GEMMA_CALL, position)) != -1:  # vLLM: call:([\w\-.]+)\{(.*?)\}<tool_call\|>
            name = _GEMMA_NAME.match(text, start + len(GEMMA_CALL))
            if name is None:
                position = start + 1
                continue
            end = text.find(GEMMA_CALL_END, name.end())
            if end == -1:
                break
            calls.append(ParsedCall(name.group()[:-1], _gemma4_object(text[name.end():end])))
            position = end + len(GEMMA_CALL_END)
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"gemma4: call {len(calls) + 1}: {exc}")
    if not calls:
        return ParsedAnswer([], text, f"gemma4: no complete {GEMMA_CALL}NAME{{...{GEMMA_CALL_END}")
    content = text[: text.find("<|tool_call>")].strip()
    return ParsedAnswer(calls, content or None)


def parse_kimi_k2(text: str) -> ParsedAnswer:
    """Kimi K2 ``<|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{...}<|tool_call_end|>`` calls (see
    the module docstring)."""
    if KIMI_SECTION not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    position = 0
    while (start := text.find(KIMI_CALL, position)) != -1:  # vLLM's regex, read in linear time
        position = begin = start + len(KIMI_CALL)
        while begin < len(text) and text[begin].isspace():
            begin += 1
        marker = text.find("<", begin)
        identity = _KIMI_ID.fullmatch(text, begin, marker) if marker != -1 else None
        if identity is None or not text.startswith(KIMI_ARGUMENTS, marker):
            continue
        arguments_start = marker + len(KIMI_ARGUMENTS)
        end = text.find(KIMI_CALL_END, arguments_start)
        if end == -1:  # no later call can close either
            break
        following = text.find(KIMI_CALL, arguments_start)
        if following != -1 and following < end:
            continue
        name = identity.group(1).strip().split(".")[-1]
        try:
            arguments = _load_json(text[arguments_start:end])
        except _ParseFailure as exc:
            return ParsedAnswer([], text, f"kimi_k2: call {len(calls) + 1} ({_short(name, 60)}): arguments are {exc}")
        calls.append(ParsedCall(name, arguments))
        position = end + len(KIMI_CALL_END)
    if not calls:
        return ParsedAnswer([], text, f"kimi_k2: no complete {KIMI_CALL}NAME:N{KIMI_ARGUMENTS}...{KIMI_CALL_END}")
    content = text[: text.find(KIMI_SECTION)]
    return ParsedAnswer(calls, content or None)


def parse_harmony(text: str) -> ParsedAnswer:
    """gpt-oss's harmony messages (see the module docstring)."""
    if "to=functions." not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    final = commentary = None
    for piece in text.split(HARMONY_START):
        header, marker, body = piece.partition(HARMONY_MESSAGE)
        if not marker:
            continue
        ends = [i for i in (body.find(e) for e in HARMONY_ENDS) if i != -1]
        body = body[: min(ends)] if ends else body
        recipient = _HARMONY_RECIPIENT.search(header)
        channel = _HARMONY_CHANNEL.search(header)
        if recipient and recipient.group(1).startswith("functions."):
            name = recipient.group(1).split("functions.", 1)[1]
            content_type = _HARMONY_CHANNEL.sub("", _HARMONY_RECIPIENT.sub("", header))
            content_type = content_type.replace("<|constrain|>", "").strip()
            where = f"call {len(calls) + 1} ({_short(name, 60)})"
            if content_type and "json" not in content_type:  # none given: JSON, as vLLM assumes
                return ParsedAnswer([], text, f"harmony: {where}: content type {_short(content_type, 40)!r}, "
                                              "not JSON")
            try:
                calls.append(ParsedCall(name, _load_json(body)))
            except _ParseFailure as exc:
                return ParsedAnswer([], text, f"harmony: {where}: arguments are {exc}")
        elif channel and channel.group(1) == "final":
            final = body
        elif channel and channel.group(1) == "commentary" and not recipient:
            commentary = body
    if not calls:
        return ParsedAnswer([], text, "harmony: no complete message to functions.NAME")
    return ParsedAnswer(calls, final or commentary)


def _lazy_spans(text: str, opening: str, closing: str) -> list[str]:
    """The bodies of ``opening(.*?)closing`` as a regex's ``findall`` finds them (DOTALL), in linear time: each
    opening's body runs to the first closing after it, the next search starts after that closing, and an opening
    with no closing after it ends the search (no later one can close either)."""
    bodies: list[str] = []
    position = 0
    while (start := text.find(opening, position)) != -1:
        end = text.find(closing, start + len(opening))
        if end == -1:
            break
        bodies.append(text[start + len(opening):end])
        position = end + len(closing)
    return bodies


def _unquoted(name: str) -> str:
    """vLLM's ``_extract_name``: stripped, and the quotes it starts and ends with removed."""
    name = name.strip()
    if name[:1] in ('"', "'") and name.endswith(name[:1]):
        return name[1:-1]
    return name


def _json_or_text(text: str) -> Any:
    """JSON, else (not JSON) the text, as vLLM's ``try: json.loads(v) except JSONDecodeError: v``; what else
    ``json.loads`` raises (nesting too deep, an integer too long) fails vLLM's whole reading: :class:`_ParseFailure`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
    except (ValueError, RecursionError) as exc:
        raise _ParseFailure(f"a value's {_json_problem(exc)}") from None


def seed_value(text: str, schema: Any) -> Any:
    """A Seed-OSS text value converted by its parameter's schema, as vLLM's ``seed_oss`` converts it (its own, older
    rules, not :func:`schema_value`'s): ``null`` (any case) is None for any type; no schema: the text; the ``type``
    named (``string`` when none is, an ``anyOf`` too): string types keep the text; integer types ``int``, else the
    text; number/float a float, an int when whole (``nan`` stays text, an infinite one fails vLLM's whole reading);
    boolean: whether it reads ``true`` (anything else is False); objects JSON, else a Python literal; other types a
    Python literal (JSON's ``true``, ``null`` are none), else the text."""
    if text.lower() == "null":
        return None
    if schema is None:
        return text
    kind = str(schema["type"]).strip().lower() if isinstance(schema, dict) and "type" in schema else "string"
    if kind in STRING_TYPES:
        return text
    if kind.startswith(INTEGER_PREFIXES):
        return _int_or_text(text)
    if kind.startswith(NUMBER_PREFIXES):
        try:
            number = float(text)
        except ValueError:
            return text
        if number in (float("inf"), float("-inf")):
            raise _ParseFailure(f"the number {_short(text, 40)!r} is infinite")
        if number != number:
            return text
        return number if not number.is_integer() else int(number)
    if kind in BOOLEAN_TYPES:
        return text.lower() == "true"
    if kind == "object" or kind.startswith("dict"):
        try:
            return json.loads(text)
        except ValueError:  # vLLM catches any ValueError here (not JSON, an integer too long) and reads on
            pass
        except RecursionError as exc:
            raise _ParseFailure(f"a value's {_json_problem(exc)}") from None
    try:
        return _python_literal(text)
    except ValueError:
        return text


_SEED_BLOCK = re.compile(f"{re.escape(SEED_CALL)}(.*?){re.escape(SEED_CALL_END)}|{re.escape(SEED_CALL)}(.*?)$",
                         re.DOTALL)
_SEED_FUNCTION = re.compile(r"<function=(.*?)</function>|<function=(.*)$", re.DOTALL)
_SEED_PARAMETER = re.compile(r"<parameter=(.*?)</parameter>|<parameter=(.*?)$", re.DOTALL)


def parse_seed_oss(text: str, tools: Tools = None) -> ParsedAnswer:
    """ByteDance Seed-OSS's ``<seed:tool_call><function=NAME><parameter=KEY>value</parameter></function>`` blocks
    (see the module docstring)."""
    if QWEN3_FUNCTION not in text:
        return ParsedAnswer([], text)
    thinking, answer = "", text
    if SEED_THINK in text and SEED_THINK_END in text:  # the answer follows the first end of thinking
        cut = text.find(SEED_THINK_END) + len(SEED_THINK_END)
        thinking, answer = text[:cut], text[cut:]
    blocks = [whole or open_ for whole, open_ in _SEED_BLOCK.findall(answer)] or [answer]
    functions = [whole or open_ for block in blocks for whole, open_ in _SEED_FUNCTION.findall(block)]
    if not functions:
        return ParsedAnswer([], text, "seed_oss: no <function=NAME> in a tool-call block")
    calls = []
    try:
        for k, function in enumerate(functions, 1):
            if ">" not in function:  # vLLM's str.index raises: its whole reading fails
                raise _ParseFailure(f"call {k}: no '>' after its name")
            name, parameters = function.split(">", 1)
            properties = tool_properties(tools, name) if tools is not None else None
            arguments: dict[str, Any] = {}
            for whole, open_ in _SEED_PARAMETER.findall(parameters):
                parameter = whole or open_
                if ">" not in parameter:
                    raise _ParseFailure(f"call {k} ({_short(name, 60)}): a parameter has no '>' after its name")
                key, value = parameter.split(">", 1)
                value = value.removeprefix("\n").removesuffix("\n")
                if value.lower() != "null" and properties is not None and key not in properties:
                    arguments[key] = value  # a parameter the tool does not have stays text
                else:
                    arguments[key] = seed_value(value, None if properties is None else properties.get(key))
            calls.append(ParsedCall(name, arguments))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"seed_oss: {exc}")
    start = answer.find(SEED_CALL)
    content = thinking + answer[: start if start != -1 else answer.find(QWEN3_FUNCTION)]
    return ParsedAnswer(calls, content or None)


def _apertus_json(text: str) -> tuple[Any, str]:
    """The JSON value at the start of a call block and the text after it, as vLLM's ``apertus`` reads it: whole JSON
    (blanks before it skipped), else a truncated value completed by ``partial_json_parser`` (``Allow.ALL``, as vLLM
    calls it; JSON with extra data after it: the first value), with no text after it; else :class:`_ParseFailure`."""
    from partial_json_parser import loads as partial_loads
    from partial_json_parser.core.options import Allow

    decoder = json.JSONDecoder()
    try:
        value, end = decoder.raw_decode(text.lstrip())
        return value, text.lstrip()[end:]
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError) as exc:
        raise _ParseFailure(_json_problem(exc)) from None
    try:
        try:
            return partial_loads(text, Allow.ALL), ""
        except json.JSONDecodeError as exc:
            if "Extra data" not in exc.msg:
                raise
            return decoder.raw_decode(text)[0], ""
    except Exception as exc:  # noqa: BLE001 - whatever the completer raises fails vLLM's whole reading too
        raise _ParseFailure(f"not JSON, even completed as a truncated value ({type(exc).__name__})") from None


def parse_apertus(text: str) -> ParsedAnswer:
    """Apertus's ``<|tools_prefix|>[{"NAME": {arguments}}, ...]<|tools_suffix|>`` (see the module docstring)."""
    start = text.find(APERTUS_START)
    if start == -1:
        return ParsedAnswer([], text)
    block_start = start + len(APERTUS_START)
    suffix = text.find(APERTUS_END, block_start)
    if suffix != -1:
        block_end, after = suffix, suffix + len(APERTUS_END)
    else:  # vLLM's pattern ends the block at "$": the end, or before a final line break
        block_end = after = len(text) - 1 if text.endswith("\n") and len(text) - 1 >= block_start else len(text)
    try:
        value, trailing = _apertus_json(text[block_start:block_end])
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"apertus: {exc}")
    calls = []
    for k, obj in enumerate(value if isinstance(value, list) else [value] if value else [], 1):
        if isinstance(obj, dict) and obj:
            name, arguments = next(iter(obj.items()))
            if not isinstance(arguments, dict):  # vLLM passes it on; no checker can score a call without an object
                return ParsedAnswer([], text, f"apertus: call {k} ({_short(name, 60)}): its arguments are a "
                                              f"{type(arguments).__name__}, not an object")
            calls.append(ParsedCall(name, arguments))
    if not calls:
        return ParsedAnswer([], text, f"apertus: no {{\"NAME\": {{arguments}}}} object after {APERTUS_START}")
    content = text[:start].strip()
    for extra in (trailing.replace(APERTUS_END, "").strip(), text[after:].replace(APERTUS_END, "").strip()):
        if extra:
            content = (content + "\n" + extra).strip()
    return ParsedAnswer(calls, content or None)


def _object_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A call's arguments as BFCL's FC handlers decode what vLLM passes on: an object, or a string holding one (vLLM
    passes a string as it is, and the handler reads it as JSON); anything else no checker can score."""
    if isinstance(arguments, str):
        try:
            arguments = _load_json(arguments)
        except _ParseFailure as exc:
            raise _ParseFailure(f"{where}: its arguments are a string that is {exc}") from None
    if not isinstance(arguments, dict):
        raise _ParseFailure(f"{where}: its arguments are a {type(arguments).__name__}, not an object")
    return arguments


def parse_nemotron_nano_v2(text: str) -> ParsedAnswer:
    """Nemotron Nano 2's ``<TOOLCALL>[{"name": ..., "arguments": {...}}]</TOOLCALL>`` (see the module docstring)."""
    if NEMOTRON_CALL not in text:
        return ParsedAnswer([], text)
    calls = []
    try:
        for payload in _lazy_spans(text, NEMOTRON_CALL, NEMOTRON_CALL_END):
            payload = payload.strip()
            payload = ("" if payload.startswith("[") else "[") + payload + ("" if payload.endswith("]") else "]")
            value = _load_json(payload)
            for item in value if isinstance(value, list) else [value]:
                # vLLM skips a call without a string name or without arguments, and reads on
                if isinstance(item, dict) and isinstance(item.get("name"), str) and "arguments" in item:
                    where = f"call {len(calls) + 1} ({_short(item['name'], 60)})"
                    calls.append(ParsedCall(item["name"], _object_arguments(item["arguments"], where)))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"nemotron_nano_v2: {exc}")
    if not calls:
        return ParsedAnswer([], text, f"nemotron_nano_v2: no closed {NEMOTRON_CALL} block with a named call")
    content = text[: text.find(NEMOTRON_CALL)]
    return ParsedAnswer(calls, content or None)


def _xtml_marker(kind: str, tag: str) -> re.Pattern[str]:
    """Kimi K3's ``<|open|>tag `` (``kind`` "open", a blank or more after the tag, attributes follow) or
    ``<|close|>tag<|sep|>`` (blanks taken inside it), as vLLM's ``kimi_k3`` patterns match them."""
    if kind == "open":
        return re.compile(re.escape(XTML_OPEN) + rf"\s*{tag}\s+")
    return re.compile(re.escape(XTML_CLOSE) + rf"\s*{tag}\s*" + re.escape(XTML_SEP))


_XTML_TOOLS_OPEN = re.compile(re.escape(XTML_OPEN) + r"\s*tools\s*" + re.escape(XTML_SEP))
_XTML_TOOLS_CLOSE = _xtml_marker("close", "tools")
_XTML_CALL, _XTML_CALL_END = _xtml_marker("open", "call"), _xtml_marker("close", "call")
_XTML_ARGUMENT, _XTML_ARGUMENT_END = _xtml_marker("open", "argument"), _xtml_marker("close", "argument")
_XTML_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_XTML_RESPONSE_OPEN = re.compile(re.escape(XTML_OPEN) + r"\s*response\s*" + re.escape(XTML_SEP))
_XTML_RESPONSE_CLOSE, _XTML_MESSAGE_CLOSE = _xtml_marker("close", "response"), _xtml_marker("close", "message")


def _xtml_elements(text: str, opening: re.Pattern[str], closing: re.Pattern[str]) -> list[tuple[dict[str, str], str]]:
    """Each ``opening`` marker's attributes (up to the first ``<|sep|>``) and body (up to the first ``closing``
    marker), in order, as vLLM's lazy patterns find them; an element never closed ends the list (no later one can
    close either). Attribute values are unescaped (``&quot;``, then ``&amp;``); a repeated name keeps its last."""
    elements = []
    position = 0
    while (start := opening.search(text, position)) is not None:
        sep = text.find(XTML_SEP, start.end())
        end = closing.search(text, sep + len(XTML_SEP)) if sep != -1 else None
        if end is None:
            break
        attributes = {key: value.replace("&quot;", '"').replace("&amp;", "&")
                      for key, value in _XTML_ATTRIBUTE.findall(text[start.end():sep])}
        elements.append((attributes, text[sep + len(XTML_SEP):end.start()]))
        position = end.end()
    return elements


def parse_kimi_k3(text: str) -> ParsedAnswer:
    """Kimi K3's XTML ``tools`` channel of ``call`` elements, each of typed ``argument`` elements (see the module
    docstring)."""
    tools = _XTML_TOOLS_OPEN.search(text)
    if tools is None:
        return ParsedAnswer([], text)
    end = _XTML_TOOLS_CLOSE.search(text, tools.end())
    section = text[tools.end(): end.start() if end is not None else len(text)]
    calls: list[ParsedCall] = []
    try:
        for attributes, body in _xtml_elements(section, _XTML_CALL, _XTML_CALL_END):
            arguments: dict[str, Any] = {}
            for argument, value in _xtml_elements(body, _XTML_ARGUMENT, _XTML_ARGUMENT_END):
                kind = argument.get("type", "string")
                arguments[argument.get("key", "")] = value if kind == "string" else _json_or_text(value)
            if attributes.get("tool"):  # a call without a tool name is dropped
                calls.append(ParsedCall(attributes["tool"], arguments))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"kimi_k3: {exc}")
    if not calls:
        return ParsedAnswer([], text, "kimi_k3: no complete call element with a tool name in the tools channel")
    return ParsedAnswer(calls, _xtml_content(text, text[: tools.start()]))


def _xtml_content(text: str, before: str) -> str | None:
    """vLLM's content beside K3's calls: the whole ``response`` channel's text, else the text before the tools
    channel with its response markers (an open one: what follows it, to its close) and message closes taken off."""
    opened = _XTML_RESPONSE_OPEN.search(text)
    closed = _XTML_RESPONSE_CLOSE.search(text, opened.end()) if opened is not None else None
    if opened is not None and closed is not None:
        return text[opened.end():closed.start()] or None
    opened = _XTML_RESPONSE_OPEN.search(before)
    if opened is not None:
        closed = _XTML_RESPONSE_CLOSE.search(before, opened.end())
        before = before[opened.end(): closed.start() if closed is not None else len(before)]
    else:
        before = _XTML_RESPONSE_CLOSE.sub("", before)
    return _XTML_MESSAGE_CLOSE.sub("", before) or None


def _minimax_types(schema: Any) -> set[str]:
    """The types a parameter schema admits, as vLLM's ``minimax_m2`` collects them: ``type`` (a name or a list), the
    types of its ``enum`` values, and those of every ``anyOf``/``oneOf``/``allOf`` choice; ``string`` when none."""
    if not isinstance(schema, dict):
        return {"string"}
    types: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, str):
        types.add(kind)
    elif isinstance(kind, list):
        types.update(k for k in kind if isinstance(k, str))
    if isinstance(schema.get("enum"), list):
        for value in schema["enum"]:
            types.add("null" if value is None else "boolean" if isinstance(value, bool)
                      else "integer" if isinstance(value, int) else "number" if isinstance(value, float)
                      else "string" if isinstance(value, str) else "array" if isinstance(value, list)
                      else "object" if isinstance(value, dict) else "string")
    for choice in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(choice), list):
            for option in schema[choice]:
                types.update(_minimax_types(option))
    return types or {"string"}


_MINIMAX_TYPE_ORDER = ("integer", "int", "number", "float", "boolean", "bool", "object", "array", "string", "str",
                       "text")


def minimax_value(text: str, types: set[str]) -> Any:
    """A MiniMax M2 parameter's text converted as vLLM's ``minimax_m2`` converts it: ``null``/``none``/``nil`` (any
    case) is None whatever the type; then the first of the admitted ``types`` (lower-cased), tried in the order
    integer, number, boolean, object/array, string, that converts: ``int``; a float, an int when whole; ``true``/
    ``1``/``yes``/``on`` or ``false``/``0``/``no``/``off``; JSON; the text; when none does, JSON, else the text.
    Raises :class:`_ParseFailure` where vLLM's conversion raises and its parser then reads the whole answer as text
    (an infinite number, JSON nested too deeply)."""
    if text.lower() in ("null", "none", "nil"):
        return None
    admitted = {t.lower() for t in types}
    for kind in _MINIMAX_TYPE_ORDER:
        if kind not in admitted:
            continue
        if kind in ("string", "str", "text"):
            return text
        if kind in ("integer", "int"):
            try:
                return int(text)
            except ValueError:
                continue
        elif kind in ("number", "float"):
            try:
                number = float(text)
            except ValueError:
                continue
            if number in (float("inf"), float("-inf")):
                raise _ParseFailure(f"the number {_short(text, 40)!r} is infinite (vLLM's conversion fails on it)")
            if number != number:  # NaN: vLLM's int() raises ValueError and it tries the next type
                continue
            return int(number) if number.is_integer() else number
        elif kind in ("boolean", "bool"):
            word = text.lower().strip()
            if word in ("true", "1", "yes", "on"):
                return True
            if word in ("false", "0", "no", "off"):
                return False
        else:  # object, array: JSON, else the later types give the text too
            return _json_or_text(text)
    return _json_or_text(text)


def parse_minimax_m2(text: str, tools: Tools = None) -> ParsedAnswer:
    """MiniMax M2 ``<minimax:tool_call><invoke name="NAME"><parameter name="KEY">value</parameter>...</invoke>
    </minimax:tool_call>`` calls, their values typed by ``tools``' schemas (see the module docstring)."""
    if MINIMAX_CALLS not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    try:
        for block in _lazy_spans(text, MINIMAX_CALLS, MINIMAX_CALLS_END):
            for invoke in _lazy_spans(block, MINIMAX_INVOKE, MINIMAX_INVOKE_END):
                close = invoke.find(">")
                raw_name = invoke if close == -1 else invoke[:close]
                if not raw_name:  # vLLM's ^([^>]+) finds no name: the invoke is skipped
                    continue
                name = _unquoted(raw_name)
                properties = tool_properties(tools, name)
                arguments: dict[str, Any] = {}
                for parameter in _lazy_spans(invoke, MINIMAX_PARAMETER, MINIMAX_PARAMETER_END):
                    close = parameter.find(">")
                    if close < 1:  # vLLM's ^([^>]+)>(.*) does not match: the parameter is skipped
                        continue
                    key = _unquoted(parameter[:close])
                    try:
                        arguments[key] = minimax_value(parameter[close + 1:].strip(),
                                                       _minimax_types(properties[key]) if key in properties
                                                       else {"string"})
                    except _ParseFailure as exc:
                        raise _ParseFailure(f"call {len(calls) + 1} ({_short(name, 60)}), {_short(key, 40)}: "
                                            f"{exc}") from None
                calls.append(ParsedCall(name, arguments))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"minimax_m2: {exc}")
    if not calls:
        return ParsedAnswer([], text, f"minimax_m2: no complete {MINIMAX_INVOKE}NAME>...{MINIMAX_INVOKE_END} in a "
                                      f"closed {MINIMAX_CALLS} block")
    start = text.find(MINIMAX_CALLS)
    return ParsedAnswer(calls, text[:start] if start > 0 else None)


def _dsml_header(text: str, start: int, tag: str, with_string: bool) -> tuple[str, str, int] | None:
    """The ``<｜DSML｜TAG\\s+name="NAME"[\\s+string="true|false"]\\s*>`` starting at ``start``, as vLLM's DSML regexes
    match it: (name, the string attribute or "", where the header ends), or None when it does not match."""
    i = start + len(DSML_OPEN) + len(tag)
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if j == i or not text.startswith('name="', j):
        return None
    name_start = j + len('name="')
    name_end = text.find('"', name_start)
    if name_end <= name_start:
        return None
    k = name_end + 1
    string = ""
    if with_string:
        i = k
        while k < len(text) and text[k].isspace():
            k += 1
        if k == i:
            return None
        for candidate in ("true", "false"):
            if text.startswith(f'string="{candidate}"', k):
                string, k = candidate, k + len(f'string="{candidate}"')
                break
        else:
            return None
    while k < len(text) and text[k].isspace():
        k += 1
    if not text.startswith(">", k):
        return None
    return text[name_start:name_end], string, k + 1


def _dsml_elements(text: str, tag: str, with_string: bool) -> list[tuple[str, str, str]]:
    """Every ``<｜DSML｜TAG ...>body</｜DSML｜TAG>`` of ``text`` as vLLM's regex finds them: (name, string attribute,
    body), in linear time (a header that does not match is passed over; one whose body never closes ends the
    search)."""
    opening, closing = DSML_OPEN + tag, f"</{DSML_TOKEN}{tag}>"
    found: list[tuple[str, str, str]] = []
    position = 0
    while (start := text.find(opening, position)) != -1:
        header = _dsml_header(text, start, tag, with_string)
        if header is None:
            position = start + len(opening)
            continue
        name, string, body_start = header
        end = text.find(closing, body_start)
        if end == -1:
            break
        found.append((name, string, text[body_start:end]))
        position = end + len(closing)
    return found


def _dsml_typed(text: str, kind: Any) -> Any:
    """vLLM's DeepSeek V4 ``_convert_param_value_checked``: raises (ValueError) where the type does not convert."""
    if text.lower() == "null":
        return None
    if not isinstance(kind, str):
        raise ValueError("not a type name")
    kind = kind.lower()
    if kind in ("string", "str", "text"):
        return text
    if kind in ("integer", "int"):
        return int(text)
    if kind in ("number", "float"):
        number = float(text)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return int(number) if number.is_integer() else number
    if kind in ("boolean", "bool"):
        word = text.strip().lower()
        if word not in ("false", "0", "true", "1"):
            raise ValueError("not a boolean")
        return word in ("true", "1")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dsml_value(text: str, string: str, schema: Any) -> Any:
    """A DSML parameter's text as vLLM's DeepSeek V4 parser reads it: ``string="true"``: the text as it is; else the
    schema's ``type`` (a name or a list, each tried in turn: ``null`` is None, then int, a float (an int when whole),
    a strict boolean, JSON), the text when none converts; no type: JSON, else the text."""
    if string == "true":
        return text
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind:
        for option in kind if isinstance(kind, list) else [kind]:
            try:
                return _dsml_typed(text, option)
            except ValueError:
                continue
        return text
    return _json_or_text(text)


def _dsml_unwrapped(arguments: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """vLLM's ``_repair_param_dict``: arguments that are one ``arguments`` or ``input`` parameter the tool does not
    have, holding (as an object or its JSON) only parameters the tool has, are those parameters."""
    for wrapper in ("arguments", "input"):
        if set(arguments) != {wrapper} or wrapper in properties:
            continue
        inner = arguments[wrapper]
        if isinstance(inner, str):
            inner = _json_or_text(inner)
            if isinstance(inner, str):
                return arguments
        if isinstance(inner, dict) and set(inner) <= set(properties):
            return inner
    return arguments


def _parse_dsml(text: str, tools: Tools, fmt: str) -> ParsedAnswer:
    opening = DSML_OPEN + DSML_BLOCKS[fmt] + ">"
    if opening not in text:
        return ParsedAnswer([], text)
    calls: list[ParsedCall] = []
    try:
        for block in _lazy_spans(text, opening, f"</{DSML_TOKEN}{DSML_BLOCKS[fmt]}>"):
            for name, _, body in _dsml_elements(block, "invoke", with_string=False):
                properties = tool_properties(tools, name)
                arguments: dict[str, Any] = {}
                for key, string, value in _dsml_elements(body, "parameter", with_string=True):
                    key = "arguments" if key == DSML_ESCAPED_ARGUMENTS else key
                    try:
                        arguments[key] = dsml_value(value, string, properties.get(key))
                    except _ParseFailure as exc:
                        raise _ParseFailure(f"call {len(calls) + 1} ({_short(name, 60)}), {_short(key, 40)}: "
                                            f"{exc}") from None
                calls.append(ParsedCall(name, _dsml_unwrapped(arguments, properties)))
    except _ParseFailure as exc:
        return ParsedAnswer([], text, f"{fmt}: {exc}")
    if not calls:
        return ParsedAnswer([], text, f'{fmt}: no complete {DSML_OPEN}invoke name="NAME">...</{DSML_TOKEN}invoke> in '
                                      f"a closed {opening} block")
    start = text.find(opening)
    return ParsedAnswer(calls, text[:start] if start > 0 else None)


def parse_deepseek_v32(text: str, tools: Tools = None) -> ParsedAnswer:
    """DeepSeek V3.2 DSML calls, ``<｜DSML｜function_calls>`` blocks of ``<｜DSML｜invoke name="NAME">`` with
    ``<｜DSML｜parameter name="KEY" string="true|false">value</｜DSML｜parameter>`` (see the module docstring)."""
    return _parse_dsml(text, tools, "deepseek_v32")


def parse_deepseek_v4(text: str, tools: Tools = None) -> ParsedAnswer:
    """DeepSeek V4 DSML calls: V3.2's, in ``<｜DSML｜tool_calls>`` blocks."""
    return _parse_dsml(text, tools, "deepseek_v4")


def _without_tools(parser: Callable[[str], ParsedAnswer]) -> Callable[[str, Tools], ParsedAnswer]:
    return lambda text, tools: parser(text)


PARSERS: dict[ToolFormat, Callable[[str, Tools], ParsedAnswer]] = {
    "hermes": _without_tools(parse_hermes),
    "llama3_json": _without_tools(parse_llama3_json),
    "mistral": _without_tools(parse_mistral),
    "pythonic": _without_tools(parse_pythonic),
    "qwen3_coder": parse_qwen3_coder,
    "glm45": parse_glm45,
    "glm47": parse_glm47,
    "deepseek_v31": _without_tools(parse_deepseek_v31),
    "gemma4": _without_tools(parse_gemma4),
    "kimi_k2": _without_tools(parse_kimi_k2),
    "harmony": _without_tools(parse_harmony),
    "minimax_m2": parse_minimax_m2,
    "deepseek_v32": parse_deepseek_v32,
    "deepseek_v4": parse_deepseek_v4,
    "deepseek_v3": _without_tools(parse_deepseek_v3),
    "lfm2": _without_tools(parse_lfm2),
    "kimi_k3": _without_tools(parse_kimi_k3),
    "apertus": _without_tools(parse_apertus),
    "seed_oss": parse_seed_oss,
    "nemotron_nano_v2": _without_tools(parse_nemotron_nano_v2),
}


def without_reasoning(text: str) -> str:
    """The answer after its reasoning: the text after the last ``</think>`` (as BFCL's handlers and vLLM's
    reasoning parsers cut it), or the whole text."""
    return text.rsplit(THINK_END, 1)[1].lstrip("\n") if THINK_END in text else text


def parse_tool_calls(text: Any, tool_format: str, tools: Tools = None) -> ParsedAnswer:
    """The calls of a model's answer in ``tool_format`` (one of :data:`TOOL_FORMATS`); ``tools`` (the tools
    offered, OpenAI's shape) type the values of the formats that write them as text. Never raises for any text: a
    malformed call, an over-long answer or a non-string are an ``error`` (and no call)."""
    if tool_format not in PARSERS:
        raise ValueError(f"unknown tool-call format {tool_format!r}: choose from {', '.join(TOOL_FORMATS)}")
    if not isinstance(text, str):
        return ParsedAnswer([], None, f"{tool_format}: the answer is a {type(text).__name__}, not text")
    if len(text) > MAX_TEXT_CHARS:
        return ParsedAnswer([], text, f"{tool_format}: the answer is {len(text)} characters, over the "
                                      f"{MAX_TEXT_CHARS} limit")
    try:
        return PARSERS[tool_format](without_reasoning(text), tools)  # type: ignore[index]
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
    before it rendered with the generation prompt, or, where that is not a start of the whole (the generation
    prompt opens an empty thought the turn does not keep), less the chat before it as a sentinel turn shows it;
    where neither is (the template opens a thought before a text turn but not before calls: Nemotron Nano 2), less
    what the whole shares with them, cut back to a token's or a line's end, once that holds the last message
    before the turn. ``render(messages, add_generation_prompt)``."""
    full = render(messages, False)
    prompt = render(messages[:-1], True)
    if full.startswith(prompt):
        return full[len(prompt):]
    # The generation prompt opens more than the turn keeps (Gemma 4 an empty thought, reasoning models a <think>
    # the history drops): the turn is what follows the chat before it, found with a sentinel as the turn's text.
    sentinel = "\u2063tcTurnStarts\u2063"
    probe = render([*messages[:-1], {"role": "assistant", "content": sentinel}], False)
    before = probe.split(sentinel, 1)[0]
    if sentinel in probe and full.startswith(before):
        return full[len(before):]
    shared = max(_common_prefix_length(full, prompt), _common_prefix_length(full, before) if sentinel in probe else 0)
    shared = max(full.rfind(">", 0, shared), full.rfind("\n", 0, shared)) + 1
    last = messages[-2].get("content") if len(messages) > 1 else None
    if shared <= 0 or not isinstance(last, str) or last not in full[:shared]:
        raise ValueError("the template does not render the chat before an assistant turn as a prefix of the chat "
                         "with it")
    return full[shared:]


def _common_prefix_length(left: str, right: str) -> int:
    length = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        length += 1
    return length


DETECTION_ORDER: tuple[ToolFormat, ...] = ("hermes", "qwen3_coder", "seed_oss", "glm45", "glm47", "deepseek_v31",
                                           "gemma4", "kimi_k2", "harmony", "minimax_m2", "deepseek_v32", "deepseek_v4",
                                           "deepseek_v3", "lfm2", "kimi_k3", "apertus", "nemotron_nano_v2",
                                           "mistral", "pythonic", "llama3_json")


def detect_tool_format(render: Callable[[list[dict[str, Any]], bool], str], eos_token: str = "",
                       formats: tuple[ToolFormat, ...] = DETECTION_ORDER) -> tuple[ToolFormat | None, str]:
    """Which format a chat template writes calls in: a probe call is rendered (``render(messages,
    add_generation_prompt)``, e.g. the template with the probe tools), its end-of-turn ``eos_token`` cut off
    (generation stops there), and read back by each parser (with the probe tools, which type its values), the
    most specific first (hermes, the three XML-like and token formats, mistral, pythonic, then llama3_json, which
    takes any JSON object; ``formats`` limits them, in that order). Returns the format and the rendered turn, or
    None and why not."""
    try:
        turn = rendered_assistant_turn(render, probe_messages()).rstrip()
    except Exception as exc:  # noqa: BLE001 - any template error is the answer
        return None, f"rendering a tool call fails: {type(exc).__name__}: {_short(str(exc))}"
    if eos_token and turn.endswith(eos_token):
        turn = turn[: -len(eos_token)]
    try:  # two calls in one message, where the template takes them (Llama 3.x's raises)
        pair = rendered_assistant_turn(render, probe_messages(2)).rstrip()
    except Exception:  # noqa: BLE001 - a template that cannot render two calls is read on one
        pair = None
    if pair is not None and pair.count(PROBE_TOOL_NAME) < 2:  # the template writes one of them (GigaChat 3)
        pair = None
    if pair is not None and eos_token and pair.endswith(eos_token):
        pair = pair[: -len(eos_token)]
    expected = [ParsedCall(PROBE_TOOL_NAME, PROBE_ARGUMENTS)]
    losing = []
    for name in formats:
        if parse_tool_calls(turn, name, probe_tools()).calls != expected:
            continue
        if pair is None or parse_tool_calls(pair, name, probe_tools()).calls == expected * 2:
            return name, turn
        losing.append(name)
    if losing:
        return None, (f"it writes two calls as {_short(pair, 160)!r}, which {', '.join(losing)} (reading one call "
                      "right) does not read as two")
    return None, (f"it writes a tool call as {_short(turn, 160)!r}, which none of the formats "
                  f"{', '.join(formats)} reads")
