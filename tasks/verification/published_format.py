"""Checks of the published rows against the formats they claim: OpenAI's fine-tuning input (``openai.jsonl``)
and the Hugging Face chat convention (the parquet shards' ``messages`` and ``tools``).

:func:`openai_finetune_problems` follows OpenAI's documented fine-tuning format: the per-line training example
of the chat fine-tuning input (``messages``, and optionally ``tools``, ``parallel_tool_calls`` and the deprecated
``functions``; no other key), the message objects of the chat API for each role (``system``/``developer``,
``user``, ``assistant`` with ``content`` and/or ``tool_calls`` and an optional ``weight`` of 0 or 1, ``tool``
with the ``tool_call_id`` it answers), tool calls as ``{"id", "type": "function", "function": {"name",
"arguments"}}`` with ``arguments`` a JSON string, function names of at most 64 letters, digits, ``_`` or ``-``,
and the checks of OpenAI's cookbook "Data preparation and analysis for chat model fine-tuning" (each example a
dict with a non-empty ``messages`` list, each message a known role with string content unless it makes calls,
at least one assistant message). A ``parallel_tool_calls: false`` example must not hold several calls in one
message.

:func:`chat_convention_problems` checks what chat templates and trainers expect: each message has only the keys
its role uses and none is null; ``content`` is a string; ``arguments`` are objects; call ids are 9 alphanumeric
characters, unique in the row, and each tool message names the id of a call it answers.
"""

from __future__ import annotations

import json
import re
from typing import Any

FINETUNE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
OPENAI_MESSAGE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "function_call", "weight", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CHAT_MESSAGE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "reasoning_content"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
CALL_ID = re.compile(r"[A-Za-z0-9]{9}")


def _tools_problems(tools: Any, arguments_as: type) -> list[str]:
    if not isinstance(tools, list):
        return [f"tools is {type(tools).__name__}, not a list"]
    problems = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            problems.append(f"tools[{i}] is not {{'type': 'function', 'function': {{...}}}}")
            continue
        name = function.get("name")
        if not isinstance(name, str) or (arguments_as is str and not FUNCTION_NAME.fullmatch(name)):
            problems.append(f"tools[{i}].function.name {name!r} is not 1-64 letters, digits, _ or -")
        if "description" in function and not isinstance(function["description"], str):
            problems.append(f"tools[{i}].function.description is not a string")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            problems.append(f"tools[{i}].function.parameters is not an object (JSON Schema)")
    return problems


def _call_problems(where: str, calls: Any, arguments_as: type) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{where}.tool_calls is not a non-empty list"]
    problems = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or call.get("type") != "function" or not isinstance(function, dict):
            problems.append(f"{at} is not {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}")
            continue
        if not isinstance(call.get("id"), str) or not call["id"]:
            problems.append(f"{at} has no id")
        if not isinstance(function.get("name"), str) or not function["name"]:
            problems.append(f"{at}.function has no name")
        arguments = function.get("arguments")
        if arguments_as is str:
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else None
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                problems.append(f"{at}.function.arguments is not a JSON string of an object")
        elif not isinstance(arguments, dict):
            problems.append(f"{at}.function.arguments is {type(arguments).__name__}, not an object")
    return problems


def openai_finetune_problems(example: Any) -> list[str]:
    """What keeps ``example`` (one line of a fine-tuning file) from OpenAI's documented format; [] when none."""
    if not isinstance(example, dict):
        return [f"the example is {type(example).__name__}, not an object"]
    problems = [f"unknown top-level key {k!r}" for k in example if k not in FINETUNE_KEYS]
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "no messages list"]
    if "tools" in example:
        problems += _tools_problems(example["tools"], str)
    parallel = example.get("parallel_tool_calls")
    if "parallel_tool_calls" in example and not isinstance(parallel, bool):
        problems.append("parallel_tool_calls is not a boolean")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where} is not an object")
            continue
        role = message.get("role")
        if role not in OPENAI_MESSAGE_KEYS:
            problems.append(f"{where} has role {role!r}, not one of {', '.join(OPENAI_MESSAGE_KEYS)}")
            continue
        problems += [f"{where} ({role}) has unknown key {k!r}" for k in message if k not in OPENAI_MESSAGE_KEYS[role]]
        content, calls = message.get("content"), message.get("tool_calls")
        if role == "assistant" and calls is not None:
            problems += _call_problems(where, calls, str)
            if content is not None and not isinstance(content, str):
                problems.append(f"{where}.content is not a string")
            if parallel is False and isinstance(calls, list) and len(calls) > 1:
                problems.append(f"{where} holds {len(calls)} calls but parallel_tool_calls is false")
            open_calls = {c.get("id") for c in calls if isinstance(c, dict)} if isinstance(calls, list) else set()
        elif not isinstance(content, str) or (role != "tool" and not content.strip()):
            problems.append(f"{where} ({role}) has no text content and no tool_calls")
        if role == "assistant" and "weight" in message and message["weight"] not in (0, 1):
            problems.append(f"{where}.weight is not 0 or 1")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                problems.append(f"{where} (tool) answers {call_id!r}, not a call of the assistant message before it")
            else:
                open_calls.discard(call_id)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("no assistant message")
    return problems


def chat_convention_problems(row: Any) -> list[str]:
    """What keeps a shard row's ``messages`` and ``tools`` from the Hugging Face chat convention; [] if none."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        return ["no messages list"]
    problems = _tools_problems(row.get("tools"), dict)
    seen_ids: set[str] = set()
    open_calls: set[str] = set()
    for i, message in enumerate(row["messages"]):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_MESSAGE_KEYS:
            problems.append(f"{where} has role {role!r}, not one of {', '.join(CHAT_MESSAGE_KEYS)}")
            continue
        problems += [f"{where} ({role}) has key {k!r}, which a {role} message does not use"
                     for k in message if k not in CHAT_MESSAGE_KEYS[role]]
        problems += [f"{where}.{k} is null" for k, v in message.items() if v is None]
        if not isinstance(message.get("content"), str):
            problems.append(f"{where}.content is not a string")
        if "tool_calls" in message:
            calls = message["tool_calls"]
            problems += _call_problems(where, calls, dict)
            open_calls = set()
            for call in calls if isinstance(calls, list) else []:
                call_id = call.get("id") if isinstance(call, dict) else None
                if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
                    problems.append(f"{where}: call id {call_id!r} is not 9 alphanumeric characters")
                elif call_id in seen_ids:
                    problems.append(f"{where}: call id {call_id!r} is used twice in the dialog")
                else:
                    seen_ids.add(call_id)
                    open_calls.add(call_id)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                problems.append(f"{where} (tool) answers {call_id!r}, not an unanswered call before it")
            else:
                open_calls.discard(call_id)
    return problems
