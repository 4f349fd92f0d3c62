"""The shapes of BFCL's function-calling (FC) mode, apart from any model: the request (an item's or a
multi-turn conversation's chat and its functions as OpenAI tools) and the answer (an endpoint's structured calls,
or text read in the model's tool-call format). :mod:`tasks.evaluation.bfcl_fc` documents the mode and holds the
answer sources and the single-turn verdict; :mod:`tasks.evaluation.bfcl_multi_turn` holds FC conversations with
these shapes. Kept apart so that both build on it without importing each other."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tasks.evaluation.bfcl_data import BfclItem
from tasks.evaluation.bfcl_prompting import Answer, prompt_functions
from tasks.formats.tool_call_formats import bfcl_calls, parse_tool_calls

# bfcl_eval.constants.type_mappings.GORILLA_TO_OPENAPI
GORILLA_TO_OPENAPI: dict[str, str] = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object", "tuple": "array",
    "any": "string", "byte": "integer", "short": "integer", "long": "integer", "double": "number",
    "char": "string", "ArrayList": "array", "Array": "array", "HashMap": "object", "Hashtable": "object",
    "Queue": "array", "Stack": "array", "Any": "string", "String": "string", "Bigint": "integer",
}


# --------------------------------------------------------------------------------------------- the request


def openai_name(name: str) -> str:
    """A function name as OpenAI-style APIs take it: ``.`` -> ``_`` (what BFCL does for those models)."""
    return re.sub(r"\.", "_", name)


def _openai_type(value: Any) -> str:
    return GORILLA_TO_OPENAPI.get(value, "string") if isinstance(value, str) else "string"


def _cast_properties(properties: Any) -> Any:
    """BFCL's ``_cast_to_openai_type`` (without its crashes on a malformed doc: an unknown type reads as string)."""
    if not isinstance(properties, dict):
        return properties
    for value in properties.values():
        if not isinstance(value, dict):
            continue
        if "type" not in value:
            value["type"] = "string"
        else:
            if value["type"] == "float":
                value["format"] = "float"
                value["description"] = str(value.get("description", "")) + " This is a float type value."
            value["type"] = _openai_type(value["type"])
        if value["type"] in ("array", "object"):
            items = value.get("items")
            if "properties" in value:
                value["properties"] = _cast_properties(value["properties"])
            elif isinstance(items, dict):
                items["type"] = _openai_type(items.get("type"))
                inner = items.get("items")
                if items["type"] == "array" and isinstance(inner, dict):
                    inner["type"] = _openai_type(inner.get("type"))
                elif items["type"] == "object" and "properties" in items:
                    items["properties"] = _cast_properties(items["properties"])
    return properties


def fc_tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An item's functions as OpenAI ``tools`` (see the module docstring); the item is left as it was."""
    tools = []
    for doc in prompt_functions(functions):  # a deep copy with BFCL's Python hint
        doc["name"] = openai_name(str(doc.get("name", "")))
        parameters = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
        parameters["type"] = "object"
        parameters["properties"] = _cast_properties(parameters.get("properties") or {})
        doc["parameters"] = parameters
        tools.append({"type": "function", "function": doc})
    return tools


def fc_messages(item: BfclItem) -> list[dict[str, str]]:
    """The item's first turn as it is: in FC mode the model's own template carries the tools."""
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in item.question[0]]


@dataclass(frozen=True)
class FcRequest:
    """A chat and the tools offered: an assistant message may hold ``tool_calls`` (``{"id", "type": "function",
    "function": {"name", "arguments": object}}``, as chat templates take them) and ``tool`` messages the results
    (``tool_call_id``, ``name``, ``content``): a multi-turn conversation in FC mode."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat as OpenAI's API takes it: each call's arguments as a JSON string, ``tool`` messages with only their
    ``tool_call_id`` and ``content``."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [{**call, "function": {**call["function"], "arguments": (
                call["function"]["arguments"] if isinstance(call["function"]["arguments"], str)
                else json.dumps(call["function"]["arguments"], ensure_ascii=False))}} for call in message["tool_calls"]]
            wire.append({**message, "tool_calls": calls})
        elif message.get("role") == "tool":
            wire.append({"role": "tool", "tool_call_id": message.get("tool_call_id"), "content": message["content"]})
        else:
            wire.append(dict(message))
    return wire


def fc_request(item: BfclItem) -> FcRequest:
    return FcRequest(fc_messages(item), fc_tools(item.functions))


# ---------------------------------------------------------------------------------------------- the verdict


@dataclass
class FcAnswer(Answer):
    """An FC answer: ``calls`` are the structured calls an endpoint returned (``[{name: arguments_text}]``,
    None when it returned none); ``text`` is what is kept in the answers file."""

    calls: list[dict[str, str]] | None = None


TEXT_ANSWER = "no tool call: the answer is text"


def decode_fc_answer(answer: Answer, tool_format: str | None, tools: list[dict[str, Any]] | None = None
                     ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The answer's calls as ``[{name: arguments}]``, or None and why there is none (:data:`TEXT_ANSWER`, or why
    an attempted call does not parse); ``tools`` (those offered) type the values of a format that writes them as
    text (``qwen3_coder``, ``glm45``)."""
    calls = answer.calls if isinstance(answer, FcAnswer) else None
    if calls:
        decoded = []
        for k, call in enumerate(calls, 1):
            (name, arguments), = call.items()
            try:
                decoded.append({name: json.loads(arguments)})
            except (ValueError, RecursionError) as exc:
                return None, f"call {k} ({name}): its arguments are not JSON ({type(exc).__name__}: {str(exc)[:120]})"
        return decoded, None
    text = answer.text or ""
    if tool_format is None:
        return None, TEXT_ANSWER
    parsed = parse_tool_calls(text, tool_format, tools)
    if parsed.calls:
        return bfcl_calls(parsed.calls), None
    return None, parsed.error or TEXT_ANSWER
