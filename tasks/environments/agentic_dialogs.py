"""``agentic_multi_turn`` dialogs end to end: environments, blueprints, trajectories, rule verification, counts.

:func:`make_agentic_dialogs` is the entry point the dialogs stage calls (``flows/stages/dialogs.py``): it needs the
accepted APIs and the context-tree nodes of the run, an :class:`~toolace.llm.gateway.LLMGateway`, and
:class:`AgenticSettings`; it returns every dialog (accepted and rejected, each rejection with its check and reason),
every environment and blueprint record, and the counts (:meth:`AgenticRun.stats`).

The MCP servers of ``settings.mcp_environments`` come first, in order
(:func:`~tasks.environments.mcp_environments.prepare_mcp_environment`: the server started once in its sandbox, its
tools imported, its initial state observed through the probes; one that does not start or does not fit its spec
is a rejected environment record and the next is tried); then, per API family
(:func:`~tasks.environments.blueprints.api_families`, in order), a synthesised environment. Either way, until
``settings.dialogs`` dialogs are accepted:

1. (a family) the LLM proposes an environment; one that does not validate is rejected and the next is tried;
2. the LLM proposes ``blueprints_per_environment`` blueprints; each is executed in the sandbox from the initial
   state and checked by rules, then (``model_checks``) reviewed by the committee of judges;
3. each accepted blueprint gets one trajectory (simulated user + assistant, every call executed), accepted when the
   final state and the required outputs match;
4. an accepted trajectory then goes through the rule layer (:func:`tasks.verification.rules.score_dialog`), so it
   is held to the checks every published dialog meets; the first failure rejects it.

The dialog's ``meta`` holds the environment id, the initial state, the ground-truth actions, the required outputs
and the final-state diff; an MCP environment's adds ``source: "mcp"`` and the ``server`` (name, version, command).
:func:`make_guided_dialogs` is one round of loss steering (:mod:`tasks.environments.agentic_guidance`): one
replacement blueprint per request, proposed with the request's guidance for the environment of a dialog the target
model found too easy or too hard, then executed, reviewed, run and rule-checked through the same steps.
:class:`AgenticBatch` is what the batch task returns of either.

The agents default to the gateway's (:func:`~tasks.environments.trajectories.gateway_user`,
:func:`~tasks.environments.trajectories.gateway_assistant`); tests pass scripted ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.environments import AgenticDialog, McpEnvironmentSpec
from schemas.records import APISpec, TreeNode
from tasks.environments.agentic_guidance import GUIDANCE_REPEAT_CHECK, GuidedBlueprint, GuidedOutcome, repeats
from tasks.environments.blueprints import (
    BlueprintRecord,
    EnvironmentRecord,
    api_families,
    execute_blueprint,
    propose_blueprints,
    propose_environment,
    review_blueprints,
)
from tasks.environments.declarative import DEFAULT_LIMITS, EnvironmentSpec, Limits
from tasks.environments.declarative_sandbox import DEFAULT_SANDBOX, SandboxLimits, SandboxSession
from tasks.environments.executable import Environment, new_session
from tasks.environments.mcp_environments import SOURCE as MCP_SOURCE
from tasks.environments.mcp_environments import prepare_mcp_environment
from tasks.environments.trajectories import (
    DEFAULT_TRAJECTORY,
    AssistantAgent,
    TrajectoryLimits,
    TrajectoryOutcome,
    UserAgent,
    gateway_assistant,
    gateway_user,
    run_trajectory,
)
from tasks.verification.rules import score_dialog
from toolace.llm.gateway import LLMGateway


@dataclass(frozen=True)
class AgenticSettings:
    dialogs: int = 10  # accepted dialogs wanted
    blueprints_per_environment: int = 3
    max_environments: int = 8  # environments proposed at most
    model_checks: bool = True  # the blueprint committee
    judge_votes: int = 3
    max_assistant_chars: int = 2000
    seed: int = 0
    limits: Limits = DEFAULT_LIMITS
    sandbox: SandboxLimits = DEFAULT_SANDBOX
    bounds: TrajectoryLimits = DEFAULT_TRAJECTORY
    mcp_environments: tuple[McpEnvironmentSpec, ...] = ()  # MCP servers run as environments, before synthesised ones


@dataclass
class AgenticRun:
    dialogs: list[AgenticDialog] = field(default_factory=list)
    environments: list[EnvironmentRecord] = field(default_factory=list)
    blueprints: list[BlueprintRecord] = field(default_factory=list)
    executions: int = 0
    execution_s: float = 0.0
    llm_tokens: int = 0
    wall_time_s: float = 0.0

    @property
    def accepted(self) -> list[AgenticDialog]:
        return [d for d in self.dialogs if d.accepted]

    def stats(self) -> dict[str, Any]:
        """The counts of the run report: environments, blueprints and trajectories proposed / executed /
        accepted, executions per second of sandbox time, LLM tokens per accepted trajectory, rejections by check."""
        rejected = Counter(r.rejected_by or "unknown" for r in [*self.environments, *self.blueprints, *self.dialogs]
                           if not r.accepted)
        accepted = len(self.accepted)
        sources = {"synthesised": sum(e.accepted for e in self.environments if e.source != MCP_SOURCE)}
        if any(e.source == MCP_SOURCE for e in self.environments):
            sources[MCP_SOURCE] = sum(e.accepted for e in self.environments if e.source == MCP_SOURCE)
        return {
            "environments_proposed": len(self.environments),
            "environments_accepted": sum(e.accepted for e in self.environments),
            "environment_sources": sources,
            "blueprints_proposed": len(self.blueprints),
            "blueprints_executed": sum(b.executed for b in self.blueprints),
            "blueprints_accepted": sum(b.accepted for b in self.blueprints),
            "trajectories_run": len(self.dialogs),
            "trajectories_accepted": accepted,
            "executions": self.executions,
            "executions_per_s": round(self.executions / self.execution_s, 1) if self.execution_s else None,
            "execution_s": round(self.execution_s, 3),
            "llm_tokens": self.llm_tokens,
            "llm_tokens_per_accepted_trajectory": round(self.llm_tokens / accepted, 1) if accepted else None,
            "wall_time_s": round(self.wall_time_s, 3),
            "rejected_by": dict(sorted(rejected.items())),
        }


def _gateway_tokens(gateway: LLMGateway) -> int:
    return sum(s.tokens_in + s.tokens_out for s in gateway.stats.values())


def agentic_dialog_id(seed: int, env_id: str, blueprint_id: str, variant: str = "") -> str:
    """A trajectory's dialog id; ``variant`` tells a guided replacement's apart (its blueprint may be the same)."""
    return hashlib.sha1(f"{seed}:agentic:{env_id}:{blueprint_id}{f':{variant}' if variant else ''}".encode()
                        ).hexdigest()[:16]


def environment_of(record: EnvironmentRecord) -> Environment | None:
    """The environment of an accepted record (a synthesised spec, or an MCP server's), else None."""
    if not record.accepted:
        return None
    mcp = getattr(record, "mcp", None)
    return mcp if mcp is not None else record.environment


@dataclass
class AgenticBatch:
    """What the agentic batch task returns: every dialog (accepted or rejected with its check), the counts of the
    run report (:meth:`AgenticRun.stats`), the accepted environments (loss steering proposes replacement blueprints
    for them) and, for a guided round (:func:`make_guided_dialogs`), one outcome per request."""

    dialogs: list[AgenticDialog]
    report: dict[str, Any]
    environments: list[Environment] = field(default_factory=list)
    outcomes: list[GuidedOutcome] = field(default_factory=list)

    @classmethod
    def of(cls, run: AgenticRun, outcomes: Sequence[GuidedOutcome] = ()) -> AgenticBatch:
        envs = [e for e in (environment_of(r) for r in run.environments) if e is not None]
        return cls(list(run.dialogs), run.stats(), envs, list(outcomes))


async def _blueprints_for(env: Environment, gateway: LLMGateway, settings: AgenticSettings, run: AgenticRun,
                          sample_base: int, count: int | None = None, guidance: str = "",
                          screen: Callable[[BlueprintRecord], None] | None = None) -> list[BlueprintRecord]:
    """Propose (``count``, default ``blueprints_per_environment``; ``guidance`` for the prompt), ``screen`` (a rule
    that may reject a record before it runs), execute and review blueprints; every record, in order."""
    records = await propose_blueprints(env, settings.blueprints_per_environment if count is None else count,
                                       gateway, sample_base, guidance)
    for record in records:
        if screen is not None and record.accepted:
            screen(record)

    def execute_all() -> float:
        began = time.perf_counter()
        session = new_session(env, settings.sandbox)  # one worker for the batch; each execution starts afresh
        try:
            for record in records:
                execute_blueprint(record, env, session, settings.limits)
        finally:
            session.close()
        return time.perf_counter() - began

    run.execution_s += await asyncio.to_thread(execute_all)
    run.executions += sum(len(r.results) for r in records)
    if settings.model_checks:
        await review_blueprints(records, env, gateway, settings.judge_votes)
    run.blueprints.extend(records)
    return records


async def make_agentic_dialogs(
    apis: Sequence[APISpec],
    nodes: Sequence[TreeNode],
    gateway: LLMGateway,
    settings: AgenticSettings = AgenticSettings(),  # noqa: B008 (frozen)
    user: Callable[[int], UserAgent] | None = None,
    assistant: Callable[[int], AssistantAgent] | None = None,
) -> AgenticRun:
    """See the module docstring. ``user``/``assistant``: agent factories by trajectory number (default: the
    gateway's agents)."""
    began = time.perf_counter()
    tokens_before = _gateway_tokens(gateway)
    run = AgenticRun()
    make_user = user or (lambda k: gateway_user(gateway, sample=settings.seed * 10_000 + k * 100))
    make_assistant = assistant or (lambda k: gateway_assistant(gateway, sample=settings.seed * 10_000 + k * 100))
    idle: list[SandboxSession] = []  # warm workers, reused by the next trajectories (a load resets the state)
    try:
        await _mcp_servers(gateway, settings, run, make_user, make_assistant, idle)
        await _families(apis, nodes, gateway, settings, run, make_user, make_assistant, idle)
    finally:
        await asyncio.to_thread(lambda: [session.close() for session in idle])
    run.llm_tokens += _gateway_tokens(gateway) - tokens_before
    run.wall_time_s = time.perf_counter() - began
    return run


async def _trajectory(env: Environment, number: int, bp: BlueprintRecord, settings: AgenticSettings,
                      make_user: Callable[[int], UserAgent], make_assistant: Callable[[int], AssistantAgent],
                      idle: list[SandboxSession], variant: str = "") -> TrajectoryOutcome:
    dialog_id = agentic_dialog_id(settings.seed, env.env_id, bp.blueprint.blueprint_id, variant)
    if not isinstance(env, EnvironmentSpec):  # a worker (and server) of its own, closed by run_trajectory
        return await run_trajectory(env, bp, make_user(number), make_assistant(number), dialog_id,
                                    settings.limits, settings.sandbox, settings.bounds)
    session = idle.pop() if idle else SandboxSession(settings.sandbox)
    try:
        return await run_trajectory(env, bp, make_user(number), make_assistant(number), dialog_id,
                                    settings.limits, settings.sandbox, settings.bounds, session)
    finally:
        idle.append(session)


def _keep(run: AgenticRun, outcome: TrajectoryOutcome, settings: AgenticSettings) -> AgenticDialog:
    """Count a trajectory's work and hold an accepted one to the rule layer (the first failure rejects it)."""
    run.executions += outcome.executions
    run.execution_s += outcome.execution_s
    run.llm_tokens += outcome.tokens
    dialog = outcome.dialog
    if dialog.accepted:
        failures = score_dialog(dialog, settings.max_assistant_chars)
        if failures:
            dialog.reject(failures[0].check, failures[0].reason)
    run.dialogs.append(dialog)
    return dialog


async def _families(apis: Sequence[APISpec], nodes: Sequence[TreeNode], gateway: LLMGateway,
                    settings: AgenticSettings, run: AgenticRun, make_user: Callable[[int], UserAgent],
                    make_assistant: Callable[[int], AssistantAgent], idle: list[SandboxSession]) -> None:
    for index, family in enumerate(api_families(apis, nodes)):
        synthesised = sum(e.source != MCP_SOURCE for e in run.environments)
        if len(run.accepted) >= settings.dialogs or synthesised >= settings.max_environments:
            break
        record = await propose_environment(family, nodes, gateway, settings.limits, sample=settings.seed + index)
        run.environments.append(record)
        env = record.environment
        if not record.accepted or env is None:
            continue
        await _dialogs_of(env, gateway, settings, run, make_user, make_assistant, idle,
                          settings.seed * 1000 + index * 10)


async def _mcp_servers(gateway: LLMGateway, settings: AgenticSettings, run: AgenticRun,
                       make_user: Callable[[int], UserAgent], make_assistant: Callable[[int], AssistantAgent],
                       idle: list[SandboxSession]) -> None:
    """The configured MCP servers as environments (see the module docstring)."""
    for index, spec in enumerate(settings.mcp_environments):
        if len(run.accepted) >= settings.dialogs:
            break
        began = time.perf_counter()
        record = await asyncio.to_thread(prepare_mcp_environment, spec, settings.limits)
        run.execution_s += time.perf_counter() - began
        run.environments.append(record)
        if not record.accepted or record.mcp is None:
            continue
        await _dialogs_of(record.mcp, gateway, settings, run, make_user, make_assistant, idle,
                          settings.seed * 1000 + 500 + index * 10)


async def _dialogs_of(env: Environment, gateway: LLMGateway, settings: AgenticSettings, run: AgenticRun,
                      make_user: Callable[[int], UserAgent], make_assistant: Callable[[int], AssistantAgent],
                      idle: list[SandboxSession], sample_base: int) -> None:
    """An accepted environment's blueprints, then one trajectory per accepted blueprint (as many as are still
    wanted), each accepted one held to the rule layer."""
    blueprints = [r for r in await _blueprints_for(env, gateway, settings, run, sample_base) if r.accepted]
    wanted = blueprints[: settings.dialogs - len(run.accepted)]
    start = len(run.dialogs)

    outcomes = list(await asyncio.gather(*(
        _trajectory(env, start + k, bp, settings, make_user, make_assistant, idle) for k, bp in enumerate(wanted))))
    for outcome in outcomes:
        _keep(run, outcome, settings)


# ------------------------------------------------------------------------------------------------ loss steering

GUIDED_NUMBER = 100_000  # guided trajectories' agent numbers start here (their own samples)


async def make_guided_dialogs(
    requests: Sequence[GuidedBlueprint],
    environments: Sequence[Environment],
    gateway: LLMGateway,
    settings: AgenticSettings = AgenticSettings(),  # noqa: B008 (frozen)
    user: Callable[[int], UserAgent] | None = None,
    assistant: Callable[[int], AssistantAgent] | None = None,
) -> tuple[AgenticRun, list[GuidedOutcome]]:
    """One round of loss steering (:mod:`tasks.environments.agentic_guidance`): per request, one blueprint proposed
    for its environment with its guidance, rejected by :data:`GUIDANCE_REPEAT_CHECK` when it repeats the task it
    should replace, executed and reviewed as every blueprint; then its trajectory, run and held to the rule layer as
    every trajectory. Returns the run (counts, every dialog and blueprint) and one outcome per request, in order."""
    began = time.perf_counter()
    tokens_before = _gateway_tokens(gateway)
    run = AgenticRun()
    by_env = {e.env_id: e for e in environments}
    make_user = user or (lambda k: gateway_user(gateway, sample=settings.seed * 10_000 + k * 100))
    make_assistant = assistant or (lambda k: gateway_assistant(gateway, sample=settings.seed * 10_000 + k * 100))
    idle: list[SandboxSession] = []

    async def one(k: int, request: GuidedBlueprint) -> GuidedOutcome:
        env = by_env.get(request.env_id)
        if env is None:
            return GuidedOutcome(origin=request.origin, rejected_by=GUIDANCE_REPEAT_CHECK,
                                 reason=f"environment {request.env_id} is not available")

        def screen(record: BlueprintRecord) -> None:
            if repeats(record.blueprint, request):
                record.reject(GUIDANCE_REPEAT_CHECK, f"the guided blueprint repeats the task of {request.replaces} "
                                                     f"(round {request.round}, {request.verdict})")

        (record,) = await _blueprints_for(env, gateway, settings, run,
                                          settings.seed * 1000 + 700 + request.round * 100 + k, count=1,
                                          guidance=request.guidance, screen=screen)
        if not record.accepted:
            return GuidedOutcome(origin=request.origin, rejected_by=record.rejected_by, reason=record.reason)
        number = GUIDED_NUMBER * request.round + k
        trajectory = await _trajectory(env, number, record, settings, make_user, make_assistant, idle,
                                       variant=f"guided:{request.origin}:{request.round}")
        return GuidedOutcome(origin=request.origin, dialog=_keep(run, trajectory, settings))

    try:
        outcomes = list(await asyncio.gather(*(one(k, r) for k, r in enumerate(requests))))
    finally:
        await asyncio.to_thread(lambda: [session.close() for session in idle])
    run.llm_tokens += _gateway_tokens(gateway) - tokens_before
    run.wall_time_s = time.perf_counter() - began
    return run, outcomes
