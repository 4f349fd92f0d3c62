"""Model-layer verification: LLM judges, each one structured sub-question about a :class:`Sample`.

ToolACE's dual-layer verification splits the model layer into sub-questions, each asked of an LLM
"expert". A judge here is "build the prompt, parse the output": a stable versioned check name, a test
for whether the sample has anything to judge, a prompt builder and a pydantic answer model (the gateway
turns it into the JSON-schema ``response_format``). The four judges:

* ``llm_hallucination_v1``: every argument value of every call is grounded in the user's words, the
  system prompt or an earlier tool result (the answer lists the values that are not); needs a call.
* ``llm_consistency_v1``: the calls and the final answer fulfil what the user asked; needs a user turn
  and an assistant turn.
* ``llm_tool_response_v1``: each tool response agrees with its API definition; needs a tool turn.
* ``llm_repetition_v1``: the assistant's text has no repetition loops or meaningless tokens; needs
  assistant text (call text parsed into calls does not count: parallel calls repeat by design).

A judge with nothing to judge is skipped: no request, no failure.

Votes: with ``votes=k`` each judge is asked k times, each with its own seed (``sample=0..k-1`` on the
gateway) at temperature 0.7 (0 for a single vote). A judge passes when a *strict* majority of the votes
that gave a valid answer pass; a tie fails. Votes that gave no valid answer do not count; a judge none of
whose votes gave a valid answer cannot verify the sample, which fails it too: the problem is named after
the gateway's check (``structured_output_v1`` or ``llm_request_v1``) and its reason names the judge.

Prompts render the sample compactly (tools as name/description/parameters JSON, turns with role, text,
calls as ``name(args JSON)`` and tool results) and cut long pieces ("[... N chars cut]"), so a huge
argument or tool result never goes to the LLM whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from schemas.judge_outputs import (
    ConsistencyAnswer,
    HallucinationAnswer,
    JudgeAnswer,
    RepetitionAnswer,
    ToolResponseAnswer,
)
from schemas.records import ToolCall
from schemas.samples import Problem, Sample, SampleTurn, ToolSpec
from toolace.llm.gateway import STRUCTURED_OUTPUT_CHECK, LLMGateway, Structured

STAGE = "verification"
HALLUCINATION_CHECK = "llm_hallucination_v1"
CONSISTENCY_CHECK = "llm_consistency_v1"
TOOL_RESPONSE_CHECK = "llm_tool_response_v1"
REPETITION_CHECK = "llm_repetition_v1"

VOTE_TEMPERATURE = 0.7  # several votes need different answers to be worth asking for
SINGLE_TEMPERATURE = 0.0

TURN_CHARS = 2_000  # one turn's text (content, calls, tool result)
TOOL_CHARS = 2_000  # one tool definition
SYSTEM_CHARS = 4_000  # the system prompt (ToolACE's embeds the tool list, rendered separately anyway)
TOOLS_CHARS = 10_000  # all tool definitions together
DIALOG_CHARS = 24_000  # all turns together (cut in the middle: the start and the final answer stay)

Messages = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------- rendering


def cut(text: str, limit: int) -> str:
    """``text`` up to ``limit`` chars, and a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit} chars cut]"


def cut_middle(text: str, limit: int) -> str:
    """``text`` with its middle cut out when longer than ``limit`` (keeps the start and the end)."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} chars cut]\n{text[-tail:]}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def render_tool(tool: ToolSpec, with_result: bool = False) -> str:
    entry: dict[str, Any] = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    if with_result and tool.result_schema is not None:
        entry["result_schema"] = tool.result_schema
    return cut(_json(entry), TOOL_CHARS)


def render_tools(sample: Sample, with_result: bool = False) -> str:
    if not sample.tools:
        return "(no tools offered)"
    return cut("\n".join(f"- {render_tool(t, with_result)}" for t in sample.tools), TOOLS_CHARS)


def render_turn(turn: SampleTurn) -> str:
    """One turn on one line (or a few): ``role: text``, calls as ``name(args JSON)``, cut at TURN_CHARS."""
    if turn.role == "tool":
        label = f"tool result{f' of {turn.name}' if turn.name else ''}"
        return f"{label}: {cut(turn.content or '', TURN_CHARS)}"
    parts: list[str] = []
    if turn.content and turn.content != turn.call_text:
        parts.append(turn.content)
    if turn.tool_calls:
        parts.append("calls " + "; ".join(f"{c.name}({_json(c.arguments)})" for c in turn.tool_calls))
    if turn.call_error and turn.call_text:
        parts.append(f"unparsed call text ({turn.call_error}): {turn.call_text}")
    return f"{turn.role}: {cut(' | '.join(parts) or '(empty)', TURN_CHARS)}"


def render_dialog(sample: Sample) -> str:
    lines = [f"[{n}] {render_turn(turn)}" for n, turn in enumerate(sample.turns, 1)]
    return cut_middle("\n".join(lines), DIALOG_CHARS) if lines else "(no turns)"


def render_sample(sample: Sample, with_results: bool = False) -> str:
    """Tools, system prompt and dialog, compactly; ``with_results`` adds the tools' result schemas."""
    system = cut(sample.system, SYSTEM_CHARS) if sample.system else "(none)"
    return (f"TOOLS:\n{render_tools(sample, with_results)}\n\nSYSTEM PROMPT:\n{system}\n\n"
            f"DIALOG:\n{render_dialog(sample)}")


def _messages(role: str, question: str, material: str) -> Messages:
    return [
        {"role": "system", "content": f"You are {role} for function-calling training data: you check one sample. "
         "Judge only what is asked, strictly but fairly, and answer with the JSON object requested."},
        {"role": "user", "content": f"{material}\n\nQUESTION: {question}"},
    ]


# ------------------------------------------------------------------------------------------------- judges


def _calls(sample: Sample) -> list[ToolCall]:
    return [c for t in sample.turns if t.role == "assistant" for c in t.tool_calls]


def _assistant_texts(sample: Sample) -> list[tuple[int, str]]:
    return [(n, t.content) for n, t in enumerate(sample.turns, 1)
            if t.role == "assistant" and t.content and t.content.strip() and t.content != t.call_text]


def has_calls(sample: Sample) -> bool:
    return bool(_calls(sample))


def has_exchange(sample: Sample) -> bool:
    roles = {t.role for t in sample.turns}
    return "user" in roles and "assistant" in roles


def has_tool_turns(sample: Sample) -> bool:
    return any(t.role == "tool" for t in sample.turns)


def has_assistant_text(sample: Sample) -> bool:
    return bool(_assistant_texts(sample))


def hallucination_messages(sample: Sample) -> Messages:
    question = (
        "Is every argument value of every function call grounded? A value is grounded when the user stated it "
        "or it follows directly from the user's words (a unit, date or format conversion, the enum value that "
        "names what the user said), when the system prompt gives it, or when an earlier tool result returned "
        "it. A value the assistant invented, guessed or assumed (including optional parameters the user never "
        "mentioned filled with made-up values) is not grounded. List every ungrounded value as name=value; "
        "passed is true only when the list is empty."
    )
    return _messages("a hallucination checker", question, render_sample(sample))


def consistency_messages(sample: Sample) -> Messages:
    question = (
        "Do the assistant's function calls and its final answer fulfil what the user asked? Check that the "
        "right functions are called for every part of each request (none missing, none unrelated), that the "
        "final answer uses the tool results correctly and answers the request, and that no call is made "
        "when no offered tool fits. Asking the user for a required value the user did not give is correct. "
        "passed is false if any request is left unfulfilled or answered wrongly."
    )
    return _messages("a consistency checker", question, render_sample(sample))


def tool_response_messages(sample: Sample) -> Messages:
    question = (
        "Does every tool result agree with the definition of the API it answers? Check that each result "
        "answers a call made before it to that API, has the fields and types the API returns (its "
        "result_schema when given, else its description), and has values that are plausible for the call's "
        "arguments (e.g. the city asked about, not another one). passed is false if any tool result does not."
    )
    return _messages("an API simulation checker", question, render_sample(sample, with_results=True))


def repetition_messages(sample: Sample) -> Messages:
    texts = "\n".join(f"[{n}] assistant: {cut(text, TURN_CHARS)}" for n, text in _assistant_texts(sample))
    question = (
        "Are these assistant messages free of repetition loops (the same words, phrase or sentence repeated "
        "over and over) and of meaningless tokens (garbled text, stray markup or special tokens, random "
        "characters)? passed is false if any message has either."
    )
    return _messages("a text quality checker", question, f"ASSISTANT MESSAGES:\n{cut_middle(texts, DIALOG_CHARS)}")


@dataclass(frozen=True)
class Judge:
    """One sub-question: ``applies`` says whether the sample has anything to judge (else no request)."""

    name: str
    applies: Callable[[Sample], bool]
    messages: Callable[[Sample], Messages]
    output: type[JudgeAnswer]


HALLUCINATION = Judge(HALLUCINATION_CHECK, has_calls, hallucination_messages, HallucinationAnswer)
CONSISTENCY = Judge(CONSISTENCY_CHECK, has_exchange, consistency_messages, ConsistencyAnswer)
TOOL_RESPONSE = Judge(TOOL_RESPONSE_CHECK, has_tool_turns, tool_response_messages, ToolResponseAnswer)
REPETITION = Judge(REPETITION_CHECK, has_assistant_text, repetition_messages, RepetitionAnswer)
JUDGES: tuple[Judge, ...] = (HALLUCINATION, CONSISTENCY, TOOL_RESPONSE, REPETITION)


# ---------------------------------------------------------------------------------------------- judging


class JudgeOutcome(BaseModel):
    """What the model layer found on one sample. ``failures`` is everything that fails it: judges that
    voted against it and judges that gave no valid answer; ``errors`` is that second kind only (a subset
    of ``failures``, for counting samples that could not be verified)."""

    index: int
    id: str
    failures: list[Problem] = Field(default_factory=list)
    errors: list[Problem] = Field(default_factory=list)
    raw_outputs: list[str] = Field(default_factory=list, description="Every raw LLM output of every judge")
    judged: list[str] = Field(default_factory=list, description="Checks asked (the others were skipped)")

    @property
    def passed(self) -> bool:
        return not self.failures


def _decide(judge: Judge, answers: Sequence[Structured[JudgeAnswer]]) -> tuple[Problem | None, bool]:
    """The judge's problem (or None when it passes) and whether that problem is an unanswered judge."""
    valid = [a.value for a in answers if a.value is not None]
    if not valid:
        first = answers[0]
        votes = f"{len(answers)} votes" if len(answers) > 1 else "1 vote"
        return Problem(check=first.check or STRUCTURED_OUTPUT_CHECK,
                       reason=f"judge {judge.name} gave no valid answer ({votes}): {first.error}"), True
    failing = [v for v in valid if v.failed()]
    if 2 * (len(valid) - len(failing)) > len(valid):
        return None, False
    reason = failing[0].failure_reason()
    if len(answers) > 1:
        reason = f"{len(failing)} of {len(valid)} answered votes failed: {reason}"
    return Problem(check=judge.name, reason=reason), False


async def judge_sample(
    sample: Sample,
    gateway: LLMGateway,
    votes: int = 1,
    judges: Sequence[Judge] = JUDGES,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> JudgeOutcome:
    """Ask every judge that applies (``votes`` times each, distinct seeds) about ``sample``.

    ``temperature`` defaults to 0.7 with several votes and 0 with one; ``max_tokens`` to the gateway's.
    """
    if votes < 1:
        raise ValueError(f"votes must be at least 1, got {votes}")
    if temperature is None:
        temperature = VOTE_TEMPERATURE if votes > 1 else SINGLE_TEMPERATURE
    asked = [j for j in judges if j.applies(sample)]

    async def ask(judge: Judge) -> list[Structured[JudgeAnswer]]:
        messages = judge.messages(sample)
        return list(await asyncio.gather(*(
            gateway.structured(judge.output, messages, stage=STAGE, temperature=temperature,
                               max_tokens=max_tokens, sample=k)
            for k in range(votes)
        )))

    answers = await asyncio.gather(*(ask(j) for j in asked))
    outcome = JudgeOutcome(index=sample.index, id=sample.id, judged=[j.name for j in asked])
    for judge, judge_answers in zip(asked, answers, strict=True):
        outcome.raw_outputs.extend(raw for a in judge_answers for raw in a.raw_outputs)
        problem, unanswered = _decide(judge, judge_answers)
        if problem is not None:
            outcome.failures.append(problem)
            if unanswered:
                outcome.errors.append(problem)
    return outcome


async def judge_samples(
    samples: Sequence[Sample],
    gateway: LLMGateway,
    votes: int = 1,
    judges: Sequence[Judge] = JUDGES,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> list[JudgeOutcome]:
    """:func:`judge_sample` for every sample, concurrently (the gateway caps requests in flight); the
    outcomes are in the order of ``samples``."""
    return list(await asyncio.gather(*(
        judge_sample(s, gateway, votes, judges, temperature=temperature, max_tokens=max_tokens) for s in samples
    )))
