"""Rule-layer verification of dialogs. Each check has a stable versioned name and returns a reason
when it fails; scoring (all failures of a dialog) is kept apart from the keep/drop decision.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from jsonschema import Draft202012Validator, FormatChecker

from schemas.records import Dialog

_INVALID_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


@dataclass(frozen=True)
class Failure:
    check: str
    reason: str


@dataclass(frozen=True)
class RuleCheck:
    name: str
    run: Callable[[Dialog, int], str | None]


def _calls(dialog: Dialog) -> list:
    return [c for t in dialog.turns if t.role == "assistant" for c in t.tool_calls]


def check_tool_names(dialog: Dialog, _: int) -> str | None:
    offered = {t.name for t in dialog.tools}
    unknown = sorted({c.name for c in _calls(dialog)} - offered)
    return f"called functions not in the tool list: {', '.join(unknown)}" if unknown else None


def check_required_params(dialog: Dialog, _: int) -> str | None:
    tools = {t.name: t for t in dialog.tools}
    for call in _calls(dialog):
        if call.name in tools:
            missing = [p for p in tools[call.name].parameters.get("required", []) if p not in call.arguments]
            if missing:
                return f"{call.name} misses required parameter(s) {', '.join(missing)}"
    return None


def check_unknown_params(dialog: Dialog, _: int) -> str | None:
    tools = {t.name: t for t in dialog.tools}
    for call in _calls(dialog):
        if call.name in tools:
            unknown = sorted(set(call.arguments) - set(tools[call.name].parameters.get("properties", {})))
            if unknown:
                return f"{call.name} got unknown parameter(s) {', '.join(unknown)}"
    return None


def check_argument_values(dialog: Dialog, _: int) -> str | None:
    """Types, enums, ranges, formats and patterns of every argument, nested values included."""
    tools = {t.name: t for t in dialog.tools}
    for call in _calls(dialog):
        if call.name not in tools:
            continue
        schema = dict(tools[call.name].parameters)
        schema.pop("required", None)  # reported by required_params_v1
        errors = sorted(Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(call.arguments),
                        key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "arguments"
            return f"{call.name}.{where}: {errors[0].message}"
    return None


def check_tool_results(dialog: Dialog, _: int) -> str | None:
    tools = {t.name: t for t in dialog.tools}
    for turn in dialog.turns:
        if turn.role != "tool" or turn.name not in tools:
            continue
        try:
            value = json.loads(turn.content or "")
        except json.JSONDecodeError:
            return f"result of {turn.name} is not JSON"
        errors = list(Draft202012Validator(tools[turn.name].result_schema).iter_errors(value))
        if errors:
            return f"result of {turn.name} disagrees with its result schema: {errors[0].message}"
    return None


def check_role_order(dialog: Dialog, _: int) -> str | None:
    turns = dialog.turns
    if not turns or turns[0].role != "user":
        return "a dialog must start with a user turn"
    if turns[-1].role != "assistant" or turns[-1].tool_calls:
        return "a dialog must end with an assistant answer"
    pending: set[str] = set()
    for i, turn in enumerate(turns):
        if turn.role == "tool":
            if turn.tool_call_id not in pending:
                return f"turn {i}: tool turn without a matching call"
            pending.discard(turn.tool_call_id)
        else:
            if pending:
                return f"turn {i}: call(s) {', '.join(sorted(pending))} have no tool response"
            if turn.role == "assistant":
                pending = {c.id for c in turn.tool_calls}
            if i and turn.role == turns[i - 1].role == "user":
                return f"turn {i}: two user turns in a row"
    return None


def check_call_response_names(dialog: Dialog, _: int) -> str | None:
    names = {c.id: c.name for c in _calls(dialog)}
    for turn in dialog.turns:
        if turn.role == "tool" and names.get(turn.tool_call_id or "") not in (None, turn.name):
            return f"tool response named {turn.name} answers a call to {names[turn.tool_call_id or '']}"
    return None


def check_non_empty(dialog: Dialog, _: int) -> str | None:
    for i, turn in enumerate(dialog.turns):
        if turn.role in ("user", "assistant") and not turn.tool_calls and not (turn.content or "").strip():
            return f"turn {i} ({turn.role}) is empty"
    return None


def check_length(dialog: Dialog, max_chars: int) -> str | None:
    for i, turn in enumerate(dialog.turns):
        if turn.role == "assistant" and len(turn.content or "") > max_chars:
            return f"turn {i}: assistant answer longer than {max_chars} characters"
    return None


def check_characters(dialog: Dialog, _: int) -> str | None:
    for i, turn in enumerate(dialog.turns):
        if _INVALID_CHARS.search(turn.content or ""):
            return f"turn {i} holds control or replacement characters"
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


def check_single_language(dialog: Dialog, _: int) -> str | None:
    """An answer mixing two writing systems in substance (a few foreign letters, such as a name, pass)."""
    for i, turn in enumerate(dialog.turns):
        if turn.role == "assistant":
            mixed = sorted(g for g, share in script_shares(turn.content or "").items() if share >= MIXED_MIN_SHARE)
            if len(mixed) > 1:
                return f"turn {i}: assistant answer mixes writing systems {mixed}"
    return None


def check_dialog_type(dialog: Dialog, _: int) -> str | None:
    """The turns have the shape the dialog's type promises (per part for a multi-turn dialog)."""
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
    RuleCheck("tool_name_exists_v1", check_tool_names),
    RuleCheck("required_params_v1", check_required_params),
    RuleCheck("unknown_params_v1", check_unknown_params),
    RuleCheck("argument_values_v1", check_argument_values),
    RuleCheck("tool_result_schema_v1", check_tool_results),
    RuleCheck("role_order_v1", check_role_order),
    RuleCheck("call_response_names_v1", check_call_response_names),
    RuleCheck("non_empty_turns_v1", check_non_empty),
    RuleCheck("response_length_v1", check_length),
    RuleCheck("invalid_characters_v1", check_characters),
    RuleCheck("single_language_v1", check_single_language),
    RuleCheck("dialog_type_v2", check_dialog_type),
)


def score_dialog(dialog: Dialog, max_assistant_chars: int) -> list[Failure]:
    """Every rule failure of one dialog (the score); nothing is decided here."""
    failures = []
    for check in RULE_CHECKS:
        reason = check.run(dialog, max_assistant_chars)
        if reason:
            failures.append(Failure(check.name, reason))
    return failures


def decide(dialog: Dialog, failures: list[Failure]) -> Dialog:
    """Keep a dialog only when it passed every rule; the first failure names the rejecting check."""
    if dialog.accepted and failures:
        dialog.reject(failures[0].check, failures[0].reason)
    return dialog
