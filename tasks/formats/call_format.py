"""Function calls and tool lists in ToolACE's own format (Python-style call lists, the "dict" dialect)."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from schemas.records import APISpec, ToolCall, Turn
from schemas.samples import ToolSpec
from tasks.formats.type_dialects import to_toolace_dialect

TOOLACE_SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. \n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. \n"
    "If none of the function can be used, point it out. If the given question lacks the parameters required "
    "by the function,\nalso point it out. You should only return the function call in tools call sections.\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func1(params_name=params_value, params_name2=params_value2...), func2(params)]\n"
    "You SHOULD NOT include any other text in the response.\n"
    "Here is a list of functions in JSON format that you can invoke:\n"
)


def python_literal(value: Any) -> str:
    """A JSON value written as a Python literal (True/False/None, double-quoted strings)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {python_literal(v)}"
                               for k, v in value.items()) + "}"
    return repr(value)


def render_calls(calls: list[ToolCall]) -> str:
    """``[func(a=1, b="x"), other()]``: one list, several entries for parallel calls."""
    parts = [f"{c.name}({', '.join(f'{k}={python_literal(v)}' for k, v in c.arguments.items())})" for c in calls]
    return "[" + ", ".join(parts) + "]"


def toolace_tool(api: APISpec | ToolSpec) -> dict[str, Any]:
    """A tool as ToolACE lists it: ``dict``/``float``/``int`` types
    (:func:`tasks.formats.type_dialects.to_toolace_dialect`)
    and a top-level ``"required": null``."""
    return {"name": api.name, "description": api.description,
            "parameters": to_toolace_dialect(api.parameters), "required": None}


def toolace_system_prompt(apis: Sequence[APISpec | ToolSpec]) -> str:
    return TOOLACE_SYSTEM_PROMPT + json.dumps([toolace_tool(a) for a in apis], ensure_ascii=False)


def _tool_result(content: str | None) -> Any:
    """A tool turn's content as a ``results`` value: its JSON value, or the text itself when it is not JSON."""
    try:
        return json.loads(content or "null")
    except ValueError:
        return content


def toolace_chat(system: str, turns: Sequence[Turn]) -> list[dict[str, str]]:
    """Chat messages in ToolACE's format, the way a model is trained on a dialog and prompted with one:
    ``system`` first, then one message per turn; assistant calls as ``[func(a=1)]`` (a call turn's text,
    if any, is left out, as ToolACE does), each tool turn as ``[{"name": ..., "results": ...}]``."""
    messages = [{"role": "system", "content": system}]
    for turn in turns:
        if turn.role == "assistant":
            content = render_calls(turn.tool_calls) if turn.tool_calls else (turn.content or "")
            messages.append({"role": "assistant", "content": content})
        elif turn.role == "tool":
            payload = [{"name": turn.name, "results": _tool_result(turn.content)}]
            messages.append({"role": "tool", "content": json.dumps(payload, ensure_ascii=False)})
        else:
            messages.append({"role": "user", "content": turn.content or ""})
    return messages


_ID_ALPHABET = string.ascii_letters + string.digits
CALL_ID_LENGTH = 9  # Mistral's templates demand 9 alphanumeric characters; every other template takes them


def call_id(seed: str, n: int) -> str:
    """The ``n``-th published call id of a dialog: 9 alphanumeric characters drawn from sha256(seed, n), so a
    dialog always gets the same ids."""
    number = int.from_bytes(hashlib.sha256(f"{seed}\x00{n}".encode()).digest()[:12], "big")
    chars = []
    for _ in range(CALL_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


TurnT = TypeVar("TurnT", bound=Turn)


def with_published_ids(seed: str, turns: Sequence[TurnT]) -> list[TurnT]:
    """Copies of the turns whose calls carry published ids (:func:`call_id`, unique in the dialog) and whose
    tool turns name the id they answer. Generation numbers calls per turn (``call_0`` again in every call
    turn); a tool turn is matched to the call it answers among the still unanswered calls of the latest call
    turn: by its old id, else by name, else the first one. A tool turn that answers nothing keeps no id."""
    out: list[TurnT] = []
    used: set[str] = set()
    counter = 0
    pending: list[list[Any]] = []  # [old id, new id, name, answered] of the latest call turn
    for turn in turns:
        if turn.role == "assistant" and turn.tool_calls:
            calls, pending = [], []
            for call in turn.tool_calls:
                new = call_id(seed, counter)
                counter += 1
                while new in used:
                    new = call_id(seed, counter)
                    counter += 1
                used.add(new)
                calls.append(call.model_copy(update={"id": new}))
                pending.append([call.id, new, call.name, False])
            out.append(turn.model_copy(update={"tool_calls": calls}))
        elif turn.role == "tool":
            open_calls = [p for p in pending if not p[3]]
            match = (next((p for p in open_calls if turn.tool_call_id is not None and p[0] == turn.tool_call_id), None)
                     or next((p for p in open_calls if turn.name and p[2] == turn.name), None)
                     or (open_calls[0] if open_calls else None))
            if match is not None:
                match[3] = True
            out.append(turn.model_copy(update={"tool_call_id": match[1] if match is not None else None}))
        else:
            out.append(turn)
    return out


def _plain_text(turn: Turn) -> str:
    return turn.content or ""


def openai_messages(turns: Sequence[Turn], system: str | None = None,
                    text: Callable[[Any], str] = _plain_text) -> list[dict[str, Any]]:
    """Turns as OpenAI chat messages (the wire format: requests and ``openai.jsonl``): an optional ``system``
    message first; assistant ``tool_calls`` with JSON-string ``arguments`` and the turn's text (``None`` when it
    has none) as ``content``; ``tool`` replies naming the ``tool_call_id`` they answer (a reply that answers no
    known id names its function instead). ``text`` gives a turn's text (the converter passes one that keeps
    the raw text of a call that did not parse)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for turn in turns:
        if turn.role == "tool":
            message: dict[str, Any] = {"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content or ""}
            if turn.tool_call_id is None and turn.name:
                message["name"] = turn.name
            out.append(message)
        elif turn.tool_calls:
            out.append({"role": "assistant", "content": turn.content, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in turn.tool_calls]})
        else:
            out.append({"role": turn.role, "content": text(turn)})
    return out


def openai_example(turns: Sequence[Turn], tools: list[dict[str, Any]], seed: str,
                   system: str | None = None, text: Callable[[Any], str] = _plain_text) -> dict[str, Any]:
    """One example of OpenAI's fine-tuning format, the one writer of ``openai``-format rows (the published
    ``openai.jsonl`` and the converter): ``messages`` (:func:`openai_messages`, with published call ids from
    ``seed``) and ``tools`` (``[{"type": "function", "function": {...}}]``). Nothing else: the fine-tuning
    input takes ``messages``, ``tools``, ``parallel_tool_calls`` and ``functions`` only."""
    return {"messages": openai_messages(with_published_ids(seed, turns), system, text), "tools": tools}


def chat_messages(turns: Sequence[Turn], system: str | None = None, reasoning: bool = False,
                  text: Callable[[Any], str] = _plain_text) -> list[dict[str, Any]]:
    """Turns as chat messages in the Hugging Face convention, what ``apply_chat_template`` and the trainers
    built on it (TRL, LLaMA-Factory, Axolotl, Unsloth) take: each message has only the keys its role uses;
    ``tool_calls`` only on assistant messages that make calls, with ``arguments`` as an object (a template
    writes it with ``tojson``; a string would come out escaped), and ``content`` a string there too (``""``
    when the turn has no text); ``tool`` messages name the ``tool_call_id`` they answer and the function.
    With ``reasoning``, assistant messages carry the turn's ``reasoning_content`` (when it has one), the field
    chat templates read. Call ids are taken as they are: pass turns from :func:`with_published_ids`."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for turn in turns:
        if turn.role == "tool":
            message: dict[str, Any] = {"role": "tool", "content": turn.content or ""}
            if turn.tool_call_id is not None:
                message["tool_call_id"] = turn.tool_call_id
            if turn.name:
                message["name"] = turn.name
        elif turn.role == "assistant":
            message = {"role": "assistant", "content": text(turn)}
            if turn.tool_calls:
                message["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.name, "arguments": dict(c.arguments)}}
                                         for c in turn.tool_calls]
            if reasoning and turn.reasoning_content:
                message["reasoning_content"] = turn.reasoning_content
        else:
            message = {"role": turn.role, "content": text(turn)}
        out.append(message)
    return out
