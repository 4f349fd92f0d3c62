"""BFCL's multi-turn categories, executed: the model talks turn by turn to BFCL's own classes in a sandbox, and each
entry is scored with BFCL's state-based and response-based checks, reimplemented here.

Mirrors bfcl-eval 2026.3.23 in prompt mode (``base_handler.inference_multi_turn_prompting``, the eval runner's
``_evaluate_single_multi_turn_entry`` and ``multi_turn_checker``); ``benchmarks/bfcl_multi_turn_agreement.py``
measures the agreement with BFCL's own checker on the same answers.

**Inference** (:func:`run_entries`). The first turn's messages get BFCL's prompt-mode system prompt with the
entry's function docs (each with BFCL's Python hint). For each turn, the model is asked; its answer is decoded as
BFCL's ``default_decode_execute_prompting`` does (:func:`decode_step`, with :mod:`ast` through
:func:`tasks.evaluation.bfcl_checker.decode_answer`, never ``eval``); an answer that does not decode or holds no
call ends the turn; otherwise each call runs in the entry's sandboxed environment
(:class:`tasks.environments.bfcl_classes.BfclSandbox`) and the results go back in one user message,
``repr([{"role": "tool", "name": <call>, "content": <result>}, ...])``, and the model is asked again. After more
than ``MAXIMUM_STEP_LIMIT`` (20) executed steps in a turn the conversation is forced to stop. A turn BFCL holds a
function back for (miss_func) has no user message: the held-out docs are shown then, in BFCL's words
(:data:`ADDITIONAL_FUNCTION_PROMPT`). miss_param entries need nothing special: their ground truth has an empty turn.

**Function-calling mode** (a source whose ``mode`` is ``fc``, :mod:`tasks.evaluation.bfcl_fc`; as BFCL's
``inference_multi_turn_FC`` and its local FC handlers hold the conversation). The turns go as they are, with no
system prompt; the entry's functions are offered as OpenAI tools (:func:`tasks.evaluation.bfcl_fc_shapes.fc_tools`), the
held-out ones added at the turn that brings them, which opens with BFCL's FC note
(:data:`ADDITIONAL_FUNCTION_PROMPT_FC`). An answer is read as single-turn FC answers are (an endpoint's structured
calls, or the text in the model's tool-call format); its calls go back as the assistant message's ``tool_calls``
(arguments as objects, ids of nine letters and digits) and each result as a ``tool`` message with the call's id
and name, which the model's chat template renders in its family's way. A text answer, or a call that does not
parse (the reason kept), ends the turn. The transcript records each step's calls as a prompt-mode call list, so
both modes are scored by the same checks.

**Scoring** (:func:`score_transcript`), on what the model said (turns of steps of answer texts), in fresh
environments: a transcript with fewer turns than the ground truth (forced to stop) is wrong
(``multi_turn:force_terminated``); the steps that decode to calls are executed turn by turn, with the ground
truth's calls in a second environment; where the ground truth of a turn is not empty, the model must have made a
call in that turn (``multi_turn:empty_turn_model_response``), every class's public attributes must equal the
ground truth's (``multi_turn:instance_state_mismatch``, naming the class and the attributes) and every result of
the turn's ground-truth calls must be among the model's results so far, as a multiset
(``multi_turn:execution_response_mismatch``). An environment that raises past its handler or runs past its limits
makes a failed entry with the reason (``multi_turn:environment_error``); the evaluation goes on. The same checks can
run as each turn ends (:class:`TurnChecks`, ``settle`` in :func:`run_entries`, the evaluation's default): an entry
is then asked no more turns once one fails, with the verdict the whole transcript would get.
"""

from __future__ import annotations

import ast
import copy
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from tasks.environments.bfcl_classes import BfclSandbox, Call
from tasks.environments.sandbox import SandboxError, SandboxLimits
from tasks.evaluation.bfcl_checker import BfclDecodeError, decode_answer, jsonable
from tasks.evaluation.bfcl_data import BfclDataError, MultiTurnEntry
from tasks.evaluation.bfcl_fc_shapes import (
    TEXT_ANSWER,
    FcAnswer,
    FcRequest,
    decode_fc_answer,
    fc_tools,
    openai_name,
)
from tasks.evaluation.bfcl_prompting import Answer, AnswerSource, CategoryScore, prompted_first_turn
from tasks.formats.tool_call_formats import ToolFormat

MAXIMUM_STEP_LIMIT = 20
ADDITIONAL_FUNCTION_PROMPT = "{functions}\nI have updated some more functions you can choose from. What about now?"
ADDITIONAL_FUNCTION_PROMPT_FC = "I have updated some more functions you can choose from. What about now?"
INFERENCE_ENV = "inference"
DEFAULT_LIMITS = SandboxLimits(memory_mb=1024, cpu_s=120, call_timeout_s=10.0, start_timeout_s=30.0)

Progress = Callable[[str, int, int], None]


# ------------------------------------------------------------------------------------------ decoding


class _NotExecutable(ValueError):
    """A value BFCL would render as a nested call or as broken Python: the call is not executed."""


def _executed_value(value: Any) -> Any:
    """The value BFCL's ``eval`` of its rendered call would pass (``parse_nested_value``): plain values as they are;
    a dict's keys become strings; an empty dict fails the decoding (IndexError there); a dict of dicts is rendered
    as a nested call, which we do not execute."""
    if not isinstance(value, dict):
        return value
    if all(isinstance(v, dict) for v in value.values()):
        if not value:
            raise BfclDecodeError("an empty dict argument (BFCL's decoder fails on it)")
        first = next(iter(value.values()))
        for inner in first.values():
            _executed_value(inner)  # an empty dict further in fails the decoding too
        raise _NotExecutable(f"a nested function call {next(iter(value))}(...) in an argument is not executed")
    out: dict[str, Any] = {}
    for key, inner in value.items():
        text = str(key)
        if "'" in text or "\\" in text:
            raise _NotExecutable(f"dict key {text!r} would not survive BFCL's rendering")
        out[text] = _executed_value(inner)
    return out


def _rendered(value: Any) -> str:
    """BFCL's ``parse_nested_value``: how a decoded value is written into the call string."""
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            if not value:
                raise BfclDecodeError("an empty dict argument (BFCL's decoder fails on it)")
            name = list(value.keys())[0]
            return f"{name}({', '.join(f'{k}={_rendered(v)}' for k, v in value[name].items())})"
        return "{" + ", ".join(f"'{k}': {_rendered(v)}" for k, v in value.items()) + "}"
    return repr(value)


@dataclass(frozen=True)
class DecodedStep:
    calls: list[Call]
    texts: list[str]  # each call as BFCL writes it (the ``name`` of its tool message)


def decode_step(text: str) -> DecodedStep:
    """The calls of one answer, as BFCL's prompt-mode ``decode_execute`` reads them; :class:`BfclDecodeError`
    when it does not decode."""
    return step_of_calls(decode_answer(text))


def step_of_calls(decoded_calls: list[dict[str, Any]]) -> DecodedStep:
    """Decoded calls (``[{name: {argument: value}}]``) as the calls to execute and their texts;
    :class:`BfclDecodeError` when one cannot be written as a call."""
    calls: list[Call] = []
    texts: list[str] = []
    for decoded in decoded_calls:
        for name, arguments in decoded.items():
            if not isinstance(arguments, dict):
                raise BfclDecodeError(f"the arguments of {name} are not an object")
            try:
                texts.append(f"{name}({', '.join(f'{k}={_rendered(v)}' for k, v in arguments.items())})")
            except (ValueError, TypeError, RecursionError) as exc:  # BFCL: any failure here is a failed decoding
                raise BfclDecodeError(f"{type(exc).__name__}: {exc}") from None
            try:
                calls.append(Call(str(name), (), {str(k): _executed_value(v) for k, v in arguments.items()}))
            except _NotExecutable as exc:
                calls.append(Call(str(name), (), {}, error=str(exc)))
    return DecodedStep(calls, texts)


def parse_ground_truth(text: str) -> Call:
    """One of BFCL's ground-truth call strings (``cd(folder='x')``, ``sort('a.txt')``) as a call, read with
    :mod:`ast` (literal arguments only; positional ones kept)."""
    try:
        node = ast.parse(text, mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError("not a call of a plain name")
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    except (SyntaxError, ValueError, TypeError, RecursionError) as exc:
        raise BfclDataError(f"ground-truth call {text[:200]!r} cannot be read: {exc}") from None
    return Call(node.func.id, args, kwargs)


def _missing(expected: list[str], actual: list[str]) -> list[str]:
    """BFCL's ``_is_subsequence_unordered``: the expected items not found in ``actual`` (as a multiset)."""
    pool = list(actual)
    missing: list[str] = []
    for item in expected:
        try:
            pool.remove(item)
        except ValueError:
            missing.append(item)
    return missing


# ------------------------------------------------------------------------------------------ scoring


@dataclass
class MultiTurnVerdict:
    valid: bool
    error_type: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def decoded_turn(texts: list[str]) -> list[list[Call]]:
    """The steps of one turn that decode to calls (BFCL ignores what does not decode), each as its calls."""
    steps = []
    for text in texts:
        try:
            step = decode_step(text)
        except BfclDecodeError:
            continue
        if step.calls:
            steps.append(step.calls)
    return steps


class TurnChecks:
    """BFCL's checks of one entry, turn after turn (``multi_turn_checker``): the model's calls and the ground
    truth's run in two fresh environments ``<prefix>_model`` / ``<prefix>_ground_truth`` of ``sandbox``, loaded
    at the first :meth:`check` and dropped by :meth:`close`. A turn's verdict depends only on that turn and the ones
    before it, so checking each turn as it ends gives the verdict the whole transcript would get, as soon as a
    turn fails. A :class:`SandboxError` propagates."""

    def __init__(self, entry: MultiTurnEntry, sandbox: BfclSandbox, prefix: str = "check") -> None:
        self.entry = entry
        self.sandbox = sandbox
        self.model_env, self.truth_env = f"{prefix}_model", f"{prefix}_ground_truth"
        self.checked = 0  # turns checked so far (a failed one ends the checking)
        self.results: list[str] = []  # every result of the model's calls so far
        self.loaded = False

    def check(self, texts: list[str]) -> MultiTurnVerdict | None:
        """Check the next turn (the answer texts of its steps): its failure, or None when it passes."""
        index = self.checked
        if not self.loaded:
            self.loaded = True
            for env in (self.model_env, self.truth_env):
                self.sandbox.load(env, self.entry.involved_classes, self.entry.initial_config,
                                  self.entry.long_context)
        steps = decoded_turn(texts)
        truth = self.entry.ground_truth[index]
        turn_results = [r for calls in steps for r in self.sandbox.execute(self.model_env, calls)]
        truth_results = self.sandbox.execute(self.truth_env, [parse_ground_truth(s) for s in truth])
        self.results.extend(turn_results)
        self.checked += 1
        if truth and not steps:
            return MultiTurnVerdict(False, "multi_turn:empty_turn_model_response",
                                    f"Model response list is empty for turn {index}", {"turn": index})
        if not truth:
            return None
        state = self.sandbox.compare(self.model_env, self.truth_env)
        if not state.valid:
            names = ", ".join(state.differences)
            return MultiTurnVerdict(False, "multi_turn:instance_state_mismatch",
                                    f"turn {index}: the state of {state.class_name} differs from the ground "
                                    f"truth's in {names}",
                                    {"turn": index, "class": state.class_name, "differences": state.differences})
        missing = _missing(truth_results, self.results)
        if missing:
            return MultiTurnVerdict(False, "multi_turn:execution_response_mismatch",
                                    f"turn {index}: {len(missing)} ground-truth execution result(s) missing from "
                                    f"the model's results so far",
                                    {"turn": index, "missing_items": missing})
        return None

    def close(self) -> None:
        if self.loaded and self.sandbox.worker.alive:
            for env in (self.model_env, self.truth_env):
                self.sandbox.drop(env)
        self.loaded = False


def score_transcript(entry: MultiTurnEntry, transcript: list[list[str]], sandbox: BfclSandbox,
                     prefix: str = "check") -> MultiTurnVerdict:
    """BFCL's verdict on what the model said: ``transcript`` holds, per turn, the answer text of each step.
    Runs in fresh environments ``<prefix>_model`` / ``<prefix>_ground_truth`` of ``sandbox`` (dropped after, see
    :class:`TurnChecks`); a :class:`SandboxError` propagates."""
    if len(transcript) != len(entry.ground_truth):
        return MultiTurnVerdict(False, "multi_turn:force_terminated",
                                f"Model was force-terminated during inference phase: {len(transcript)} turns of "
                                f"{len(entry.ground_truth)}")
    checks = TurnChecks(entry, sandbox, prefix)
    try:
        for texts in transcript:
            if (failure := checks.check(texts)) is not None:
                return failure
        return MultiTurnVerdict(True)
    finally:
        checks.close()


# ------------------------------------------------------------------------------------------ inference


def first_turn_messages(entry: MultiTurnEntry) -> list[dict[str, str]]:
    """The first turn with BFCL's prompt-mode system prompt (``system_prompt_pre_processing_chat_model``)."""
    return prompted_first_turn(entry.question, entry.functions)


def turn_messages(entry: MultiTurnEntry, turn: int) -> list[dict[str, str]]:
    """The messages that open turn ``turn`` > 0: the user's, or BFCL's note with the functions held out until
    then."""
    if turn in entry.missed_functions:
        return [{"role": "user", "content": ADDITIONAL_FUNCTION_PROMPT.format(functions=entry.missed_functions[turn])}]
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in entry.question[turn]]


def tool_results_message(texts: list[str], results: list[str]) -> dict[str, str]:
    """The user message carrying one step's execution results (BFCL's ``format_execution_results_prompting``)."""
    return {"role": "user", "content": repr([{"role": "tool", "name": name, "content": result}
                                             for name, result in zip(texts, results, strict=True)])}


@dataclass
class MultiTurnResult:
    entry: MultiTurnEntry
    verdict: MultiTurnVerdict
    transcript: list[list[str]]
    steps: list[list[dict[str, Any]]]  # per turn, per step: answer, calls, results
    unasked_turns: int = 0  # the turns after a failed one, not asked (``settle``, see :func:`run_entries`)

    def row(self, model: str) -> dict[str, Any]:
        return {"id": self.entry.id, "category": self.entry.category, "model": model, "valid": self.verdict.valid,
                "error_type": self.verdict.error_type, "error": self.verdict.error,
                "details": jsonable(self.verdict.details), "turns": self.steps, "unasked_turns": self.unasked_turns}


class _Conversation:
    """One entry's conversation in prompt mode: its messages, what the model said, and its sandbox. ``settle``:
    each turn is checked as it ends and the conversation stops at the first that fails (:class:`TurnChecks`)."""

    def __init__(self, entry: MultiTurnEntry, limits: SandboxLimits, settle: bool = False) -> None:
        self.entry = entry
        self.sandbox = BfclSandbox(limits, label=f"BFCL environment of {entry.id}")
        self.checks = TurnChecks(entry, self.sandbox, prefix="settle") if settle else None
        self.unasked = 0
        self.messages: list[dict[str, Any]] = self.opening()
        self.transcript: list[list[str]] = [[]]
        self.steps: list[list[dict[str, Any]]] = [[]]
        self.turn = 0
        self.count = 0
        self.done = False
        self.failure: MultiTurnVerdict | None = None

    def opening(self) -> list[dict[str, Any]]:
        return first_turn_messages(self.entry)

    def turn_opening(self, turn: int) -> list[dict[str, Any]]:
        return turn_messages(self.entry, turn)

    def start(self) -> None:
        self.sandbox.worker.start()
        self.sandbox.load(INFERENCE_ENV, self.entry.involved_classes, self.entry.initial_config,
                          self.entry.long_context)

    def chat(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.messages)

    def read(self, answer: Answer, step: dict[str, Any]) -> DecodedStep | None:
        """Put the answer in the conversation and the transcript; its calls, or None when it ends the turn (the
        reason it does not decode in ``step``)."""
        text = answer.text or ""
        self.messages.append({"role": "assistant", "content": text})
        self.transcript[-1].append(text)
        try:
            return decode_step(text)
        except BfclDecodeError as exc:
            step["decode_error"] = str(exc)
            return None

    def results_messages(self, decoded: DecodedStep, results: list[str]) -> list[dict[str, Any]]:
        return [tool_results_message(decoded.texts, results)]

    def feed(self, answer: Answer) -> None:
        if not answered(answer):
            self.fail("multi_turn:inference_error", f"the model gave no answer: {answer.error or 'no answer'}")
            return
        step: dict[str, Any] = {"answer": answer.text}
        self.steps[-1].append(step)
        decoded = self.read(answer, step)
        if decoded is None or not decoded.calls:
            self._next_turn()
            return
        results = self.sandbox.execute(INFERENCE_ENV, decoded.calls)
        step.update(calls=decoded.texts, results=results)
        self.messages.extend(self.results_messages(decoded, results))
        self.count += 1
        if self.count > MAXIMUM_STEP_LIMIT:
            step["note"] = f"forced to quit after {MAXIMUM_STEP_LIMIT} steps"
            self.done = True

    def _next_turn(self) -> None:
        if self.checks is not None:
            try:
                failure = self.checks.check(self.transcript[self.turn])
            except SandboxError as exc:
                self.fail("multi_turn:environment_error", f"while checking turn {self.turn}: {exc.reason}")
                return
            if failure is not None:
                self.unasked = len(self.entry.question) - self.turn - 1
                self.failure = failure
                self.done = True
                return
        self.turn += 1
        self.count = 0
        if self.turn >= len(self.entry.question):
            self.done = True
            return
        self.messages.extend(self.turn_opening(self.turn))
        self.transcript.append([])
        self.steps.append([])

    def fail(self, error_type: str, reason: str) -> None:
        self.failure = MultiTurnVerdict(False, error_type, reason)
        self.done = True

    def finish(self) -> MultiTurnResult:
        """Score (unless it already failed), close the sandbox, and give the result."""
        verdict = self.failure
        try:
            if verdict is None and self.checks is not None and self.checks.checked == len(self.entry.ground_truth):
                verdict = MultiTurnVerdict(True)  # every turn checked as it ended, and passed
            elif verdict is None:
                self.sandbox.drop(INFERENCE_ENV)
                if self.checks is not None:
                    self.checks.close()
                verdict = score_transcript(self.entry, self.transcript, self.sandbox)
        except SandboxError as exc:
            verdict = MultiTurnVerdict(False, "multi_turn:environment_error", f"while scoring: {exc.reason}")
        finally:
            self.sandbox.close()
        return MultiTurnResult(self.entry, verdict, self.transcript, self.steps, self.unasked)


def answered(answer: Answer) -> bool:
    """Whether the model answered (an FC answer may be structured calls with no text)."""
    return answer.text is not None or bool(getattr(answer, "calls", None))


class _FcConversation(_Conversation):
    """One entry's conversation in BFCL's function-calling mode: the tools through the model's template, its calls
    as the assistant's ``tool_calls``, each result in a ``tool`` message (see the module docstring)."""

    def __init__(self, entry: MultiTurnEntry, limits: SandboxLimits, tool_format: str | None,
                 settle: bool = False) -> None:
        self.tool_format = tool_format
        self.calls_made = 0
        super().__init__(entry, limits, settle)

    def opening(self) -> list[dict[str, Any]]:
        return fc_first_turn(self.entry)

    def turn_opening(self, turn: int) -> list[dict[str, Any]]:
        return fc_turn_messages(self.entry, turn)

    def request(self) -> FcRequest:
        return FcRequest(copy.deepcopy(self.messages), fc_offered_tools(self.entry, self.turn))

    def read(self, answer: Answer, step: dict[str, Any]) -> DecodedStep | None:
        reading = read_fc_step(answer, self.tool_format, self.entry, self.turn, self.calls_made)
        self.calls_made += len(reading.calls)
        self.messages.append(reading.message)
        self.transcript[-1].append(reading.transcript_text)
        if reading.calls:
            step["tool_calls"] = reading.message["tool_calls"]
        if reading.problem is not None:
            step["decode_error"] = reading.problem
        return reading.step

    def results_messages(self, decoded: DecodedStep, results: list[str]) -> list[dict[str, Any]]:
        return fc_results_messages(self.messages[-1], results)


# ------------------------------------------------------------------------------- function-calling mode


def fc_first_turn(entry: MultiTurnEntry) -> list[dict[str, Any]]:
    """The first turn as it is: in FC mode the model's template carries the tools (BFCL adds no system prompt)."""
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in entry.question[0]]


def fc_turn_messages(entry: MultiTurnEntry, turn: int) -> list[dict[str, Any]]:
    """The messages that open turn ``turn`` > 0 in FC mode: the user's, or BFCL's note that more functions are
    offered (the held-out ones are among the tools from then on, :func:`fc_offered_functions`)."""
    if turn in entry.missed_functions:
        return [{"role": "user", "content": ADDITIONAL_FUNCTION_PROMPT_FC}]
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in entry.question[turn]]


def fc_offered_functions(entry: MultiTurnEntry, turn: int) -> list[dict[str, Any]]:
    """The function docs offered at turn ``turn``: the entry's, then those held out until that turn or earlier."""
    return [*entry.functions, *(doc for added in sorted(entry.missed_functions) if added <= turn
                                for doc in entry.missed_functions[added])]


def fc_offered_tools(entry: MultiTurnEntry, turn: int) -> list[dict[str, Any]]:
    """:func:`fc_offered_functions` as OpenAI tools, as BFCL's ``_compile_tools`` makes them."""
    return fc_tools(fc_offered_functions(entry, turn))


def tool_call_id(number: int) -> str:
    """The id of a conversation's ``number``-th call: nine letters and digits (Mistral's templates require it)."""
    return f"call{number:05d}"


@dataclass(frozen=True)
class FcStepReading:
    """One FC answer read: the assistant message that goes back into the conversation (its ``tool_calls`` with
    the arguments as objects, as chat templates take them), the calls to execute (None: the turn ends), the
    step as the transcript scores it (a prompt-mode call list, empty for a text answer) and why an attempted
    call did not parse."""

    message: dict[str, Any]
    step: DecodedStep | None
    transcript_text: str
    problem: str | None

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.message.get("tool_calls") or [])


def read_fc_step(answer: Answer, tool_format: str | None, entry: MultiTurnEntry, turn: int,
                 calls_before: int) -> FcStepReading:
    """Read one FC answer of turn ``turn`` (:func:`tasks.evaluation.bfcl_fc_shapes.decode_fc_answer`: an endpoint's
    structured calls, or the text in the family's format); the call names go back from the offered (``_``)
    names to the entry's; ``calls_before`` numbers the call ids."""
    text = answer.text or ""
    decoded, problem = decode_fc_answer(answer, tool_format, fc_offered_tools(entry, turn))
    if decoded is None:
        return FcStepReading({"role": "assistant", "content": text}, None, "",
                             None if problem == TEXT_ANSWER else problem)
    names = {openai_name(str(doc.get("name", ""))): str(doc.get("name", ""))
             for doc in fc_offered_functions(entry, turn)}
    pairs = [(name, arguments) for call in decoded for name, arguments in call.items()]
    try:
        step = step_of_calls([{names.get(name, name): arguments} for name, arguments in pairs])
    except BfclDecodeError as exc:
        return FcStepReading({"role": "assistant", "content": text}, None, "", str(exc))
    tool_calls = [{"id": tool_call_id(calls_before + k), "type": "function",
                   "function": {"name": name, "arguments": arguments}} for k, (name, arguments) in enumerate(pairs)]
    return FcStepReading({"role": "assistant", "content": "", "tool_calls": tool_calls}, step,
                         "[" + ", ".join(step.texts) + "]", None)


def fc_results_messages(assistant: dict[str, Any], results: list[str]) -> list[dict[str, Any]]:
    """One ``tool`` message per call of ``assistant``, in order, with its id and name (BFCL's
    ``_add_execution_results_FC``)."""
    return [{"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"], "content": result}
            for call, result in zip(assistant["tool_calls"], results, strict=True)]


def grouped_by_prompt(entries: list[MultiTurnEntry]) -> list[tuple[int, MultiTurnEntry]]:
    """(index, entry) with the entries that share a first system prompt together, groups in the order they first
    appear, entries in their order within a group."""
    rank: dict[str, int] = {}
    keyed = []
    for index, entry in enumerate(entries):
        system = first_turn_messages(entry)[0]["content"]
        keyed.append((rank.setdefault(system, len(rank)), index, entry))
    return [(index, entry) for _, index, entry in sorted(keyed, key=lambda k: k[:2])]


def run_entries(entries: list[MultiTurnEntry], source: AnswerSource, limits: SandboxLimits | None = None,
                on_result: Callable[[MultiTurnResult], None] | None = None,
                mode: str | None = None, settle: bool = False) -> list[MultiTurnResult]:
    """Hold every entry's conversation with ``source`` and score it; results in entry order. Up to
    ``source.conversations`` conversations (when the source says: a server with one prompt cache per slot wants
    one conversation per slot, so that each step is evaluated from where the previous one stopped), else
    ``source.chunk_size``, are in flight, each with its own sandbox worker; each round asks the source for the
    next answer of every one of them in one batch. Entries that open with the same system prompt (the same classes'
    docs: 20 different ones among multi_turn_base's 200 entries) are started one after another, so that a server
    that caches prompt prefixes evaluates those thousands of tokens once per group, not once per entry.
    ``mode`` ``fc`` (None: the source's own ``mode``, else prompt) asks in BFCL's function-calling mode
    (``source.answer_fc``, see the module docstring). ``on_result`` sees each result as it is final (in the order
    they finish).

    ``settle``: each turn is checked as soon as it ends (:class:`TurnChecks`, in two more environments of the
    entry's sandbox) and an entry whose turn fails is not asked its later turns (``unasked_turns`` in its result):
    the verdict is the one the whole transcript gets, since a turn's checks see only that turn and those before
    it, and a weak model that fails its first turn costs one turn, not all of them. Only the reason can differ: an
    entry forced to stop later (``multi_turn:force_terminated``, ``multi_turn:inference_error``) that failed an
    earlier turn keeps that turn's reason. Off, every turn is asked and the transcript scored once at the end, as
    BFCL does."""
    limits = limits or DEFAULT_LIMITS
    fc = (mode or getattr(source, "mode", "prompt")) == "fc"

    def begin(entry: MultiTurnEntry) -> _Conversation:
        if fc:
            return _FcConversation(entry, limits, getattr(source, "tool_format", None), settle)
        return _Conversation(entry, limits, settle)

    def ask(conversations: list[_Conversation]) -> list[Answer]:
        if fc:
            return source.answer_fc([cast(_FcConversation, c).request() for c in conversations])
        return source.answer([c.chat() for c in conversations])

    window = max(1, getattr(source, "conversations", None) or source.chunk_size)
    pending = deque(grouped_by_prompt(entries))
    active: list[tuple[int, _Conversation]] = []
    results: dict[int, MultiTurnResult] = {}

    def finish(index: int, conversation: _Conversation) -> None:
        result = conversation.finish()
        results[index] = result
        if on_result is not None:
            on_result(result)

    try:
        while pending or active:
            while pending and len(active) < window:
                index, entry = pending.popleft()
                conversation = begin(entry)
                try:
                    conversation.start()
                except SandboxError as exc:
                    conversation.fail("multi_turn:environment_error", f"while loading: {exc.reason}")
                    finish(index, conversation)
                    continue
                active.append((index, conversation))
            if not active:
                continue
            answers = ask([conversation for _, conversation in active])
            if len(answers) != len(active):
                raise RuntimeError(f"the answer source gave {len(answers)} answers to {len(active)} chats")
            still: list[tuple[int, _Conversation]] = []
            for (index, conversation), answer in zip(active, answers, strict=True):
                try:
                    conversation.feed(answer)
                except SandboxError as exc:
                    conversation.fail("multi_turn:environment_error", exc.reason)
                if conversation.done:
                    finish(index, conversation)
                else:
                    still.append((index, conversation))
            active = still
    finally:
        for _, conversation in active:
            conversation.sandbox.close()
    return [results[i] for i in range(len(entries))]


def evaluate_category(category: str, entries: list[MultiTurnEntry], source: AnswerSource,
                      write_row: Callable[[dict[str, Any]], None] | None = None,
                      progress: Progress | None = None, limits: SandboxLimits | None = None,
                      mode: str | None = None, settle: bool = False) -> CategoryScore:
    """Run and score one multi-turn category (``mode``, ``settle``: see :func:`run_entries`); ``write_row`` gets
    each entry's JSON row as it is final."""
    done = 0
    if progress:
        progress(category, 0, len(entries))

    def on_result(result: MultiTurnResult) -> None:
        nonlocal done
        done += 1
        if write_row is not None:
            write_row(result.row(source.description))
        if progress:
            progress(category, done, len(entries))

    results = run_entries(entries, source, limits, on_result, mode, settle)
    outcomes = tuple(bool(r.verdict.valid) for r in results)
    return CategoryScore(category, len(results), sum(outcomes), outcomes)


def ground_truth_calls(entry: MultiTurnEntry, turn: int) -> list[tuple[str, dict[str, Any]]]:
    """The ground truth of one turn as (name, keyword arguments) pairs, the positional arguments named from the
    function docs."""
    docs = {doc["name"]: doc for doc in [*entry.functions, *(d for ds in entry.missed_functions.values() for d in ds)]}
    calls = []
    for text in entry.ground_truth[turn]:
        call = parse_ground_truth(text)
        names = list(docs.get(call.name, {}).get("parameters", {}).get("properties", {}))
        if len(call.args) > len(names):
            raise BfclDataError(f"{entry.id}: ground truth {text!r} has more positional arguments than "
                                f"{call.name} has parameters")
        calls.append((call.name, {**dict(zip(names, call.args, strict=False)), **call.kwargs}))
    return calls


def ground_truth_answer(entry: MultiTurnEntry, turn: int) -> str:
    """The ground truth of one turn as a prompt-mode answer a model could give (keyword arguments only, named
    from the function docs), for scripted models and benchmarks; ``"[]"`` for an empty turn."""
    return "[" + ", ".join(f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
                           for name, arguments in ground_truth_calls(entry, turn)) + "]"



TOOL_RESULTS_PREFIX = "[{'role': 'tool'"


class GroundTruthAnswers:
    """A scripted model (an :class:`AnswerSource`) that answers each turn with its ground truth in one step, then
    ``final`` once the results are back; a turn whose ground truth is empty gets ``refusal``. An entry is told
    by the system prompt and the user turns so far (entries 40 and 43 of each category open with the same turn
    and the same ground truth, and part later); ``answer_for`` may rewrite an answer (entry, turn, text) -> text,
    to script wrong models."""

    def __init__(self, entries: list[MultiTurnEntry], chunk_size: int = 8, final: str = "Done.",
                 refusal: str = "I cannot do that with the functions I have.",
                 answer_for: Callable[[MultiTurnEntry, int, str], str] | None = None) -> None:
        self.scripts: list[tuple[MultiTurnEntry, list[dict[str, str]], list[str]]] = []
        for entry in entries:
            first = first_turn_messages(entry)
            users = [m["content"] for m in first if m["role"] == "user"] + [
                m["content"] for turn in range(1, len(entry.question)) for m in turn_messages(entry, turn)]
            self.scripts.append((entry, first, users))
        self.description = "scripted ground-truth model"
        self.chunk_size = chunk_size
        self.final, self.refusal, self.answer_for = final, refusal, answer_for

    def _entry(self, chat: list[dict[str, str]], users: list[str]) -> MultiTurnEntry | None:
        for entry, first, expected in self.scripts:
            if chat[:len(first)] == first and expected[:len(users)] == users:
                return entry
        return None

    def answer(self, chats: list[list[dict[str, str]]]) -> list[Answer]:
        answers = []
        for chat in chats:
            users = [m["content"] for m in chat
                     if m["role"] == "user" and not m["content"].startswith(TOOL_RESULTS_PREFIX)]
            entry = self._entry(chat, users)
            if entry is None:
                answers.append(Answer(None, "scripted model: unknown conversation"))
                continue
            turn = len(users) - 1
            if chat[-1]["role"] == "user" and chat[-1]["content"].startswith(TOOL_RESULTS_PREFIX):
                text = self.final
            elif not entry.ground_truth[turn]:
                text = self.refusal
            else:
                text = ground_truth_answer(entry, turn)
            answers.append(Answer(self.answer_for(entry, turn, text) if self.answer_for else text))
        return answers


class GroundTruthFcAnswers:
    """:class:`GroundTruthAnswers` in function-calling mode (``answer_fc``): each turn's ground truth as structured
    calls under the offered names (as an endpoint returns them), or, through ``write``, as the text a model
    would write (then read in ``tool_format``); ``final`` once the results are back, ``refusal`` for a turn whose
    ground truth is empty. ``answer_for`` may rewrite the calls (entry, turn, calls) -> calls."""

    mode = "fc"

    def __init__(self, entries: list[MultiTurnEntry], chunk_size: int = 8, final: str = "Done.",
                 refusal: str = "I cannot do that with the functions I have.",
                 write: Callable[[list[tuple[str, dict[str, Any]]]], str] | None = None,
                 tool_format: ToolFormat | None = None,
                 answer_for: Callable[[MultiTurnEntry, int, list[tuple[str, dict[str, Any]]]],
                                      list[tuple[str, dict[str, Any]]]] | None = None) -> None:
        self.scripts: list[tuple[MultiTurnEntry, list[str]]] = []
        for entry in entries:
            users = [m["content"] for turn in range(len(entry.question))
                     for m in (fc_first_turn(entry) if turn == 0 else fc_turn_messages(entry, turn))
                     if m["role"] == "user"]
            self.scripts.append((entry, users))
        self.description = "scripted ground-truth model (FC)"
        self.chunk_size = chunk_size
        self.tool_format = tool_format
        self.final, self.refusal, self.write, self.answer_for = final, refusal, write, answer_for

    def answer_fc(self, requests: list[FcRequest]) -> list[Answer]:
        answers: list[Answer] = []
        for request in requests:
            users = [m["content"] for m in request.messages if m["role"] == "user"]
            entry = next((e for e, expected in self.scripts if expected[:len(users)] == users), None)
            if entry is None:
                answers.append(Answer(None, "scripted model: unknown conversation"))
                continue
            turn = len(users) - 1
            calls = [(openai_name(name), arguments) for name, arguments in ground_truth_calls(entry, turn)]
            if self.answer_for is not None:
                calls = self.answer_for(entry, turn, calls)
            if request.messages[-1]["role"] == "tool":
                answers.append(FcAnswer(self.final))
            elif not calls:
                answers.append(FcAnswer(self.refusal))
            elif self.write is not None:
                answers.append(FcAnswer(self.write(calls)))
            else:
                answers.append(FcAnswer("", calls=[{name: json.dumps(arguments)} for name, arguments in calls]))
        return answers
