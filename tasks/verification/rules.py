"""Rule-layer verification: every check of the paper's table, on format-neutral samples.

Every check has a stable versioned name (``required_params_v1``) and returns a human-readable reason when
it fails, None when it passes. :func:`score_sample` runs them all (the score: every failure); keeping or
dropping is decided apart (:func:`decide` for our own dialogs, ``passed`` in a verdict for anyone's data).

The checks read :class:`schemas.samples.Sample`, so the same rules judge our dialogs (turned into samples by
:func:`sample_from_dialog`) and datasets we did not make (``toolace verify``). Parameter schemas are read
through :mod:`tasks.formats.type_dialects`, so the BFCL/ToolACE dialect (``dict``, ``float``...) is understood.

Schemas are data too: ``tool_schema_v1`` fails a tool whose parameters or result schema has a hazard of
:func:`toolace.safe_patterns.schema_hazard` (a pattern with no linear-time matcher, a recursive, dangling or remote
``$ref``, subschemas nested deeper than ``MAX_SCHEMA_DEPTH``) or is not valid JSON Schema (a ``format`` that is not
a string ...; an unknown format name is an annotation, as JSON Schema says), and the argument and result checks of
such a tool are skipped. Patterns are matched with RE2, in time linear in the argument.

The paper's groups, and the checks for each:
- API definition clarity: ``tool_fields_v1``, ``tool_schema_v1``.
- Function-call executability: ``call_syntax_v1``, ``tool_name_exists_v1``, ``required_params_v1``,
  ``unknown_params_v1``, ``argument_values_v1`` (types, enums, ranges, formats, patterns, nested objects
  and arrays), ``argument_length_v1``.
- Dialog correctness: the read problems (``sample_json_v1``, ``sample_fields_v1``, ``tools_present_v1``,
  ``tools_json_v1``, ``format_detect_v1``), ``non_empty_turns_v1``, ``response_length_v1``,
  ``invalid_characters_v1``, ``single_language_v1``, ``response_complete_v1``.
- Sample consistency: ``call_response_names_v1``, ``output_format_v1``, ``role_order_v2``,
  ``tool_turn_follows_call_v1``, ``tool_result_schema_v1``, and for our own dialogs ``dialog_type_v2``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from schemas.records import Dialog, ToolCall
from schemas.samples import Problem, Sample, SampleTurn, ToolSpec, Verdict
from tasks.apis.schema_validity import schema_problem
from tasks.formats.call_parsing import CallParseError, parse_calls
from tasks.formats.type_dialects import parameters_schema, to_json_schema, unknown_types
from toolace.safe_patterns import safe_validator, schema_hazard

_INVALID_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
# The ToolACE/BFCL system prompt asks for calls as a bare Python call list and nothing else.
_CALL_LIST_FORMAT = re.compile(r"format of \[func1?\(|in the format of \[|\[func_name1\(", re.IGNORECASE)

# Kept for callers that name the old type: a failure is a Problem.
Failure = Problem


@dataclass(frozen=True)
class RuleLimits:
    max_assistant_chars: int = 2000
    max_argument_chars: int = 10_000
    max_turns: int = 64


@dataclass
class _Tool:
    spec: ToolSpec
    schema: dict[str, Any]
    schema_error: str | None
    key: str  # the parameters as canonical JSON: the cache key of everything derived from them


@lru_cache(maxsize=8192)
def _read_parameters(key: str) -> tuple[dict[str, Any], str | None]:
    """(the parameters as JSON Schema, what is wrong with them): once per distinct definition."""
    raw = json.loads(key)
    if hazard := schema_hazard(raw):  # before reading it: reading recurses too
        return {"type": "object", "properties": {}}, f"schema: {hazard}"
    try:
        schema = parameters_schema(raw) if raw else {"type": "object", "properties": {}}
    except RecursionError:
        return {"type": "object", "properties": {}}, "schema: nests too deeply to be read"
    return schema, _schema_error(raw, schema)


@lru_cache(maxsize=8192)
def _result_validator(key: str) -> Validator | str:
    """Validator of a tool's results (its result schema as canonical JSON), or why the schema is invalid:
    once per distinct result schema, for tool_schema_v1 and tool_result_schema_v1 alike. Patterns run on RE2."""
    raw = json.loads(key)
    if hazard := schema_hazard(raw):
        return f"result schema: {hazard}"
    try:
        schema = to_json_schema(raw)
    except RecursionError:
        return "result schema: nests too deeply to be read"
    if hazard := schema_hazard(schema):
        return f"result schema: {hazard}"
    problem = schema_problem(schema)
    return f"result schema is not a valid JSON Schema: {problem}" if problem else safe_validator(schema)


def _result_key(spec: ToolSpec) -> str | None:
    return json.dumps(spec.result_schema, sort_keys=True, ensure_ascii=False) if spec.result_schema else None


@lru_cache(maxsize=8192)
def _arguments_validator(key: str) -> Validator:
    """Validator of a tool's arguments: ``required`` is left to required_params_v1, unknown names to
    unknown_params_v1, so each failure is reported once, by its own check. Patterns run on RE2."""
    schema, _ = _read_parameters(key)
    return safe_validator({k: v for k, v in schema.items() if k not in ("required", "additionalProperties")})


@dataclass
class Context:
    """One sample with its tools read once (JSON Schema, validity) for every check."""

    sample: Sample
    limits: RuleLimits
    tools: dict[str, _Tool] = field(default_factory=dict)

    @classmethod
    def of(cls, sample: Sample, limits: RuleLimits) -> Context:
        ctx = cls(sample, limits)
        for spec in sample.tools:
            try:
                key = json.dumps(spec.parameters, sort_keys=True, ensure_ascii=False)
            except (TypeError, ValueError, RecursionError):
                key = "{}"
            schema, error = _read_parameters(key)
            ctx.tools.setdefault(spec.name, _Tool(spec, schema, error, key))
        return ctx

    @property
    def turns(self) -> list[SampleTurn]:
        return self.sample.turns

    def calls(self) -> list[ToolCall]:
        return [c for t in self.sample.turns if t.role == "assistant" for c in t.tool_calls]


@dataclass(frozen=True)
class RuleCheck:
    name: str
    run: Callable[[Context], str | None]


def _schema_error(raw: dict[str, Any], schema: Any) -> str | None:
    unknown = unknown_types(raw)
    if unknown:
        return f"unknown type name(s) {', '.join(repr(u) for u in unknown)}"
    if hazard := schema_hazard(schema):
        return f"schema: {hazard}"
    problem = schema_problem(schema)
    if problem:
        return f"not a valid JSON Schema: {problem}"
    if schema.get("type", "object") != "object":
        return f"parameters must be an object schema, not {schema.get('type')!r}"
    properties = schema.get("properties") or {}
    missing = [r for r in schema.get("required") or [] if r not in properties]
    if missing:
        return f"required parameter(s) {', '.join(missing)} not defined in properties"
    return None


# ------------------------------------------------------------------------------- API definition clarity


def check_tool_fields(ctx: Context) -> str | None:
    """Every tool has a name and a description; every parameter a type and a description."""
    for spec in ctx.sample.tools:
        if not spec.name.strip():
            return "a tool has no name"
        if not spec.description.strip():
            return f"tool {spec.name} has no description"
        properties = spec.parameters.get("properties") or {}
        if not isinstance(properties, dict):
            return f"tool {spec.name}: properties is not an object"
        for pname, pschema in properties.items():
            if not isinstance(pschema, dict):
                return f"tool {spec.name}: parameter {pname} is not a schema object"
            if not any(k in pschema for k in ("type", "anyOf", "oneOf", "allOf", "enum", "$ref", "const")):
                return f"tool {spec.name}: parameter {pname} has no type"
            if not str(pschema.get("description", "")).strip():
                return f"tool {spec.name}: parameter {pname} has no description"
    names = [s.name for s in ctx.sample.tools]
    twins = sorted({n for n in names if names.count(n) > 1})
    return f"tool name(s) listed twice: {', '.join(twins)}" if twins else None


def check_tool_schema(ctx: Context) -> str | None:
    for name, tool in ctx.tools.items():
        if tool.schema_error:
            return f"tool {name}: parameters {tool.schema_error}"
        key = _result_key(tool.spec)
        if key is not None and isinstance(problem := _result_validator(key), str):
            return f"tool {name}: {problem}"
    return None


# -------------------------------------------------------------------------------- call executability


def check_call_syntax(ctx: Context) -> str | None:
    for i, turn in enumerate(ctx.turns):
        if turn.call_error:
            return f"turn {i}: the call does not parse: {turn.call_error}"
    return None


def check_tool_names(ctx: Context) -> str | None:
    unknown = sorted({c.name for c in ctx.calls()} - set(ctx.tools))
    return f"called functions not in the tool list: {', '.join(unknown)}" if unknown else None


def check_required_params(ctx: Context) -> str | None:
    for call in ctx.calls():
        tool = ctx.tools.get(call.name)
        if tool is not None and not tool.schema_error:
            missing = [p for p in tool.schema.get("required") or [] if p not in call.arguments]
            if missing:
                return f"{call.name} misses required parameter(s) {', '.join(missing)}"
    return None


def check_unknown_params(ctx: Context) -> str | None:
    for call in ctx.calls():
        tool = ctx.tools.get(call.name)
        if tool is not None and not tool.schema_error and isinstance(tool.schema.get("properties"), dict):
            unknown = sorted(set(call.arguments) - set(tool.schema["properties"]))
            if unknown and tool.schema.get("additionalProperties", False) is False:
                return f"{call.name} got unknown parameter(s) {', '.join(unknown)}"
    return None


def check_argument_values(ctx: Context) -> str | None:
    """Types, enums, ranges, formats and patterns of every argument, nested values included."""
    for call in ctx.calls():
        tool = ctx.tools.get(call.name)
        if tool is None or tool.schema_error:
            continue
        errors = sorted(_arguments_validator(tool.key).iter_errors(call.arguments),
                        key=lambda e: [str(p) for p in e.path])
        error = errors[0] if errors else None
        if error is not None:
            where = "/".join(str(p) for p in error.path) or "arguments"
            return f"{call.name}.{where}: {_short(error.message)}"
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def check_argument_length(ctx: Context) -> str | None:
    limit = ctx.limits.max_argument_chars
    for call in ctx.calls():
        for name, value in call.arguments.items():
            longest = max((len(s) for s in _strings(value)), default=0)
            if longest > limit:
                return f"{call.name}.{name} holds a string of {longest} characters (limit {limit})"
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# ------------------------------------------------------------------------------------- sample consistency


def _ends_with_answer_required(ctx: Context) -> bool:
    """In our own dialogs, and any sample with tool responses, a call is answered by tool turns before the
    dialog goes on; a call-only sample (xLAM, BFCL: the calls are the target) has no tool turns."""
    return ctx.sample.dialog_type is not None or any(t.role == "tool" for t in ctx.turns)


def check_role_order(ctx: Context) -> str | None:
    """Starts with the user, no two user turns in a row, no unanswered user turn at the end, and the
    tool responses to a call come right after it (where responses are part of the sample)."""
    turns = ctx.turns
    if not turns:
        return "the sample has no turns"
    if turns[0].role != "user":
        return f"a dialog must start with a user turn, not {turns[0].role}"
    if turns[-1].role == "user":
        return "the dialog ends with a user turn nobody answered"
    strict = _ends_with_answer_required(ctx)
    pending: list[str] = []
    for i, turn in enumerate(turns):
        if turn.role == "tool":
            if turn.tool_call_id in pending:
                pending.remove(turn.tool_call_id or "")
            continue
        if pending:
            return f"turn {i}: call(s) {', '.join(pending)} have no tool response before this {turn.role} turn"
        if i and turn.role == turns[i - 1].role == "user":
            return f"turn {i}: two user turns in a row"
        if turn.role == "assistant" and turn.tool_calls and strict:
            pending = [c.id for c in turn.tool_calls]
    return None


def check_tool_turn_follows_call(ctx: Context) -> str | None:
    open_ids: set[str] = set()
    answered: set[str] = set()
    for i, turn in enumerate(ctx.turns):
        if turn.role == "assistant":
            open_ids = {c.id for c in turn.tool_calls}
        elif turn.role == "user":
            open_ids = set()
        elif turn.tool_call_id in answered:
            return f"turn {i}: a second tool response to call {turn.tool_call_id}"
        elif turn.tool_call_id not in open_ids:
            return f"turn {i}: tool turn without a matching call"
        else:
            answered.add(turn.tool_call_id or "")
    return None


def check_call_response_names(ctx: Context) -> str | None:
    names = {c.id: c.name for c in ctx.calls()}
    for turn in ctx.turns:
        if turn.role == "tool" and turn.name and names.get(turn.tool_call_id or "") not in (None, turn.name):
            return f"tool response named {turn.name} answers a call to {names[turn.tool_call_id or '']}"
    return None


def check_output_format(ctx: Context) -> str | None:
    """When the system prompt asks for a bare call list (ToolACE/BFCL), a call turn holds nothing else."""
    if not ctx.sample.system or not _CALL_LIST_FORMAT.search(ctx.sample.system):
        return None
    names = list(ctx.tools)
    for i, turn in enumerate(ctx.turns):
        text = (turn.call_text or "").strip()
        if turn.role != "assistant" or not turn.tool_calls or not text:
            continue
        if not (text.startswith("[") and text.endswith("]")):
            return f"turn {i}: the system prompt asks for a bare [func(...)] list, the answer holds other text"
        try:
            parse_calls(text, names)
        except CallParseError as exc:
            return f"turn {i}: the call list is not in the requested format: {exc}"
    return None


def check_tool_results(ctx: Context) -> str | None:
    for turn in ctx.turns:
        tool = ctx.tools.get(turn.name or "")
        key = _result_key(tool.spec) if turn.role == "tool" and tool is not None else None
        validator = _result_validator(key) if key is not None else None
        if validator is None or isinstance(validator, str):
            continue  # no result schema, or an invalid one (reported by tool_schema_v1)
        try:
            value = json.loads(turn.content or "")
        except json.JSONDecodeError:
            return f"result of {turn.name} is not JSON"
        error = best_match(validator.iter_errors(value))
        if error is not None:
            return f"result of {turn.name} disagrees with its result schema: {_short(error.message)}"
    return None


# ------------------------------------------------------------------------------------- dialog correctness


def check_non_empty(ctx: Context) -> str | None:
    for i, turn in enumerate(ctx.turns):
        if turn.role in ("user", "assistant") and not turn.tool_calls and not turn.call_error \
                and not (turn.content or "").strip():
            return f"turn {i} ({turn.role}) is empty"
    return None


def check_length(ctx: Context) -> str | None:
    limit = ctx.limits.max_assistant_chars
    for i, turn in enumerate(ctx.turns):
        if turn.role == "assistant" and len(turn.content or "") > limit:
            return f"turn {i}: assistant answer longer than {limit} characters"
    if len(ctx.turns) > ctx.limits.max_turns:
        return f"{len(ctx.turns)} turns, over the limit of {ctx.limits.max_turns}"
    return None


def check_characters(ctx: Context) -> str | None:
    for i, turn in enumerate(ctx.turns):
        if _INVALID_CHARS.search(turn.content or ""):
            return f"turn {i} holds control or replacement characters"
    return None


def check_complete(ctx: Context) -> str | None:
    """The dialog is finished: no tool result left without the assistant's answer to it. Our own dialogs
    must also end with an answer; in other datasets a final call is the training target (ToolACE's release
    and xLAM/BFCL samples end with one), so it is complete."""
    turns = ctx.turns
    if turns and turns[-1].role == "tool":
        return "the dialog ends with a tool response: the assistant's answer to it is missing"
    if turns and turns[-1].role == "assistant" and turns[-1].tool_calls and ctx.sample.dialog_type is not None:
        return "the dialog ends with a call: its response and the answer are missing"
    return None


# Writing systems by the first word of a letter's Unicode name. Japanese mixes kanji, hiragana and
# katakana, so they count as one system; letters of no listed system (e.g. the micro sign) are ignored.
_SCRIPT_GROUPS = {"LATIN": "latin", "CJK": "cjk", "HIRAGANA": "cjk", "KATAKANA": "cjk",
                  "KATAKANA-HIRAGANA": "cjk", "HANGUL": "hangul", "CYRILLIC": "cyrillic", "GREEK": "greek",
                  "ARABIC": "arabic", "HEBREW": "hebrew", "DEVANAGARI": "devanagari", "THAI": "thai"}
_SYLLABIC = {"cjk", "hangul"}  # one character carries about a word: weighed as 4 letters
MIXED_MIN_LETTERS = 8
MIXED_MIN_SHARE = 0.2


def script_shares(text: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            group = _SCRIPT_GROUPS.get(unicodedata.name(ch, "").split(" ")[0])
            if group:
                counts[group] = counts.get(group, 0) + (4 if group in _SYLLABIC else 1)
    total = sum(counts.values())
    return {g: n / total for g, n in counts.items() if n >= MIXED_MIN_LETTERS} if total else {}


def check_single_language(ctx: Context) -> str | None:
    """An answer mixing two writing systems in substance (a few foreign letters, such as a name, pass)."""
    for i, turn in enumerate(ctx.turns):
        if turn.role == "assistant":
            mixed = sorted(g for g, share in script_shares(turn.content or "").items() if share >= MIXED_MIN_SHARE)
            if len(mixed) > 1:
                return f"turn {i}: assistant answer mixes writing systems {mixed}"
    return None


def check_dialog_type(ctx: Context) -> str | None:
    """The turns have the shape the dialog's type promises (per part for a multi-turn dialog); only our
    own dialogs carry a type."""
    dialog = ctx.sample
    if dialog.dialog_type is None:
        return None
    call_turns = [t for t in dialog.turns if t.role == "assistant" and t.tool_calls]
    kind = dialog.dialog_type
    if kind == "multi_turn":
        parts = dialog.segments
        users = sum(t.role == "user" for t in dialog.turns)
        needed_users = len(parts) + parts.count("clarification")
        if len(parts) < 2:
            return "a multi-turn dialog chains fewer than two parts"
        if users < needed_users:
            return f"a multi-turn dialog of {len(parts)} parts has only {users} user turns"
        needed_calls = sum(1 for p in parts if p != "non_tool") + parts.count("dependent")
        if len(call_turns) < needed_calls:
            return f"a multi-turn dialog needs {needed_calls} calling turns, it has {len(call_turns)}"
        return None
    if kind == "non_tool":
        return "a non-tool dialog holds a function call" if call_turns else None
    if not call_turns:
        return f"a {kind} dialog holds no function call"
    if kind == "single" and len(call_turns[0].tool_calls) != 1:
        return f"a single-call dialog makes {len(call_turns[0].tool_calls)} calls in one turn"
    if kind == "parallel" and len(call_turns[0].tool_calls) < 2:
        return "a parallel dialog makes only one call"
    if kind == "dependent":
        if len(call_turns) < 2:
            return "a dependent dialog makes its calls in fewer than two steps"
        first_names = {c.name for c in call_turns[0].tool_calls}
        if {c.name for c in call_turns[1].tool_calls} <= first_names:
            return "the second step of a dependent dialog calls nothing new"
    if kind == "clarification":
        first_assistant = next(t for t in dialog.turns if t.role == "assistant")
        if first_assistant.tool_calls:
            return "a clarification dialog calls before asking for the missing value"
    return None


RULE_CHECKS: tuple[RuleCheck, ...] = (
    RuleCheck("tool_fields_v1", check_tool_fields),
    RuleCheck("tool_schema_v1", check_tool_schema),
    RuleCheck("call_syntax_v1", check_call_syntax),
    RuleCheck("tool_name_exists_v1", check_tool_names),
    RuleCheck("required_params_v1", check_required_params),
    RuleCheck("unknown_params_v1", check_unknown_params),
    RuleCheck("argument_values_v1", check_argument_values),
    RuleCheck("argument_length_v1", check_argument_length),
    RuleCheck("tool_result_schema_v1", check_tool_results),
    RuleCheck("role_order_v2", check_role_order),
    RuleCheck("tool_turn_follows_call_v1", check_tool_turn_follows_call),
    RuleCheck("call_response_names_v1", check_call_response_names),
    RuleCheck("output_format_v1", check_output_format),
    RuleCheck("non_empty_turns_v1", check_non_empty),
    RuleCheck("response_length_v1", check_length),
    RuleCheck("invalid_characters_v1", check_characters),
    RuleCheck("single_language_v1", check_single_language),
    RuleCheck("response_complete_v1", check_complete),
    RuleCheck("dialog_type_v2", check_dialog_type),
)
# Problems found while a sample was read that make every other check meaningless.
_UNREADABLE = {"sample_json_v1", "sample_fields_v1", "format_detect_v1"}


def score_sample(sample: Sample, limits: RuleLimits | None = None) -> list[Problem]:
    """Every rule failure of one sample (the score), read problems first; nothing is decided here."""
    failures = list(sample.problems)
    if any(p.check in _UNREADABLE for p in failures):
        return failures
    ctx = Context.of(sample, limits or RuleLimits())
    for check in RULE_CHECKS:
        try:
            reason = check.run(ctx)
        except Exception as exc:  # a hostile sample must not stop the run (tests/test_fuzz.py runs checks bare)
            reason = f"the check could not finish on this sample ({type(exc).__name__})"
        if reason:
            failures.append(Problem(check=check.name, reason=reason))
    return failures


def verdict(sample: Sample, failures: list[Problem]) -> Verdict:
    return Verdict(index=sample.index, id=sample.id, passed=not failures, failures=failures)


def sample_from_dialog(dialog: Dialog, index: int = 0) -> Sample:
    """One of our dialogs as a sample (structured calls, result schemas known, type and segments set)."""
    return Sample(index=index, id=dialog.dialog_id, format="openai",
                  tools=[ToolSpec(name=t.name, description=t.description, parameters=t.parameters,
                                  result_schema=t.result_schema) for t in dialog.tools],
                  turns=[SampleTurn(**t.model_dump()) for t in dialog.turns],
                  dialog_type=dialog.dialog_type, segments=list(dialog.segments))


def score_dialog(dialog: Dialog, max_assistant_chars: int) -> list[Problem]:
    """Every rule failure of one of our dialogs."""
    return score_sample(sample_from_dialog(dialog), RuleLimits(max_assistant_chars=max_assistant_chars))


def decide(dialog: Dialog, failures: list[Problem]) -> Dialog:
    """Keep a dialog only when it passed every check; the first failure names the rejecting check."""
    if dialog.accepted and failures:
        dialog.reject(failures[0].check, failures[0].reason)
    return dialog
