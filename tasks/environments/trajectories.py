"""Trajectories verified by execution (APIGen-MT phase 2): a simulated user and the assistant talk, every call runs.

The user agent knows the blueprint's goal, not its actions; the assistant agent sees the environment's tools. Every
call the assistant makes is parsed (OpenAI ``tool_calls`` with :func:`~tasks.formats.call_parsing.parse_json_calls`,
calls written in text with :func:`~tasks.formats.call_parsing.parse_calls`: ``ast``, never ``eval``) and executed
against the environment in the sandbox (:class:`~tasks.environments.declarative_sandbox.SandboxSession` for a
synthesised environment, :class:`~tasks.environments.mcp_environments.McpSession` for an MCP server: see
:mod:`tasks.environments.executable`); each tool turn is the real result (an error result when the call cannot be
served). Both agents are injected callables (:class:`AssistantAgent`, :class:`UserAgent`), so tests drive them with
scripted answers; :func:`gateway_assistant` and :func:`gateway_user` are the LLM ones.

Verdict (BFCL's state and response checks):

* accepted when the final state equals the state the ground-truth actions produce and every required output
  appears in an assistant turn's text;
* ``final_state_v1``: the states differ, the reason names the differing paths (``collection/key/field``; an MCP
  server's ``probe/line``);
* ``required_output_v1``: an output the user must be told never appeared;
* ``destructive_action_v1``: a call that updates or deletes changed a path the ground truth does not change (an MCP
  server's: a destructive tool, by its annotations, that changed the state though no ground-truth action calls it;
  the conversation stops there);
* ``trajectory_call_v1``: a call that does not parse; ``trajectory_length_v1``: the conversation ran past its turn
  bounds; the sandbox's checks when an execution hits a limit or the worker fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.environments import AgenticDialog, SimulatedUserTurn
from schemas.records import ToolCall, Turn
from tasks.environments.blueprints import STAGE, BlueprintRecord, normalise
from tasks.environments.declarative import DEFAULT_LIMITS, EnvironmentSpec, Limits
from tasks.environments.declarative_sandbox import (
    DEFAULT_SANDBOX,
    SANDBOX_CHECK,
    SandboxFailure,
    SandboxLimits,
)
from tasks.environments.executable import (
    Environment,
    EnvironmentSession,
    destructive,
    dialog_meta,
    diff,
    new_session,
    session_wait_s,
    start_state,
    unasked_changes,
)
from tasks.formats.call_format import openai_messages
from tasks.formats.call_parsing import CallParseError, parse_calls, parse_json_calls
from toolace.llm.gateway import LLMCallFailed, LLMGateway

FINAL_STATE_CHECK = "final_state_v1"
OUTPUT_CHECK = "required_output_v1"
DESTRUCTIVE_CHECK = "destructive_action_v1"
CALL_CHECK = "trajectory_call_v1"
LENGTH_CHECK = "trajectory_length_v1"
AGENT_CHECK = "trajectory_agent_v1"
DIALOG_TYPE = "agentic_multi_turn"
ASSISTANT_SYSTEM = ("You are a helpful customer-service assistant with access to functions. Use them to do what "
                    "the user asks; tell the user the results they asked for. Do not change or delete anything the "
                    "user did not ask you to.")


@dataclass
class AssistantReply:
    """One assistant answer: text, and calls as OpenAI ``tool_calls`` entries (``{"name", "arguments"}`` with
    arguments as a JSON string or object) or written in the text; ``tokens`` it cost."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    reasoning: str | None = None


@dataclass
class UserReply:
    message: str
    finished: bool = False
    tokens: int = 0


class AssistantAgent(Protocol):
    def __call__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Awaitable[AssistantReply]: ...


class UserAgent(Protocol):
    def __call__(self, goal: str, turns: Sequence[Turn]) -> Awaitable[UserReply]: ...


@dataclass(frozen=True)
class TrajectoryLimits:
    max_user_turns: int = 6
    max_calls_per_turn: int = 8  # assistant steps (call rounds) before it must answer in text
    agent_timeout_s: float = 300.0  # one agent answer (the gateway has its own deadlines under this)


DEFAULT_TRAJECTORY = TrajectoryLimits()


@dataclass
class TrajectoryOutcome:
    dialog: AgenticDialog
    tokens: int = 0
    executions: int = 0  # calls executed in the sandbox
    execution_s: float = 0.0  # time spent waiting on them


class _Stop(Exception):
    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check


def _parse(reply: AssistantReply, tool_names: Sequence[str], prefix: str) -> list[ToolCall]:
    """The calls in a reply (ids ``<prefix>_<n>``); ``[]`` for a text answer. Raises _Stop for a broken call."""
    try:
        if reply.tool_calls:
            calls = parse_json_calls(reply.tool_calls)
        elif reply.content and reply.content.lstrip().startswith("["):
            try:
                calls = parse_calls(reply.content, tool_names)
            except CallParseError:
                return []  # text that happens to start with a bracket
        else:
            return []
    except CallParseError as exc:
        raise _Stop(CALL_CHECK, f"the assistant's call does not parse: {exc}") from None
    return [ToolCall(id=f"{prefix}_{n}", name=c.name, arguments=c.arguments) for n, c in enumerate(calls)]


async def run_trajectory(env: Environment, blueprint: BlueprintRecord, user: UserAgent,
                         assistant: AssistantAgent, dialog_id: str, limits: Limits = DEFAULT_LIMITS,
                         sandbox: SandboxLimits = DEFAULT_SANDBOX,
                         bounds: TrajectoryLimits = DEFAULT_TRAJECTORY,
                         session: EnvironmentSession | None = None) -> TrajectoryOutcome:
    """One conversation on a fresh copy of the environment, and its verdict (see the module docstring).
    ``session``: a worker to reuse (loading the environment resets its state; it is left open), else a fresh one
    is started and closed. ``env`` is a synthesised environment or an external one (an MCP server: see
    :mod:`tasks.environments.executable`)."""
    bp = blueprint.blueprint
    start = start_state(env)
    expected_paths = {d["path"] for d in blueprint.diff}
    ground_truth_tools = {a.api for a in bp.actions}
    dialog = AgenticDialog(dialog_id=dialog_id, dialog_type=DIALOG_TYPE, domain=env.tools[0].domain,
                           tools=env.tools, segments=[])
    dialog.meta = {"env_id": env.env_id, **dialog_meta(env), "blueprint_id": bp.blueprint_id,
                   "user_goal": bp.user_goal, "initial_state": start,
                   "ground_truth_actions": [a.model_dump() for a in bp.actions],
                   "required_outputs": list(bp.outputs), "final_state_diff": []}
    outcome = TrajectoryOutcome(dialog=dialog)
    tools = [t.tool_definition() for t in env.tools]
    names = [t.name for t in env.tools]
    system = ASSISTANT_SYSTEM if isinstance(env, EnvironmentSpec) else env.assistant_system()
    owned = session is None
    session = session or new_session(env, sandbox)
    wait_s = session_wait_s(session, sandbox)

    async def execute(fn: Callable[..., Any], *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), wait_s)
        except TimeoutError:  # the session's own deadlines come first: this one is the last resort
            raise SandboxFailure(f"the environment gave no answer within {wait_s:g} s", SANDBOX_CHECK) from None
        finally:
            outcome.execution_s += time.perf_counter() - began

    async def ask(work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, bounds.agent_timeout_s)
        except TimeoutError:
            raise _Stop(AGENT_CHECK, f"an agent gave no answer within {bounds.agent_timeout_s:g} s") from None
        except LLMCallFailed as exc:
            raise _Stop(exc.check, str(exc)) from None

    try:
        await execute(session.load, env, limits)
        reply = await ask(user(bp.user_goal, dialog.turns))
        outcome.tokens += reply.tokens
        dialog.turns.append(Turn(role="user", content=reply.message))
        for _ in range(bounds.max_user_turns):
            for step in range(bounds.max_calls_per_turn + 1):
                answer: AssistantReply = await ask(assistant(
                    [{"role": "system", "content": system}, *openai_messages(dialog.turns)], tools))
                outcome.tokens += answer.tokens
                calls = _parse(answer, names, f"call_{len(dialog.turns)}")
                if not calls:
                    text = (answer.content or "").strip()
                    if not text:
                        raise _Stop(AGENT_CHECK, "the assistant answered nothing")
                    dialog.turns.append(Turn(role="assistant", content=text, reasoning_content=answer.reasoning))
                    break
                if step == bounds.max_calls_per_turn:
                    raise _Stop(LENGTH_CHECK, f"the assistant made more than {bounds.max_calls_per_turn} call "
                                              "rounds without answering the user")
                dialog.turns.append(Turn(role="assistant", tool_calls=calls, reasoning_content=answer.reasoning))
                for call in calls:
                    result = await execute(session.call, call.name, call.arguments)
                    outcome.executions += 1
                    dialog.turns.append(Turn(role="tool", tool_call_id=call.id, name=call.name,
                                             content=json.dumps(result.as_content(), ensure_ascii=False)))
                    dialog.apis_used = list(dict.fromkeys([*dialog.apis_used, call.name]))
                    unasked = unasked_changes(env, call.name, result.changed, expected_paths, ground_truth_tools)
                    if result.ok and unasked and destructive(env, call.name):
                        raise _Stop(DESTRUCTIVE_CHECK, f"{call.name}({json.dumps(call.arguments)[:200]}) changed "
                                                       f"{', '.join(unasked[:5])}, which the goal does not ask for")
            reply = await ask(user(bp.user_goal, dialog.turns))
            outcome.tokens += reply.tokens
            if reply.finished:
                break
            dialog.turns.append(Turn(role="user", content=reply.message))
        else:
            raise _Stop(LENGTH_CHECK, f"the user did not finish within {bounds.max_user_turns} turns")
        final = await execute(session.state)
        dialog.meta["final_state_diff"] = [d.as_dict() for d in diff(env, start, final)]
        differing = [d.path for d in diff(env, final, blueprint.final_state)]
        if differing:
            raise _Stop(FINAL_STATE_CHECK, f"the final state differs from the ground truth at "
                                           f"{', '.join(differing[:10])}{' ...' if len(differing) > 10 else ''}")
        said = " \n ".join(normalise(t.content) for t in dialog.turns if t.role == "assistant" and t.content)
        missing = [o for o in bp.outputs if not re.search(rf"(?<!\w){re.escape(normalise(o))}(?!\w)", said)]
        if missing:
            raise _Stop(OUTPUT_CHECK, f"required output {missing[0]!r} never appears in an assistant turn")
    except _Stop as exc:
        dialog.reject(exc.check, str(exc))
    except SandboxFailure as exc:
        dialog.reject(exc.check, str(exc))
    finally:
        if owned:
            await asyncio.to_thread(session.close)
    return outcome


# ------------------------------------------------------------------------------------------ the LLM agents


def _tokens(raw: dict[str, Any]) -> int:
    usage = raw.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def gateway_assistant(gateway: LLMGateway, sample: int = 0) -> AssistantAgent:
    async def agent(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AssistantReply:
        result = await gateway.chat(messages, stage=STAGE, tools=tools, tool_choice="auto", sample=sample)
        return AssistantReply(content=result.content,
                              tool_calls=[{"name": c.name, "arguments": c.arguments_text} for c in result.tool_calls],
                              tokens=0 if result.cached else _tokens(result.raw), reasoning=result.reasoning)
    return agent


def _transcript(turns: Sequence[Turn]) -> str:
    lines = []
    for turn in turns:
        if turn.role == "user":
            lines.append(f"you: {turn.content}")
        elif turn.role == "assistant" and turn.content:
            lines.append(f"assistant: {turn.content}")
    return "\n".join(lines[-12:]) or "(nothing yet)"


def gateway_user(gateway: LLMGateway, sample: int = 0) -> UserAgent:
    async def agent(goal: str, turns: Sequence[Turn]) -> UserReply:
        first = not turns
        instruction = (f"Your goal: {goal}\n\nConversation so far:\n{_transcript(turns)}\n\n"
                       + ("Write your first message to the assistant: ask for what you want, with the values it "
                          "needs. Set finished to false." if first else
                          "Write your next message. If the assistant has done everything your goal asks and told "
                          "you what you wanted to know, thank it and set finished to true; otherwise answer its "
                          "question or say what is still missing, with finished false. Never reveal how to do it."))
        answer = await gateway.structured(SimulatedUserTurn, [
            {"role": "system", "content": "You play a customer talking to an assistant. You know your goal, not "
             "the assistant's tools. Write only the customer's message."},
            {"role": "user", "content": instruction}], stage=STAGE, sample=sample + len(turns))
        if answer.value is None:
            raise _Stop(answer.check or AGENT_CHECK, answer.error or "the user agent gave no answer")
        return UserReply(message=answer.value.message.strip(), finished=answer.value.finished and not first)
    return agent

