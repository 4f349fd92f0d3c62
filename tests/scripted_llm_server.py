"""A deterministic, scriptable OpenAI-compatible chat-completions server for tests.

The server runs a FastAPI app under uvicorn in a background thread on 127.0.0.1, so real HTTP
clients (``openai.OpenAI``, httpx, ...) can talk to it::

    with ScriptedLLMServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        client.chat.completions.create(model="scripted-model", messages=[...])

Without a script every answer is derived from the request alone (same request -> same answer):

* ``response_format={"type": "json_schema", ...}``: content is ``json.dumps`` of a valid instance of
  the schema made by :func:`instance_from_schema`, seeded with the last user message.
* ``tools`` given and ``tool_choice`` is not ``"none"``: one tool call (the named tool, else the first
  function tool) with generated arguments. With ``tool_choice`` ``"auto"`` (or absent) the server
  answers in text instead once the last message is a ``tool`` result, so agent loops terminate.
* ``response_format={"type": "json_object"}``: ``{"answer": <sentence>}``.
* otherwise a plain sentence derived from the last user message.

Scripting: :meth:`ScriptedLLMServer.script` adds a rule ``(request_body) -> dict | str | None``; rules
are tried newest first and the first non-``None`` result answers. A result dict may hold:

* ``content`` (str), ``json`` (any JSON value, sent as ``json.dumps``), ``refusal`` (str),
  ``tool_calls`` (list of ``{"name", "arguments"?, "id"?}``; missing arguments are generated from the
  tool's schema in the request), ``finish_reason``, ``usage`` (overrides of the usage numbers);
* ``status`` (!= 200: an error with an OpenAI-style body), ``headers`` (added to any response),
  ``body`` (sent verbatim: dict/list as JSON, str as text; for faults and malformed answers);
* ``delay`` (seconds to wait before answering), combinable with everything else;
* ``reasoning_content`` / ``reasoning`` (str): sent in the message beside the answer, as reasoning
  endpoints (vLLM, DeepSeek, Qwen3; OpenRouter) do.

A result with none of the answer keys (e.g. ``{"delay": 1}``) gets the default answer. A plain
``str`` result is short for ``{"content": str}``.

``openai_rules=True`` makes the server refuse, with HTTP 400 and OpenAI's error body (``message``, ``type``,
``param``, ``code``), what OpenAI's API refuses (see :func:`openai_rule_error`): a ``strict`` JSON schema that
breaks the strict structured-output rules, ``max_tokens`` or a temperature other than 1 for a reasoning model.

Order of handling for ``POST /v1/chat/completions``: record the body, pending ``fail_next`` faults,
unknown model (404), malformed request (400), OpenAI's rules (400, when on), scripted rules, default answer.

Run standalone: ``python -m tests.scripted_llm_server --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from re import _constants as _re_constants  # private, but stable since Python 3.11
from re import _parser as _re_parser
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from uvicorn.config import LOGGING_CONFIG

__all__ = [
    "DEFAULT_MODEL",
    "Rule",
    "RuleResult",
    "ScriptedLLMServer",
    "default_reply",
    "error_body",
    "instance_from_schema",
    "last_user_text",
    "match_schema",
    "match_text",
    "match_tool",
    "openai_rule_error",
    "plain_reply",
    "schema_name",
    "short_hash",
    "when",
]

DEFAULT_MODEL = "scripted-model"
DEFAULT_CREATED = 1_700_000_000

RuleResult = dict[str, Any]
Rule = Callable[[dict[str, Any]], RuleResult | str | None]
Responder = Callable[[dict[str, Any]], RuleResult | str | None] | RuleResult | str

_ANSWER_KEYS = frozenset({"content", "json", "refusal", "tool_calls"})
_RESULT_KEYS = _ANSWER_KEYS | {"finish_reason", "usage", "status", "headers", "body", "delay", "reasoning_content",
                               "reasoning"}

_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request (scripted).", "invalid_request_error", None),
    401: ("Incorrect API key provided (scripted).", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to perform this request (scripted).", "invalid_request_error", None),
    404: ("Not found (scripted).", "invalid_request_error", None),
    408: ("Request timed out (scripted).", "timeout", None),
    409: ("Conflict (scripted).", "invalid_request_error", None),
    429: ("Rate limit reached (scripted).", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request (scripted).", "server_error", None),
    502: ("Bad gateway (scripted).", "server_error", None),
    503: ("The engine is currently overloaded, please try again later (scripted).", "server_error", None),
}


# --------------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------------


def short_hash(text: str, length: int = 4) -> str:
    """Hex prefix of the SHA-256 of ``text``: the per-prompt suffix of generated strings."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _hash_int(*parts: object) -> int:
    joined = "\x00".join(str(p) for p in parts)
    return int(hashlib.sha256(joined.encode("utf-8")).hexdigest()[:12], 16)


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, Mapping)]


def last_user_text(body: Mapping[str, Any]) -> str:
    """Text of the last ``user`` message of a chat request ("" when there is none)."""
    for message in reversed(_messages(body)):
        if message.get("role") == "user":
            return _message_text(message)
    return ""


def schema_name(body: Mapping[str, Any]) -> str | None:
    """``response_format.json_schema.name`` of a chat request, if it asks for a JSON schema."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            return spec["name"]
    return None


def _function_tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    found = []
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type", "function") == "function":
            function = tool.get("function")
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                found.append(function)
    return found


def _tool_parameters(body: Mapping[str, Any], name: str) -> Any:
    for function in _function_tools(body):
        if function["name"] == name:
            params = function.get("parameters")
            return params if params is not None else {"type": "object", "properties": {}}
    return {"type": "object", "properties": {}}


def _chosen_tool(body: Mapping[str, Any]) -> str | None:
    """Name of the tool the default answer calls, or None for a text answer."""
    functions = _function_tools(body)
    if not functions:
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return function["name"]
        allowed = choice.get("allowed_tools")
        if isinstance(allowed, Mapping):
            for tool in allowed.get("tools") or []:
                function = tool.get("function") if isinstance(tool, Mapping) else None
                if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                    if allowed.get("mode") != "required" and _after_tool_result(body):
                        return None
                    return function["name"]
        return functions[0]["name"]
    if choice == "required":
        return functions[0]["name"]
    # "auto": once the conversation carries a tool result, answer in text so agent loops end.
    if _after_tool_result(body):
        return None
    return functions[0]["name"]


def _after_tool_result(body: Mapping[str, Any]) -> bool:
    messages = _messages(body)
    return bool(messages) and messages[-1].get("role") in ("tool", "function")


def _prior_tool_call_count(body: Mapping[str, Any]) -> int:
    count = 0
    for message in _messages(body):
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and isinstance(calls, list):
            count += len(calls)
    return count


def _word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    total = 0
    for message in _messages(body):
        total += _word_count(_message_text(message))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
                    total += _word_count(function["arguments"])
    return total


def plain_reply(text: str) -> str:
    """The deterministic plain-text answer to a user message."""
    words = text.split()
    if not words:
        return f"Scripted reply {short_hash(text)}: there was no user message."
    snippet = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    return f'Scripted reply {short_hash(text)}: you said "{snippet}".'


def default_reply(body: Mapping[str, Any]) -> RuleResult:
    """The answer the server gives without a script, as a rule result (see the module docstring)."""
    seed = last_user_text(body)
    tool = _chosen_tool(body)
    if tool is not None:
        arguments = instance_from_schema(_tool_parameters(body, tool), seed)
        return {"tool_calls": [{"name": tool, "arguments": arguments}]}
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, Mapping) else {}
        return {"json": instance_from_schema(schema, seed)}
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return {"json": {"answer": plain_reply(seed)}}
    return {"content": plain_reply(seed)}


def error_body(
    status: int, message: str | None = None, type_: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body, ``{"error": {"message", "type", "code"}}``, with defaults per status."""
    default_message, default_type, default_code = _ERROR_DEFAULTS.get(
        status,
        (f"Scripted error {status}.", "server_error" if status >= 500 else "invalid_request_error", None),
    )
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": type_ if type_ is not None else default_type,
            "code": code if code is not None else default_code,
        }
    }


# --------------------------------------------------------------------------------------------------
# OpenAI's request rules (``openai_rules=True``)
# --------------------------------------------------------------------------------------------------

# written from OpenAI's documentation (structured outputs' "Supported schemas", reasoning models), apart from
# toolace's own checker, so that a test against this server checks the platform's requests, not itself
_STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "$ref", "$defs",
    "description", "title", "pattern", "format", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "minItems", "maxItems",
})
_STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
_REASONING_MODEL = re.compile(r"^(?:.*/)?(?:o\d+(?:-|$)|gpt-(?:[5-9]|\d{2,})(?:[.-]|$))")


def _strict_schema_error(node: Any, context: tuple[str, ...], depth: int) -> str | None:
    """OpenAI's message for the first strict-mode violation under ``node`` (``None`` when there is none)."""
    where = f"In context={context!r}, "
    if not isinstance(node, Mapping):
        return f"{where}schema must be a JSON Schema of 'type: \"object\"', got '{type(node).__name__}'."
    for key in node:
        if key not in _STRICT_KEYWORDS:
            return f"{where}'{key}' is not permitted."
    if "$ref" in node and len(node) > 1:
        return f"{where}$ref cannot have keywords {{{', '.join(repr(k) for k in node if k != '$ref')}}}."
    if "format" in node and node["format"] not in _STRICT_FORMATS:
        return f"{where}'{node['format']}' is not a valid format."
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds:
        depth += 1
        if node.get("additionalProperties") is not False:
            return f"{where}'additionalProperties' is required to be supplied and to be false."
        properties = node.get("properties") if isinstance(node.get("properties"), Mapping) else {}
        missing = [name for name in properties if name not in (node.get("required") or [])]
        if missing:
            return (f"{where}'required' is required to be supplied and to be an array including every key in "
                    f"properties. Missing '{missing[0]}'.")
        for name, sub in properties.items():
            if error := _strict_schema_error(sub, (*context, "properties", name), depth):
                return error
    if "array" in kinds:
        depth += 1
        if not isinstance(node.get("items"), Mapping):
            return f"{where}array schema missing items."
        if error := _strict_schema_error(node["items"], (*context, "items"), depth):
            return error
    if depth > 10:
        return f"{where}{depth} levels of nesting exceeds limit of 10."
    for i, branch in enumerate(node.get("anyOf") or []):
        if error := _strict_schema_error(branch, (*context, "anyOf", str(i)), depth):
            return error
    for name, sub in (node.get("$defs") or {}).items():
        if error := _strict_schema_error(sub, ("$defs", name), 0):
            return error
    return None


def openai_rule_error(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The 400 error body OpenAI's API answers ``body`` with, for the rules this server knows; ``None`` when
    the request passes. Reasoning models (o-series, gpt-5 and later, by name) refuse ``max_tokens`` and any
    temperature but 1; a ``response_format`` JSON schema sent with ``strict: true`` must meet the strict rules
    (object root, every object closed with every property required, only supported keywords and formats,
    at most 10 levels of nesting)."""

    def refuse(message: str, param: str, code: str | None) -> dict[str, Any]:
        return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}

    model = str(body.get("model") or "")
    if _REASONING_MODEL.match(model):
        if "max_tokens" in body:
            return refuse("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                          "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return refuse(f"Unsupported value: 'temperature' does not support {temperature} with this model. Only "
                          "the default (1) value is supported.", "temperature", "unsupported_value")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), Mapping) else {}
        if spec.get("strict") is True:
            schema = spec.get("schema")
            error = None
            if not isinstance(schema, Mapping) or schema.get("type") != "object" or "anyOf" in schema:
                error = "In context=(), schema must be a JSON Schema of 'type: \"object\"'."
            else:
                error = _strict_schema_error(schema, (), 0)
            if error:
                return refuse(f"Invalid schema for response_format '{spec.get('name')}': {error}", "response_format",
                              "invalid_json_schema")
    return None


# --------------------------------------------------------------------------------------------------
# Rule factories
# --------------------------------------------------------------------------------------------------


def when(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[Responder], Rule]:
    """Rule factory: ``when(pred)(responder)`` answers with ``responder`` where ``pred(body)`` holds.

    ``responder`` is a callable ``(body) -> dict | str | None`` or a constant rule result.
    """

    def factory(responder: Responder) -> Rule:
        def rule(body: dict[str, Any]) -> RuleResult | str | None:
            if not predicate(body):
                return None
            if callable(responder):
                return responder(body)
            return copy.deepcopy(responder)

        return rule

    return factory


def match_schema(name: str) -> Callable[[Responder], Rule]:
    """Rule factory for requests whose ``response_format.json_schema.name`` equals ``name``."""
    return when(lambda body: schema_name(body) == name)


def match_tool(name: str) -> Callable[[Responder], Rule]:
    """Rule factory for requests that offer a function tool called ``name``."""
    return when(lambda body: any(f["name"] == name for f in _function_tools(body)))


def match_text(substring: str) -> Callable[[Responder], Rule]:
    """Rule factory for requests whose last user message contains ``substring``."""
    return when(lambda body: substring in last_user_text(body))


# --------------------------------------------------------------------------------------------------
# JSON-schema instance generation
# --------------------------------------------------------------------------------------------------

_MAX_DEPTH = 12
_FALLBACK_STRING = "scripted"


def instance_from_schema(schema: Any, seed_text: str = "", *, name: str = "value") -> Any:
    """A deterministic instance of the JSON ``schema``, varied by ``seed_text``.

    Strings look like ``f"{property_name}_{short_hash(seed_text)}"`` (``"city_3fa2"``), numbers and
    booleans are derived from a hash of the seed and the property name, enums take their first
    value, ``anyOf``/``oneOf`` their first non-null branch, every declared property is filled and
    arrays get ``max(minItems, 1)`` items capped by ``maxItems``.
    """
    return _Generator(schema, seed_text).generate(schema, name, 0, 0)


class _Generator:
    def __init__(self, root: Any, seed: str) -> None:
        self.root = root
        self.seed = seed
        self.suffix = short_hash(seed)

    # -- schema plumbing ---------------------------------------------------------------------------

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        """Follow ``$ref`` (merging sibling keywords) until a schema without one is left."""
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and depth < 64:
            target = self.lookup(schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if isinstance(target, Mapping) else target
            depth += 1
        return schema

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        pointer = ref[1:]
        if not pointer:
            return node
        for raw in pointer.lstrip("/").split("/"):
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node

    def merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema.get("allOf") or []:
            part = self.resolve(part)
            if not isinstance(part, Mapping):
                continue
            if "allOf" in part:
                part = self.merge_all_of(part)
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                elif key not in merged:
                    merged[key] = value
        return merged

    @staticmethod
    def is_null_schema(schema: Any) -> bool:
        return isinstance(schema, Mapping) and (
            schema.get("type") == "null" or ("const" in schema and schema["const"] is None)
        )

    def pick_branch(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                resolved = [self.resolve(b) for b in branches]
                chosen = next((b for b in resolved if not self.is_null_schema(b)), resolved[0])
                rest = {k: v for k, v in schema.items() if k != key}
                if isinstance(chosen, Mapping):
                    return {**rest, **chosen}
                return rest if chosen is True else {"type": "null"}
        return dict(schema)

    # -- generation --------------------------------------------------------------------------------

    def generate(self, schema: Any, name: str, index: int, depth: int) -> Any:
        schema = self.resolve(schema)
        if schema is True or schema is None:
            schema = {}
        if schema is False:
            return None
        if not isinstance(schema, Mapping):
            return self.string({}, name, index)
        if "allOf" in schema:
            schema = self.merge_all_of(schema)
        if "anyOf" in schema or "oneOf" in schema:
            schema = self.pick_branch(schema)
            if any(k in schema for k in ("allOf", "anyOf", "oneOf", "$ref")):
                return self.generate(schema, name, index, depth + 1) if depth < 64 else None

        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if schema.get("default") is not None and index == 0:
            return copy.deepcopy(schema["default"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            non_null = [v for v in enum if v is not None] or enum
            return copy.deepcopy(non_null[index % len(non_null)])

        kind = self.type_of(schema)
        if kind == "object":
            return self.object(schema, name, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "integer":
            return self.integer(schema, name, index)
        if kind == "number":
            return self.number(schema, name, index)
        if kind == "boolean":
            return _hash_int(self.seed, name, index) % 2 == 0
        if kind == "null":
            return None
        return self.string(schema, name, index)

    @staticmethod
    def type_of(schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            non_null = [t for t in declared if t != "null"]
            declared = non_null[0] if non_null else (declared[0] if declared else None)
        if isinstance(declared, str):
            return declared
        if any(k in schema for k in ("properties", "additionalProperties", "patternProperties", "required")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems", "contains")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        if "multipleOf" in schema:
            return "number"
        return "string"

    def object(self, schema: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        shallow = depth < _MAX_DEPTH
        for prop, sub in properties.items():
            if shallow or prop in required:
                result[prop] = self.generate(sub, prop, 0, depth + 1)
        for prop in required:
            if prop not in result:
                result[prop] = self.extra_value(schema, prop, depth)
        additional = schema.get("additionalProperties", True)
        patterns = schema.get("patternProperties")
        extra_needed = int(schema.get("minProperties") or 0) - len(result)
        free_form = isinstance(additional, Mapping) or isinstance(patterns, Mapping)
        if "properties" not in schema and not required and shallow and free_form:
            extra_needed = max(extra_needed, 1)  # a map type: show one entry
        if extra_needed > 0 and isinstance(patterns, Mapping):
            for i, (pattern, sub) in enumerate(patterns.items()):
                if extra_needed <= 0:
                    break
                key = _string_for_pattern(pattern) or f"{name}_key_{i + 1}"
                if key not in result:
                    result[key] = self.generate(sub, key, 0, depth + 1)
                    extra_needed -= 1
        if extra_needed > 0 and additional is not False and not isinstance(patterns, Mapping):
            stem = "key" if name == "value" else f"{name}_key"
            for i in range(extra_needed):
                key = f"{stem}_{self.suffix}" if i == 0 else f"{stem}_{self.suffix}_{i + 1}"
                result[key] = self.generate(
                    additional if isinstance(additional, Mapping) else {}, key, 0, depth + 1
                )
        maximum = schema.get("maxProperties")
        if isinstance(maximum, int) and len(result) > maximum:
            keep = [k for k in result if k in required] + [k for k in result if k not in required]
            result = {k: result[k] for k in keep[: max(maximum, len(required))]}
        return result

    def extra_value(self, schema: Mapping[str, Any], prop: str, depth: int) -> Any:
        patterns = schema.get("patternProperties")
        if isinstance(patterns, Mapping):
            for pattern, sub in patterns.items():
                if _search(pattern, prop):
                    return self.generate(sub, prop, 0, depth + 1)
        additional = schema.get("additionalProperties")
        return self.generate(additional if isinstance(additional, Mapping) else {}, prop, 0, depth + 1)

    def array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        min_items = int(schema.get("minItems") or 0)
        count = max(min_items, 1) if depth < _MAX_DEPTH else min_items
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        if not isinstance(prefix, list):
            prefix = []
        if items is None and "contains" in schema:
            items = schema["contains"]
        result = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else (items if items is not None else {})
            if i == 0 and "contains" in schema and not prefix:
                sub = schema["contains"]
            item_name = name if i == 0 else f"{name}_{i + 1}"
            result.append(self.generate(sub, item_name, i, depth + 1))
        return result

    @staticmethod
    def bounds(schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
        """(low, low_exclusive, high, high_exclusive), handling draft-4 boolean exclusivity."""
        low, high = schema.get("minimum"), schema.get("maximum")
        low_ex = high_ex = False
        ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if ex_min is True:
            low_ex = True
        elif isinstance(ex_min, int | float) and not isinstance(ex_min, bool):
            if low is None or ex_min >= low:
                low, low_ex = ex_min, True
        if ex_max is True:
            high_ex = True
        elif isinstance(ex_max, int | float) and not isinstance(ex_max, bool):
            if high is None or ex_max <= high:
                high, high_ex = ex_max, True
        return low, low_ex, high, high_ex

    def integer(self, schema: Mapping[str, Any], name: str, index: int) -> int:
        low_f, low_ex, high_f, high_ex = self.bounds(schema)
        low = None if low_f is None else (math.floor(low_f) + 1 if low_ex else math.ceil(low_f))
        high = None if high_f is None else (math.ceil(high_f) - 1 if high_ex else math.floor(high_f))
        h = _hash_int(self.seed, name, index)
        if low is not None and high is not None:
            value = low + h % (high - low + 1) if high >= low else low
        elif low is not None:
            value = low + h % 100
        elif high is not None:
            value = min(h % 100, high) if high >= 0 else high - h % 100
        else:
            value = h % 100
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            up = math.ceil(value / step) * step
            value = up if high is None or up <= high else math.floor(value / step) * step
        return int(value)

    def number(self, schema: Mapping[str, Any], name: str, index: int) -> float | int:
        low, low_ex, high, high_ex = self.bounds(schema)
        h = _hash_int(self.seed, name, index)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            lo_n = None if low is None else math.ceil(low / step) + (1 if low_ex and low % step == 0 else 0)
            hi_n = (
                None if high is None else math.floor(high / step) - (1 if high_ex and high % step == 0 else 0)
            )
            if lo_n is not None and hi_n is not None:
                n = lo_n + h % (hi_n - lo_n + 1) if hi_n >= lo_n else lo_n
            elif lo_n is not None:
                n = lo_n + h % 100
            elif hi_n is not None:
                n = min(h % 100, hi_n)
            else:
                n = h % 100
            value = n * step
            return int(value) if isinstance(step, int) else round(value, 10)
        fraction = (h % 999 + 1) / 1000  # in (0, 1)
        if low is not None and high is not None:
            value = low + (high - low) * fraction if high > low else low
        elif low is not None:
            value = low + 1 + (h % 1000) / 10
        elif high is not None:
            value = min((h % 1000) / 10, high - 1)
        else:
            value = (h % 1000) / 10 + 0.5
        rounded = round(value, 6)
        inside_low = low is None or (rounded > low if low_ex else rounded >= low)
        inside_high = high is None or (rounded < high if high_ex else rounded <= high)
        return rounded if inside_low and inside_high else value

    def string(self, schema: Mapping[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        h = _hash_int(self.seed, name, index)
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "value"
        if fmt == "date":
            value = f"2024-{h % 12 + 1:02d}-{h % 28 + 1:02d}"
        elif fmt == "date-time":
            value = f"2024-{h % 12 + 1:02d}-{h % 28 + 1:02d}T{h % 24:02d}:{h % 60:02d}:{(h // 60) % 60:02d}Z"
        elif fmt == "time":
            value = f"{h % 24:02d}:{h % 60:02d}:{(h // 60) % 60:02d}Z"
        elif fmt in ("email", "idn-email"):
            value = f"{slug}_{self.suffix}@example.com"
        elif fmt in ("uri", "url", "iri", "uri-reference", "iri-reference"):
            value = f"https://example.com/{slug}/{self.suffix}"
        elif fmt == "uuid":
            value = str(
                uuid.UUID(hashlib.sha256(f"{self.seed}\x00{name}\x00{index}".encode()).hexdigest()[:32])
            )
        elif fmt in ("hostname", "idn-hostname"):
            value = f"{slug.replace('_', '-')}-{self.suffix}.example.com"
        elif fmt == "ipv4":
            value = f"192.0.2.{h % 254 + 1}"
        elif fmt == "ipv6":
            value = f"2001:db8::{h % 65535 + 1:x}"
        elif fmt == "duration":
            value = f"PT{h % 59 + 1}M"
        else:
            value = f"{name}_{self.suffix}"
        value = _fit_length(value, schema, self.suffix)
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and not _search(pattern, value):
            generated = _string_for_pattern(pattern)
            if generated is not None and _length_ok(generated, schema):
                return generated
            return _fit_length(_FALLBACK_STRING, schema, self.suffix)
        return value


def _length_ok(value: str, schema: Mapping[str, Any]) -> bool:
    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    return (not isinstance(min_len, int) or len(value) >= min_len) and (
        not isinstance(max_len, int) or len(value) <= max_len
    )


def _fit_length(value: str, schema: Mapping[str, Any], filler: str) -> str:
    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_len, int) and len(value) < min_len:
        pad = (filler or "x") * (min_len // max(len(filler), 1) + 1)
        value = (
            (value + "_" + pad)[:min_len] if min_len > len(value) + 1 else value + pad[: min_len - len(value)]
        )
    if isinstance(max_len, int) and len(value) > max_len:
        value = value[:max_len]
    return value


def _search(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False


def _string_for_pattern(pattern: str) -> str | None:
    """A short string matching a simple regular expression, or None where that fails."""
    c = _re_constants
    try:
        parsed = _re_parser.parse(pattern)
    except Exception:
        return None

    groups: dict[int, str] = {}

    def char_in(items: Sequence[tuple[Any, Any]]) -> str:
        negate = bool(items) and items[0][0] is c.NEGATE
        members = items[1:] if negate else items
        if not negate:
            op, av = members[0]
            if op is c.LITERAL:
                return chr(av)
            if op is c.RANGE:
                return chr(av[0])
            if op is c.CATEGORY:
                return category(av)
            raise ValueError(op)
        for candidate in "aZ0_ -.":
            if not any(matches(candidate, op, av) for op, av in members):
                return candidate
        raise ValueError("negated set")

    def matches(ch: str, op: Any, av: Any) -> bool:
        if op is c.LITERAL:
            return ord(ch) == av
        if op is c.RANGE:
            return av[0] <= ord(ch) <= av[1]
        if op is c.CATEGORY:
            return re.fullmatch(category_regex(av), ch) is not None
        return True

    def category_regex(av: Any) -> str:
        return {
            c.CATEGORY_DIGIT: r"\d",
            c.CATEGORY_NOT_DIGIT: r"\D",
            c.CATEGORY_WORD: r"\w",
            c.CATEGORY_NOT_WORD: r"\W",
            c.CATEGORY_SPACE: r"\s",
            c.CATEGORY_NOT_SPACE: r"\S",
        }.get(av, ".")

    def category(av: Any) -> str:
        return {
            c.CATEGORY_DIGIT: "0",
            c.CATEGORY_NOT_DIGIT: "a",
            c.CATEGORY_WORD: "a",
            c.CATEGORY_NOT_WORD: "-",
            c.CATEGORY_SPACE: " ",
            c.CATEGORY_NOT_SPACE: "a",
        }.get(av, "a")

    def emit(tokens: Iterable[tuple[Any, Any]]) -> str:
        out = []
        for op, av in tokens:
            if op is c.LITERAL:
                out.append(chr(av))
            elif op is c.NOT_LITERAL:
                out.append("a" if av != ord("a") else "b")
            elif op is c.ANY:
                out.append("a")
            elif op is c.IN:
                out.append(char_in(av))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, high, sub = av
                count = low if low > 0 else (1 if high is c.MAXREPEAT or high >= 1 else 0)
                out.append(emit(sub) * count)
            elif op is c.SUBPATTERN:
                text = emit(av[-1])
                if av[0] is not None:
                    groups[av[0]] = text
                out.append(text)
            elif op is c.ATOMIC_GROUP:
                out.append(emit(av))
            elif op is c.BRANCH:
                out.append(emit(av[1][0]))
            elif op is c.GROUPREF:
                out.append(groups.get(av, ""))
            elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
                continue
            else:
                raise ValueError(op)
        return "".join(out)

    try:
        value = emit(parsed)
    except Exception:
        return None
    return value if _search(pattern, value) else None


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _ScriptEntry:
    __slots__ = ("remaining", "rule")

    def __init__(self, rule: Rule, remaining: int | None) -> None:
        self.rule = rule
        self.remaining = remaining


class ScriptedLLMServer:
    """A deterministic OpenAI-compatible server in a background thread (see the module docstring).

    Args:
        models: model names served (``GET /v1/models``); others get a 404 ``model_not_found``.
        host: interface to bind, 127.0.0.1 by default.
        port: TCP port; 0 picks a free one (read ``.port`` / ``.base_url`` after ``start()``).
        latency: seconds added to every chat completion (for benchmarks), on top of a rule's delay.
        created: the ``created`` timestamp put in every answer (fixed, for determinism).
        openai_rules: refuse what OpenAI's API refuses (:func:`openai_rule_error`) with its 400 error body.
    """

    def __init__(
        self,
        models: Sequence[str] = (DEFAULT_MODEL,),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        created: int = DEFAULT_CREATED,
        keep_requests: bool = True,
        openai_rules: bool = False,
    ) -> None:
        """``keep_requests=False``: no request log (``requests`` stays empty), for long benchmark runs whose
        hundreds of thousands of bodies would otherwise fill the server's memory."""
        if isinstance(models, str):
            models = [models]
        self.models: list[str] = list(models)
        self.host = host
        self.latency = latency
        self.created = created
        self.keep_requests = keep_requests
        self.openai_rules = openai_rules
        self.refusals: list[dict[str, Any]] = []  # the error bodies sent under openai_rules
        self.api_keys: Counter[str] = Counter()  # bearer tokens of the chat requests (Authorization header)
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.RLock()
        self._requests: list[dict[str, Any]] = []
        self._errors: list[BaseException] = []
        self._rules: list[_ScriptEntry] = []
        self._faults: deque[RuleResult] = deque()
        self._fault_rates: dict[str, float] = {}
        self._fault_rng = random.Random(0)
        self._fault_settings: dict[str, float] = {}
        self.faults_injected: Counter[str] = Counter()
        self.stalls_abandoned = 0  # stall faults whose client closed the connection before the answer
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ScriptedLLMServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
        # TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port if self._port is not None else self._requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        return sock

    def _config(self, **overrides: Any) -> uvicorn.Config:
        options: dict[str, Any] = {
            "lifespan": "off",
            "timeout_graceful_shutdown": 1,
            "timeout_keep_alive": 30,
            # No logging configuration: leave the process's logging setup alone.
            "log_config": None,
            "log_level": None,
        }
        options.update(overrides)
        return uvicorn.Config(self.app, **options)

    def start(self, timeout: float = 10.0) -> ScriptedLLMServer:
        """Bind the port and serve in a daemon thread; returns once the server accepts connections.

        After ``stop()`` it can be started again, on the same port.
        """
        if self.running:
            raise RuntimeError("ScriptedLLMServer is already running")
        sock = self._bind()
        self._stopping = False
        server = uvicorn.Server(self._config())
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"scripted-llm-{self._port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout=2)
                sock.close()
                self._server = self._thread = None
                raise RuntimeError(f"ScriptedLLMServer did not start on {self.host}:{self._port}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping = True  # delayed answers give up with a 503 instead of holding the shutdown
        server.should_exit = True
        thread.join(timeout=timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=timeout)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl+C); used by ``python -m``."""
        sock = self._bind()
        uvicorn.Server(self._config(log_config=LOGGING_CONFIG, log_level="info")).run(sockets=[sock])

    # -- request log ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copy of the JSON bodies received by ``POST /v1/chat/completions``, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> dict[str, Any] | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by scripted rules (each answered with a 500)."""
        with self._lock:
            return list(self._errors)

    def clear_requests(self) -> None:
        """Forget the request log (and recorded rule errors) only."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()

    def reset(self) -> None:
        """Back to a fresh state: empty request log, no rules, no pending faults."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self.refusals.clear()
            self.api_keys.clear()
            self._rules.clear()
            self._faults.clear()
            self._fault_rates = {}
            self.faults_injected = Counter()

    # -- scripting -----------------------------------------------------------------------------------

    def script(self, rule: Rule, *, times: int | None = None) -> Rule:
        """Add ``rule`` (tried before the rules added earlier); with ``times`` it retires after
        answering that many requests. Returns ``rule`` so it can be used as a decorator."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._rules.insert(0, _ScriptEntry(rule, times))
        return rule

    def unscript(self, rule: Rule) -> None:
        """Remove a rule added with :meth:`script`."""
        with self._lock:
            self._rules = [e for e in self._rules if e.rule is not rule]

    def clear_script(self) -> None:
        """Remove all rules and pending ``fail_next`` faults."""
        with self._lock:
            self._rules.clear()
            self._faults.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        headers: Mapping[str, str] | None = None,
        *,
        body: Any = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``n`` chat requests (any model) with ``status`` (OpenAI-style error body
        unless ``body`` is given); queued after faults already pending."""
        fault: RuleResult = {"status": status, "headers": dict(headers or {})}
        if body is not None:
            fault["body"] = body
        if delay:
            fault["delay"] = delay
        with self._lock:
            self._faults.extend(copy.deepcopy(fault) for _ in range(n))

    FAULT_KINDS = ("latency", "rate_limit", "server_error", "timeout", "drop", "truncated_json",
                   "schema_violation", "stall", "hangup")

    def set_fault_rates(self, rates: Mapping[str, float] | None = None, *, seed: int = 0, latency_s: float = 0.2,
                        retry_after_s: float = 0.05, timeout_s: float = 3.0, stall_s: float = 120.0) -> None:
        """Inject faults at random into chat requests, each kind at its rate (0-1; the rates are summed, at
        most one fault per request), reproducibly for a ``seed``:

        - ``latency``: the answer comes ``latency_s`` late;
        - ``rate_limit``: HTTP 429 with ``Retry-After: retry_after_s``;
        - ``server_error``: HTTP 500;
        - ``timeout``: no answer for ``timeout_s`` (set the client's timeout below it), then a 504;
        - ``drop``: the connection is closed in the middle of the answer;
        - ``truncated_json``: a 200 whose content is the real answer cut in half;
        - ``schema_violation``: a 200 whose content is valid JSON that fits no answer schema;
        - ``stall``: no answer for ``stall_s``, then the normal answer (a shared server that holds a request);
          a client that closes the connection meanwhile is counted in ``stalls_abandoned``;
        - ``hangup``: the connection is closed right after the request is read, with no response at all.

        ``faults_injected`` counts what was injected. ``None`` or ``{}`` turns injection off."""
        unknown = set(rates or {}) - set(self.FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if sum((rates or {}).values()) > 1:
            raise ValueError("fault rates must sum to at most 1")
        with self._lock:
            self._fault_rates = dict(rates or {})
            self._fault_rng = random.Random(seed)
            self._fault_settings = {"latency_s": latency_s, "retry_after_s": retry_after_s, "timeout_s": timeout_s,
                                    "stall_s": stall_s}
            self.faults_injected = Counter()
            self.stalls_abandoned = 0

    def _random_fault(self) -> str | None:
        with self._lock:
            if not self._fault_rates:
                return None
            draw = self._fault_rng.random()
            for kind, rate in self._fault_rates.items():
                if draw < rate:
                    self.faults_injected[kind] += 1
                    return kind
                draw -= rate
        return None

    async def _inject(self, kind: str, body: dict[str, Any], request: Request | None = None) -> Response | None:
        """The response of an injected fault (None: answer normally after a delay, for ``latency`` and
        ``stall``)."""
        settings = self._fault_settings
        if kind == "latency":
            await self._sleep(settings["latency_s"])
            return None
        if kind == "stall":
            if not await self._sleep(settings["stall_s"], request):
                if request is not None and await request.is_disconnected():
                    with self._lock:
                        self.stalls_abandoned += 1
                return JSONResponse(error_body(503, "The scripted server is shutting down."), 503)
            return None
        if kind == "hangup":
            cycle = getattr(request.receive, "__self__", None) if request is not None else None
            transport = getattr(cycle, "transport", None)
            if transport is None:
                raise RuntimeError("hangup fault: this server protocol gives no access to the connection")
            transport.close()  # no status line, no headers: the client reads EOF
            return JSONResponse({}, status_code=200)  # never reaches the client
        if kind == "rate_limit":
            return JSONResponse(error_body(429), status_code=429,
                                headers={"Retry-After": str(settings["retry_after_s"])})
        if kind == "server_error":
            return JSONResponse(error_body(500), status_code=500)
        if kind == "timeout":
            await self._sleep(settings["timeout_s"])
            return JSONResponse(error_body(504), status_code=504)
        if kind == "drop":
            async def broken() -> AsyncIterator[bytes]:
                yield b'{"id": "chatcmpl-dropped", "choices": [{"mess'
                raise ConnectionResetError("scripted fault: connection dropped")

            return StreamingResponse(broken(), media_type="application/json")
        completion = self._completion(body, {**default_reply(body)})
        message = completion["choices"][0]["message"]
        if kind == "truncated_json":
            text = message.get("content") or json.dumps(message.get("tool_calls") or {})
            message["content"], message["tool_calls"] = text[: max(1, len(text) // 2)], None
        else:  # schema_violation
            message["content"], message["tool_calls"] = json.dumps({"unexpected_field": [1, 2, 3]}), None
        message.pop("tool_calls", None)
        completion["choices"][0]["finish_reason"] = "stop"
        return JSONResponse(completion)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def on_schema(self, name: str, answer: Any, *, times: int | None = None) -> Rule:
        """Answer requests whose ``json_schema`` name is ``name`` with JSON content: ``answer(body)``
        when callable, else ``answer`` itself."""

        def respond(body: dict[str, Any]) -> RuleResult:
            return {"json": answer(body) if callable(answer) else copy.deepcopy(answer)}

        return self.script(match_schema(name)(respond), times=times)

    def on_text(self, substring: str, answer: Any, *, times: int | None = None) -> Rule:
        """Answer requests whose last user message contains ``substring`` with ``answer`` (a rule
        result, a str content, or a callable returning either)."""
        return self.script(match_text(substring)(answer), times=times)

    def _evaluate(self, body: dict[str, Any]) -> RuleResult | str | None:
        with self._lock:
            for entry in list(self._rules):
                result = entry.rule(body)
                if result is None:
                    continue
                if entry.remaining is not None:
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._rules = [e for e in self._rules if e is not entry]
                return result
        return None

    # -- HTTP ------------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="ScriptedLLMServer", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/health", response_model=None)
        async def health() -> dict[str, Any]:
            return {"status": "ok", "models": list(self.models)}

        @app.get("/v1/models", response_model=None)
        async def list_models() -> dict[str, Any]:
            return {"object": "list", "data": [self._model_card(m) for m in list(self.models)]}

        @app.get("/v1/models/{model_id:path}", response_model=None)
        async def get_model(model_id: str) -> Response:
            if model_id not in self.models:
                return self._model_not_found(model_id)
            return JSONResponse(self._model_card(model_id))

        @app.post("/v1/chat/completions", response_model=None)
        async def chat_completions(request: Request) -> Response:
            return await self._chat(request)

        return app

    def _model_card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.created, "owned_by": "scripted"}

    @staticmethod
    def _model_not_found(model: Any) -> JSONResponse:
        return JSONResponse(
            error_body(
                404, f"The model `{model}` does not exist", "invalid_request_error", "model_not_found"
            ),
            status_code=404,
        )

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_body(400, "We could not parse the JSON body of your request."), 400)
        if not isinstance(body, dict):
            return JSONResponse(error_body(400, "The request body must be a JSON object."), 400)
        with self._lock:
            if self.keep_requests:
                self._requests.append(body)
            self.api_keys[request.headers.get("authorization", "").removeprefix("Bearer ")] += 1
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            return await self._respond(body, fault)
        injected = self._random_fault()
        if injected is not None:
            response = await self._inject(injected, body, request)
            if response is not None:
                return response
        model = body.get("model")
        if not isinstance(model, str):
            return JSONResponse(error_body(400, "you must provide a model parameter"), 400)
        if model not in self.models:
            return self._model_not_found(model)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return JSONResponse(error_body(400, "'messages' must be a non-empty array."), 400)
        if self.openai_rules and (refusal := openai_rule_error(body)) is not None:
            with self._lock:
                self.refusals.append(refusal)
            return JSONResponse(refusal, 400)
        try:
            result = self._evaluate(body)
            return await self._respond(body, result)
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            message = f"Scripted rule failed: {type(exc).__name__}: {exc}"
            return JSONResponse(error_body(500, message), 500)

    async def _respond(self, body: dict[str, Any], result: RuleResult | str | None) -> Response:
        if result is None:
            result = {}
        elif isinstance(result, str):
            result = {"content": result}
        elif not isinstance(result, Mapping):
            raise TypeError(f"a rule must return a dict, a str or None, not {type(result).__name__}")
        unknown = set(result) - _RESULT_KEYS
        if unknown:
            raise ValueError(f"unknown keys in rule result: {sorted(unknown)}")
        if "content" in result and "json" in result:
            raise ValueError("a rule result cannot hold both 'content' and 'json'")

        delay = float(result.get("delay") or 0) + self.latency
        if delay > 0 and not await self._sleep(delay):
            return JSONResponse(error_body(503, "The scripted server is shutting down."), 503)
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        status = int(result.get("status", 200))

        if "body" in result:
            raw = result["body"]
            if isinstance(raw, str | bytes):
                return PlainTextResponse(raw, status_code=status, headers=headers)
            return JSONResponse(raw, status_code=status, headers=headers)
        if status != 200:
            return JSONResponse(error_body(status), status_code=status, headers=headers)

        answer = result if _ANSWER_KEYS & set(result) else {**default_reply(body), **result}
        completion = self._completion(body, answer)
        if body.get("stream"):
            return StreamingResponse(
                self._sse(completion, body), media_type="text/event-stream", headers=headers
            )
        return JSONResponse(completion, headers=headers)

    async def _sleep(self, seconds: float, request: Request | None = None) -> bool:
        """Sleep ``seconds``; False when the server began stopping meanwhile, or (given the ``request``) when its
        client closed the connection."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (remaining := end - loop.time()) > 0:
            if self._stopping or (request is not None and await request.is_disconnected()):
                return False
            await asyncio.sleep(min(remaining, 0.05))
        return not self._stopping

    def _completion(self, body: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
        content: str | None = answer.get("content")
        if "json" in answer:
            content = json.dumps(answer["json"])
        tool_calls = None
        if answer.get("tool_calls"):
            offset = _prior_tool_call_count(body)
            tool_calls = [
                self._tool_call(body, call, offset + i) for i, call in enumerate(answer["tool_calls"])
            ]
        finish_reason = answer.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
        prompt_tokens = _prompt_tokens(body)
        completion_tokens = (
            _word_count(content)
            + _word_count(answer.get("refusal"))
            + sum(_word_count(call["function"]["arguments"]) for call in tool_calls or [])
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        usage.update(answer.get("usage") or {})
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]
        return {
            "id": f"chatcmpl-{digest}",
            "object": "chat.completion",
            "created": self.created,
            "model": body.get("model"),
            "system_fingerprint": "fp_scripted",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": answer.get("refusal"),
                        "tool_calls": tool_calls,
                        **{k: answer[k] for k in ("reasoning_content", "reasoning") if k in answer},
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }

    @staticmethod
    def _tool_call(body: Mapping[str, Any], call: Mapping[str, Any], number: int) -> dict[str, Any]:
        function = call.get("function") if isinstance(call.get("function"), Mapping) else call
        name = function.get("name")
        if not isinstance(name, str):
            raise ValueError(f"a scripted tool call needs a 'name': {call!r}")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = instance_from_schema(_tool_parameters(body, name), last_user_text(body))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        return {
            "id": call.get("id") or f"call_{number}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    @staticmethod
    async def _sse(completion: dict[str, Any], body: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """The completion as a chat.completion.chunk stream: the content a word (with the spaces before it) per
        chunk, as a real server streams tokens, then the tool calls, the finish reason and (when asked) the usage."""
        choice = completion["choices"][0]
        message = choice["message"]
        base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        words = re.findall(r"\s*\S+|\s+", message["content"] or "") or [message["content"]]
        deltas: list[dict[str, Any]] = [{"content": word} for word in words]
        deltas[0] = {"role": "assistant", **deltas[0]}
        if message["refusal"] is not None:
            deltas[-1]["refusal"] = message["refusal"]
        if message["tool_calls"]:
            deltas.append({"tool_calls": [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]})
        chunks = [{**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
                  for delta in deltas]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": choice["finish_reason"]}]})
        options = body.get("stream_options")
        if isinstance(options, Mapping) and options.get("include_usage"):
            chunks.append({**base, "choices": [], "usage": completion["usage"]})
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.scripted_llm_server",
        description="Deterministic OpenAI-compatible chat-completions server (no script: default answers).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help=f"model name to serve (repeatable; default {DEFAULT_MODEL})",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat completion")
    args = parser.parse_args(argv)
    server = ScriptedLLMServer(
        args.models or [DEFAULT_MODEL], host=args.host, port=args.port, latency=args.latency
    )
    print(f"ScriptedLLMServer: base_url http://{args.host}:{args.port}/v1 models {server.models}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
