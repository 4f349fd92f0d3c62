"""Function calls and tool lists in ToolACE's own format (Python-style call lists, the "dict" dialect)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from schemas.records import APISpec, ToolCall, Turn
from schemas.samples import ToolSpec

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
_TOOLACE_TYPES = {"object": "dict", "number": "float", "integer": "int"}


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


def _toolace_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _toolace_types(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = _TOOLACE_TYPES.get(out["type"], out["type"])
        return out
    if isinstance(schema, list):
        return [_toolace_types(v) for v in schema]
    return schema


def toolace_tool(api: APISpec | ToolSpec) -> dict[str, Any]:
    """A tool as ToolACE lists it: ``dict``/``float``/``int`` types and a top-level ``"required": null``."""
    return {"name": api.name, "description": api.description,
            "parameters": _toolace_types(api.parameters), "required": None}


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


def openai_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """Turns as OpenAI chat messages: assistant ``tool_calls`` with JSON-string arguments, ``tool`` replies."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        if turn.role == "tool":
            out.append({"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content or ""})
        elif turn.tool_calls:
            out.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in turn.tool_calls]})
        else:
            out.append({"role": turn.role, "content": turn.content or ""})
    return out
