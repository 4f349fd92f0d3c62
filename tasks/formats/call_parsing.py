"""Function calls parsed out of model output, with :mod:`ast` and a node walker (never ``eval``/``exec``).

A model answers in ToolACE/BFCL call syntax: ``[f(a=1, b="x"), weather.get(city="Oslo")]``. The text is
parsed with ``ast.parse(..., mode="eval")``, which only builds a syntax tree and runs nothing; the tree is
then walked, and only a small grammar is accepted:

- a call list ``[f(...), g(...)]`` (or a tuple ``f(...), g(...)``), or one call ``f(...)`` without brackets;
- a function is a name or a dotted name (``weather.get``), kept dotted;
- keyword arguments only;
- values are literals: str, int, float, bool, None, lists, tuples (returned as lists), dicts with literal
  keys, negative numbers, and the JSON names ``true``/``false``/``null``.

Anything else (a positional argument, ``**kwargs``, a variable, an attribute value, a call inside an
argument, an f-string, a lambda, a comprehension, an operator other than a leading minus ...) raises
:class:`CallParseError` with the reason. Text over :data:`MAX_TEXT_CHARS` characters or nested deeper than
:data:`MAX_DEPTH` brackets is refused before or while parsing.

Names that are not Python identifiers, as in the ToolACE release (``Market Trends API``,
``User Feed (Video Posts) V2``, ``/madlibs-diceware``), are resolved against the offered tool names
(``tool_names``), longest first, where a call may start; a name not offered but written up to its ``(`` is
still read (so a check can say it is unknown). Arguments named after Python keywords (``from="2025-01-01"``)
are read too. Both are done by replacing the name with a placeholder identifier before :mod:`ast` sees the
text, outside string literals only, and mapping it back afterwards.

JSON-style calls (``{"name": ..., "arguments": {...}}``, lists of them, BFCL's decoded
``[{"func": {"a": 1}}]``) are read by :func:`parse_json_calls`.

Where the calls sit in other text, the candidates are tried in this order: the whole text, the inside of
each ```code fence```, then the ``[...]`` spans of the text, outermost first (a span's inner spans are
tried only when the span itself is not a Python expression, e.g. ``[Answer: [f(a=1)]]``). The first
candidate that is a call list by shape decides: if its arguments break the rules above, that error is
raised and no other candidate is looked at (so a bad call is never skipped in favour of a later one).
"""

from __future__ import annotations

import ast
import json
import keyword
import math
import re
from collections.abc import Collection
from typing import Any

from schemas.records import ToolCall

MAX_TEXT_CHARS = 100_000
MAX_DEPTH = 50
_JSON_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_OPEN = {"[": "]", "(": ")", "{": "}"}
_CLOSE = {"]", ")", "}"}
_PARSE_FAILURES = (SyntaxError, ValueError, RecursionError, MemoryError, UnicodeError, OverflowError)


class CallParseError(ValueError):
    """The text holds no acceptable function-call list; the message says why."""


# ------------------------------------------------------------------------------------------- text scanning


def _scan(text: str) -> tuple[int, list[tuple[int, int]]]:
    """(deepest bracket nesting, top-level ``[...]`` spans as (start, end) with end exclusive).

    Quotes are tracked inside brackets only (prose apostrophes outside a bracket do not open a string);
    a string inside brackets may use ``'``/``"``, triple quotes and backslash escapes. A mismatched
    closing bracket abandons the span it is in.
    """
    deepest = 0
    spans: list[tuple[int, int]] = []
    stack: list[str] = []
    start = -1
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if stack and char in "'\"":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\\":
                    i += 1
                elif len(quote) == 1 and text[i] == "\n":
                    break  # an unterminated one-line string: give up on it at the line end
                i += 1
            i += len(quote) if i < n and text.startswith(quote, i) else 0
            continue
        if char in _OPEN and (stack or char == "["):
            if not stack:
                start = i
            stack.append(_OPEN[char])
            deepest = max(deepest, len(stack))
        elif char in _CLOSE and stack:
            if char != stack[-1]:
                stack.clear()  # mismatched: this span is not a well-formed expression
            else:
                stack.pop()
                if not stack:
                    spans.append((start, i + 1))
        i += 1
    return deepest, spans


def _parse_expression(candidate: str) -> ast.expr:
    """The expression's syntax tree (nothing is run); SyntaxError and friends propagate."""
    tree = ast.parse(candidate, mode="eval")
    return tree.body


def _call_nodes(node: ast.expr) -> list[ast.Call] | None:
    """The calls when ``node`` is shaped as a call list (or one call), else None."""
    if isinstance(node, ast.Call):
        return [node]
    if isinstance(node, ast.List | ast.Tuple):
        calls = [e for e in node.elts if isinstance(e, ast.Call)]
        return calls if len(calls) == len(node.elts) else None
    return None


# ------------------------------------------------------------------------------------------- tree walking


def _func_name(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise CallParseError(f"function must be a name or a dotted name, not {_describe(node)}")
    parts.append(node.id)
    return ".".join(reversed(parts))


_KINDS = {"BinOp": "an operator expression", "BoolOp": "a boolean expression", "Compare": "a comparison",
          "Lambda": "a lambda", "ListComp": "a comprehension", "SetComp": "a comprehension",
          "DictComp": "a comprehension", "GeneratorExp": "a generator expression", "Attribute": "an attribute",
          "Subscript": "a subscript", "Set": "a set", "IfExp": "a conditional expression", "Await": "an await",
          "NamedExpr": "an assignment expression", "Yield": "a yield", "Slice": "a slice"}


def _describe(node: ast.AST) -> str:
    kind = type(node).__name__
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if isinstance(col, int) else ""
    return (f"{_KINDS[kind]} ({kind})" if kind in _KINDS else kind) + where


def _number(value: Any, node: ast.AST) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise CallParseError(f"number {value!r} is not finite ({_describe(node)})")
    return value


def _key(node: ast.expr | None, depth: int) -> str:
    if node is None:
        raise CallParseError("'**' unpacking inside a dict is not allowed")
    key = _value(node, depth)
    if isinstance(key, str):
        return key
    if isinstance(key, list | dict):
        raise CallParseError(f"dict key must be a literal scalar, not {_describe(node)}")
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return repr(key)  # a number, written as JSON writes object keys


def _value(node: ast.expr, depth: int) -> Any:
    """The literal value of an argument node, or CallParseError."""
    if depth > MAX_DEPTH:
        raise CallParseError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, str | bool):
            return value
        if isinstance(value, int | float):
            return _number(value, node)
        raise CallParseError(f"literal of type {type(value).__name__} is not allowed ({_describe(node)})")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = node.operand
        if (isinstance(operand, ast.Constant) and isinstance(operand.value, int | float)
                and not isinstance(operand.value, bool)):
            return _number(-operand.value, node)
        raise CallParseError(f"a minus sign may only precede a number literal ({_describe(node)})")
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(e, depth + 1) for e in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            key = _key(key_node, depth + 1)
            if key in out:
                raise CallParseError(f"dict key {key!r} repeated ({_describe(node)})")
            out[key] = _value(value_node, depth + 1)
        return out
    if isinstance(node, ast.Name):
        if node.id in _JSON_NAMES:
            return _JSON_NAMES[node.id]
        raise CallParseError(f"variable {node.id!r} is not a literal value ({_describe(node)})")
    if isinstance(node, ast.Call):
        raise CallParseError(f"a call inside an argument is not allowed ({_describe(node)})")
    if isinstance(node, ast.JoinedStr):
        raise CallParseError(f"f-strings are not allowed ({_describe(node)})")
    if isinstance(node, ast.Starred):
        raise CallParseError(f"'*' unpacking is not allowed ({_describe(node)})")
    raise CallParseError(f"{_describe(node)} is not a literal value")


def _tool_call(node: ast.Call, index: int, names: _Names | None = None) -> ToolCall:
    name = _func_name(node.func)
    if names is not None:
        name = names.original(name)
    if node.args:
        raise CallParseError(f"{name}: positional argument ({_describe(node.args[0])}); use name=value")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:  # noqa: F402 (the ast node, not the module)
        if keyword.arg is None:
            raise CallParseError(f"{name}: '**' unpacking is not allowed")
        arg = names.original(keyword.arg) if names is not None else keyword.arg
        if arg in arguments:
            raise CallParseError(f"{name}: argument {arg!r} given twice")
        try:
            arguments[arg] = _value(keyword.value, 2)
        except CallParseError as exc:
            raise CallParseError(f"{name}, argument {arg!r}: {exc}") from None
    return ToolCall(id=f"call_{index}", name=name, arguments=arguments)


# ------------------------------------------------------------------------------- names that are not identifiers

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# A name written up to its "(" with spaces, dashes, slashes... (used when no offered name matches).
_LOOSE_NAME = re.compile(r"[\w/][\w .\-/:@&+]*[\w.\-/:@&+]|[\w/]")
_KEYWORD_ARG = re.compile(r"(" + "|".join(sorted(keyword.kwlist, key=len, reverse=True)) + r")\s*=(?!=)")
_PLACEHOLDER = "_toolace_name_{}_"


class _Names:
    """Placeholders for names ast cannot read: tool names with spaces, dashes, slashes or parentheses,
    and keyword-named arguments. ``rewrite`` replaces them outside string literals; ``original`` maps back."""

    def __init__(self, tool_names: Collection[str] | None) -> None:
        self.offered = sorted({n for n in (tool_names or ()) if n}, key=len, reverse=True)
        self.originals: dict[str, str] = {}

    def _placeholder(self, name: str) -> str:
        for key, value in self.originals.items():
            if value == name:
                return key
        key = _PLACEHOLDER.format(len(self.originals))
        self.originals[key] = name
        return key

    def original(self, name: str) -> str:
        return self.originals.get(name, name)

    def _name_at(self, text: str, i: int) -> tuple[str, int] | None:
        """The function name starting at ``i`` (followed by ``(``) and where it ends, when it needs a
        placeholder."""
        for name in self.offered:
            if text.startswith(name, i):
                j = i + len(name)
                while j < len(text) and text[j] in " \t":
                    j += 1
                if j < len(text) and text[j] == "(":
                    return (None, 0) if _IDENTIFIER.fullmatch(name) else (name, i + len(name))  # type: ignore[return-value]
        loose = _LOOSE_NAME.match(text, i)
        if loose:
            j = loose.end()
            while j < len(text) and text[j] in " \t":
                j += 1
            name = loose.group(0)
            if j < len(text) and text[j] == "(" and not _IDENTIFIER.fullmatch(name):
                return name, loose.end()
        return None

    def rewrite(self, text: str) -> str:
        if "(" not in text:
            return text
        out: list[str] = []
        stack: list[str] = []
        i, n = 0, len(text)
        expect_name = True  # at the text start, after "[" or "," of the call list
        expect_arg = False  # after "(" or "," of a call's arguments
        while i < n:
            char = text[i]
            if char in " \t\r\n":
                out.append(char)
                i += 1
                continue
            if expect_name and len(stack) <= 1 and (not stack or stack[-1] == "]"):
                found = self._name_at(text, i)
                if found and found[0]:
                    out.append(self._placeholder(found[0]))
                    i = found[1]
                    expect_name = False
                    continue
            if expect_arg and stack and stack[-1] == ")":
                match = _KEYWORD_ARG.match(text, i)
                if match:
                    out.append(self._placeholder(match.group(1)) + text[match.end(1):match.end()])
                    i = match.end()
                    expect_arg = False
                    continue
            expect_name = expect_arg = False
            if stack and char in "'\"":
                quote = char * 3 if text.startswith(char * 3, i) else char
                j = i + len(quote)
                while j < n and not text.startswith(quote, j):
                    j += 2 if text[j] == "\\" else 1
                j = min(n, j + len(quote))
                out.append(text[i:j])
                i = j
                continue
            if char in _OPEN and (stack or char == "["):
                stack.append(_OPEN[char])
                expect_name = char == "[" and len(stack) == 1
                expect_arg = char == "("
            elif char in _CLOSE and stack and char == stack[-1]:
                stack.pop()
            elif char == ",":
                expect_name = len(stack) == 1 and stack[-1] == "]"
                expect_arg = bool(stack) and stack[-1] == ")"
            out.append(char)
            i += 1
        return "".join(out)


# ------------------------------------------------------------------------------------------------ the API


class _NotCalls:
    """Why a candidate is not a call list; ``syntax`` when it is not even a Python expression."""

    def __init__(self, reason: str, syntax: bool) -> None:
        self.reason = reason
        self.syntax = syntax


def _try(candidate: str, allow_empty: bool) -> list[ast.Call] | _NotCalls:
    """The candidate's call nodes, or why it is not a call list (too deep a nesting raises instead)."""
    deepest, _ = _scan("[" + candidate + "]")
    if deepest - 1 > MAX_DEPTH:
        raise CallParseError(f"brackets nested deeper than {MAX_DEPTH} levels")
    try:
        node = _parse_expression(candidate)
    except _PARSE_FAILURES as exc:
        detail = getattr(exc, "msg", None) or str(exc)[:200] or type(exc).__name__
        return _NotCalls(f"not a Python expression ({detail})", syntax=True)
    calls = _call_nodes(node)
    if calls is None:
        return _NotCalls(f"not a function call or call list ({_describe(node)})", syntax=False)
    if not calls and not allow_empty:
        return _NotCalls("an empty list", syntax=False)
    return calls


def _search_spans(text: str, offset: int, reasons: list[str]) -> list[ast.Call] | None:
    """The first top-level ``[...]`` span that is a call list; a span that is not a Python expression
    (prose in brackets) is searched inside, one that is an expression of another shape is not (its inner
    lists are its values)."""
    _, spans = _scan(text)
    for start, end in spans:
        result = _try(text[start:end], allow_empty=False)
        if not isinstance(result, _NotCalls):
            return result
        reasons.append(f"[...] at {offset + start + 1}: {result.reason}")
        if result.syntax:
            inner = _search_spans(text[start + 1:end - 1], offset + start + 1, reasons)
            if inner is not None:
                return inner
    return None


def parse_calls(text: str, tool_names: Collection[str] | None = None) -> list[ToolCall]:
    """The calls in a model answer, ids ``call_0``, ``call_1`` ...; ``[]`` alone gives an empty list.
    ``tool_names`` (the offered tools) lets names that are not identifiers be read, longest first.

    Raises :class:`CallParseError` (a ValueError) when no call list is found or one breaks the rules.
    """
    if not isinstance(text, str):
        raise CallParseError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise CallParseError(f"text is {len(text)} characters, over the {MAX_TEXT_CHARS} limit")
    stripped = text.strip()
    if not stripped:
        raise CallParseError("empty text: no function call")
    deepest, _ = _scan("[" + stripped + "]")
    if deepest - 1 > MAX_DEPTH:
        raise CallParseError(f"brackets nested deeper than {MAX_DEPTH} levels")
    names = _Names(tool_names)
    stripped = names.rewrite(stripped)
    reasons: list[str] = []
    nodes: list[ast.Call] | None = None
    result = _try(stripped, allow_empty=True)
    if isinstance(result, _NotCalls):
        reasons.append(f"whole text: {result.reason}")
        for match in _FENCE.finditer(stripped):
            fenced = match.group(1).strip()
            if fenced:
                fenced_result = _try(fenced, allow_empty=True)
                if not isinstance(fenced_result, _NotCalls):
                    nodes = fenced_result
                    break
                reasons.append(f"code fence: {fenced_result.reason}")
        if nodes is None:
            nodes = _search_spans(stripped, 0, reasons)
    else:
        nodes = result
    if nodes is None:
        raise CallParseError("no function call list found: " + "; ".join(reasons[:5]))
    return [_tool_call(node, i, names) for i, node in enumerate(nodes)]


def _json_call(entry: Any, index: int) -> ToolCall:
    if not isinstance(entry, dict):
        raise CallParseError(f"call {index} is a {type(entry).__name__}, not an object")
    if "name" in entry:
        name = entry["name"]
        arguments = entry.get("arguments", entry.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise CallParseError(f"arguments of {name!r} are not valid JSON: {exc.msg}") from None
    elif len(entry) == 1:  # BFCL's decoded form {"func": {"a": 1}}
        name, arguments = next(iter(entry.items()))
    else:
        raise CallParseError(f"call {index} has no 'name' and is not a one-key {{name: arguments}} object")
    if not isinstance(name, str) or not name.strip():
        raise CallParseError(f"call {index} has no function name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise CallParseError(f"arguments of {name!r} are a {type(arguments).__name__}, not an object")
    return ToolCall(id=f"call_{index}", name=name, arguments=arguments)


def parse_json_calls(value: Any) -> list[ToolCall]:
    """JSON-style calls: an object or a list of ``{"name", "arguments"|"parameters"}`` (arguments as an
    object or a JSON string), or BFCL's ``{"func": {"a": 1}}``. A string is decoded first."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            raise CallParseError(f"text is {len(value)} characters, over the {MAX_TEXT_CHARS} limit")
        deepest, _ = _scan("[" + value + "]")
        if deepest - 1 > MAX_DEPTH:
            raise CallParseError(f"brackets nested deeper than {MAX_DEPTH} levels")
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CallParseError(f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    entries = value if isinstance(value, list) else [value]
    return [_json_call(entry, i) for i, entry in enumerate(entries)]
