"""Schema patterns matched in linear time, and the schema hazards that must be a verdict, never a hang or a crash.

**The pattern rule.** Every ``pattern`` and ``patternProperties`` name of a schema is matched with RE2 (the
``google-re2`` package), whose time is linear in the text: ``"^(a+)+$"`` against ``"aaa...a!"`` takes microseconds,
not minutes. RE2 lacks the few constructs that need backtracking. A pattern RE2 cannot compile is never matched
with Python's ``re``; it is a problem of its schema, with one of two reasons:

- ``pattern '[' is not a valid regular expression: unterminated character set at position 0`` when Python's ``re``
  rejects it too (the reason is Python's, it names the position);
- ``pattern '(a)\\1' uses a backreference, which has no linear-time matcher`` for a backreference, a lookahead or
  lookbehind, an atomic group, a possessive quantifier, a conditional group, a repetition count over 1000 or a
  pattern too large for RE2's memory bound.

ECMA-262 (the dialect JSON Schema names) ``\\uXXXX`` escapes are rewritten to RE2's ``\\x{XXXX}``, and ``\\d``/``\\w``
are ASCII-only in RE2 as in ECMA-262. A lone surrogate in the text matched is read as U+FFFD (RE2 reads UTF-8).

**The schema rule.** :func:`schema_hazard` walks a schema's subschemas, following its local ``$ref``s, and names the
first hazard: a bad pattern (above), a ``$ref`` that leads back to a schema it is part of (a recursive ``$ref``:
validating could loop), a ``$ref`` that points to nothing or outside the schema (a validator would fail or try to
fetch it), an ``$id`` below the root (a schema resource whose references resolve elsewhere), or subschemas
nested deeper than :data:`MAX_SCHEMA_DEPTH`. ``$dynamicRef`` and ``$recursiveRef`` are read as ``$ref``.

:data:`SafeValidator` is Draft 2020-12 with RE2 for ``pattern`` and ``patternProperties``, and :data:`FORMAT_CHECKER`
judges the ``regex`` format of data (compiled, never matched): nothing in a validation runs Python's ``re`` on a
schema's pattern. Check a schema with :func:`schema_hazard` before validating with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

# Subschemas nested deeper than this (counted in subschemas, a $ref being one more level) make a schema unusable:
# no tool a model is trained on needs more, and validators recurse once or more per level.
MAX_SCHEMA_DEPTH = 64
# Distinct schemas visited at most by one walk (a $ref shared by many parts is visited once).
MAX_SCHEMA_NODES = 100_000

# Keywords whose value is a subschema, a map of subschemas, or a list of subschemas (Draft 2020-12 and older).
_SUBSCHEMA = frozenset({"items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
                        "unevaluatedItems", "unevaluatedProperties", "contentSchema", "additionalItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs", "definitions",
                             "dependencies"})
_SUBSCHEMA_LISTS = frozenset({"prefixItems", "allOf", "anyOf", "oneOf", "items"})
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")

# What RE2's parse error says -> the construct it lacks (Python's re accepts all of these).
_CONSTRUCTS: tuple[tuple[str, str], ...] = (
    ("invalid perl operator: (?=", "a lookahead"),
    ("invalid perl operator: (?!", "a lookahead"),
    ("invalid perl operator: (?<=", "a lookbehind"),
    ("invalid perl operator: (?<!", "a lookbehind"),
    ("invalid perl operator: (?P", "a named backreference"),
    ("invalid perl operator: (?>", "an atomic group"),
    ("invalid perl operator: (?(", "a conditional group"),
    ("bad repetition operator: ++", "a possessive quantifier"),
    ("bad repetition operator: *+", "a possessive quantifier"),
    ("bad repetition operator: ?+", "a possessive quantifier"),
    ("bad repetition operator: }+", "a possessive quantifier"),
    ("invalid repetition size", "a repetition count over 1000"),
    ("pattern too large", "more states than the linear-time matcher's memory bound"),
)
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]")
_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9A-Fa-f]{4})")
_SURROGATES = re.compile("[\ud800-\udfff]")


class PatternError(ValueError):
    """A pattern with no linear-time matcher; the message is the reason, for a verdict."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every parse error on stderr
    return options


def _re2_syntax(pattern: str) -> str:
    """ECMA-262 ``\\uXXXX`` escapes in RE2's syntax (``\\x{XXXX}``); an escaped backslash stays as it is."""
    return _UNICODE_ESCAPE.sub(lambda m: f"{m.group(1)}\\x{{{m.group(2)}}}", pattern)


def _construct(re2_message: str) -> str:
    for marker, construct in _CONSTRUCTS:
        if marker in re2_message:
            return construct
    if _BACKREFERENCE.search(re2_message):
        return "a backreference"
    return f"syntax RE2 lacks ({re2_message})"


def _python_problem(pattern: str) -> str | None:
    """Why Python's ``re`` rejects the pattern, or None when it accepts it (it is compiled, never matched)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return exc.msg + (f" at position {exc.pos}" if exc.pos is not None else "")
    except (RecursionError, OverflowError, ValueError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=1024)  # a program takes at most RE2's max_mem (8 MiB)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program of a schema pattern; raises :class:`PatternError` with the reason when there is none."""
    if _SURROGATES.search(pattern):
        raise PatternError(f"pattern {_shown(pattern)} is not a valid regular expression: it holds a lone surrogate")
    try:
        return re2.compile(_re2_syntax(pattern), _options())
    except re2.error as exc:
        re2_message = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) \
            else str(exc)
    python = _python_problem(pattern)
    if python is not None:
        raise PatternError(f"pattern {_shown(pattern)} is not a valid regular expression: {python}")
    raise PatternError(f"pattern {_shown(pattern)} uses {_construct(re2_message)}, which has no linear-time matcher")


def _shown(pattern: str, limit: int = 80) -> str:
    return repr(pattern) if len(pattern) <= limit else repr(pattern[:limit]) + f"... ({len(pattern)} chars)"


def pattern_problem(pattern: str) -> str | None:
    """None when the pattern has a linear-time matcher, else why not (see the module's rule)."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """Whether the pattern matches somewhere in the text (JSON Schema's unanchored ``pattern``), in linear time.
    Raises :class:`PatternError` for a pattern without a linear-time matcher."""
    program = compile_pattern(pattern)
    return program.search(_SURROGATES.sub("\ufffd", text)) is not None


def is_regex(text: object) -> bool:
    """The ``regex`` format: a string RE2 or Python's ``re`` compiles (compiled only, never matched)."""
    if not isinstance(text, str):
        return True
    return pattern_problem(text) is None or _python_problem(text) is None


# ---------------------------------------------------------------------------------------- the validator


def _pattern(validator: Validator, pattern: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    try:
        matched = search(pattern, instance)
    except PatternError as exc:
        yield ValidationError(str(exc))
        return
    if not matched:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Validator, patterns: Any, instance: Any,
                        schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object") or not isinstance(patterns, dict):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            try:
                matched = search(pattern, name)
            except PatternError as exc:
                yield ValidationError(f"patternProperties name: {exc}")
                return
            if matched:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _has_matcher(pattern: object) -> bool:
    """The ``regex`` format of a schema's own patterns (meta-validation): a pattern with a linear-time matcher.
    Raises :class:`PatternError`, whose message a validation error keeps as its ``cause``."""
    if isinstance(pattern, str):
        compile_pattern(pattern)
    return True


def _format_checker(regex: Any) -> FormatChecker:
    checker = FormatChecker()
    checker.checks("regex", raises=PatternError)(regex)
    return checker


# Formats of data (arguments, results): a ``regex`` value is any regular expression, compiled, never matched.
FORMAT_CHECKER = _format_checker(is_regex)
# Formats of schemas (the meta-schema's ``pattern`` and ``patternProperties`` names): the pattern rule.
META_FORMAT_CHECKER = _format_checker(_has_matcher)
SafeValidator = validators.extend(Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties})


def safe_validator(schema: dict[str, Any]) -> Validator:
    """A Draft 2020-12 validator of the schema whose patterns run on RE2 and whose formats are checked."""
    return SafeValidator(schema, format_checker=FORMAT_CHECKER)


# ------------------------------------------------------------------------------------------ the hazards


class _Hazard(Exception):
    pass


def _brief(where: str, limit: int = 60) -> str:
    return (where if len(where) <= limit else where[:limit] + "...") or "the root"


class _Walk:
    """One walk over a schema's subschemas and local ``$ref``s: the height of each distinct node is computed once
    (linear in the schema, however many times its parts are referenced), a node met again while it is being walked
    is a recursive ``$ref``."""

    def __init__(self, root: dict[str, Any], max_depth: int) -> None:
        self.root = root
        self.max_depth = max_depth
        self.heights: dict[int, tuple[Any, int]] = {}  # the node is kept so that its id is not reused
        self.open: set[int] = set()

    def height(self, node: Any, depth: int, where: str) -> int:
        if not isinstance(node, dict):
            return 0
        if depth > self.max_depth:
            raise _Hazard(f"subschemas nest deeper than {self.max_depth} levels (at {_brief(where)})")
        known = self.heights.get(id(node))
        if known is not None and known[0] is node:
            if depth + known[1] - 1 > self.max_depth:
                raise _Hazard(f"subschemas nest deeper than {self.max_depth} levels (at {_brief(where)})")
            return known[1]
        if id(node) in self.open:
            raise _Hazard(f"a recursive {where.rsplit('/', 1)[-1]}: {where} leads back to a schema it is part of")
        if len(self.heights) >= MAX_SCHEMA_NODES:
            raise _Hazard(f"more than {MAX_SCHEMA_NODES} subschemas")
        self.open.add(id(node))
        tallest = 0
        for child, child_where in self._children(node, where):
            tallest = max(tallest, self.height(child, depth + 1, child_where))
        self.open.discard(id(node))
        self.heights[id(node)] = (node, tallest + 1)
        return tallest + 1

    def _children(self, node: dict[str, Any], where: str) -> Iterator[tuple[Any, str]]:
        prefix = f"{where}/" if where else ""
        for key, value in node.items():
            at = f"{prefix}{key}"
            if key == "pattern" and isinstance(value, str) and (problem := pattern_problem(value)):
                raise _Hazard(f"{problem} (at {at})")
            if key == "patternProperties" and isinstance(value, dict):
                for name in value:
                    if isinstance(name, str) and (problem := pattern_problem(name)):
                        raise _Hazard(f"patternProperties name: {problem} (at {at})")
            if key == "$id" and node is not self.root:
                raise _Hazard(f"$id {_shown(str(value))} makes a schema resource inside the schema, whose "
                              f"references are not read (at {at})")
            if key in _REFERENCES:
                if not isinstance(value, str):
                    continue  # not a reference: the meta-schema says what is wrong with it
                yield self._target(value, key, at), at
            elif key in _SUBSCHEMA and isinstance(value, dict):
                yield value, at
            elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
                yield from ((sub, f"{at}/{name}") for name, sub in value.items())
            elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
                yield from ((sub, f"{at}/{i}") for i, sub in enumerate(value))

    def _target(self, ref: str, key: str, where: str) -> Any:
        """The local target of a ``$ref`` (``#`` or a ``#/...`` JSON pointer); any other reference is a hazard: a
        validator would try to fetch it."""
        if ref != "#" and not ref.startswith("#/"):
            raise _Hazard(f"{key} {ref!r} is not a local reference to a #/... JSON pointer (at {where})")
        node: Any = self.root
        for raw in ref[2:].split("/") if ref != "#" else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise _Hazard(f"{key} {ref!r} points to nothing in the schema (at {where})")
        return node


def schema_hazard(schema: Any, max_depth: int = MAX_SCHEMA_DEPTH) -> str | None:
    """The first hazard of a schema (a pattern without a linear-time matcher, a recursive or dangling local
    ``$ref``, subschemas nested deeper than ``max_depth``), as a reason; None for a safe schema."""
    if not isinstance(schema, dict):
        return None
    try:
        _Walk(schema, max_depth).height(schema, 1, "")
    except _Hazard as exc:
        return str(exc)
    except RecursionError:
        return f"subschemas nest deeper than {max_depth} levels"
    return None
