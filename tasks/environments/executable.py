"""What the blueprint and trajectory code needs of an environment, and of a session that executes it.

Two kinds of environment go through the same blueprint (:mod:`tasks.environments.blueprints`) and trajectory
(:mod:`tasks.environments.trajectories`) code:

* a synthesised :class:`~tasks.environments.declarative.EnvironmentSpec`, executed by the platform's interpreter in
  :class:`~tasks.environments.declarative_sandbox.SandboxSession`; its state is computed, its diff paths are
  ``collection/key/field``, and its destructive APIs are those whose effect updates or deletes;
* an :class:`ExternalEnvironment`, whose state lives elsewhere and is observed: an MCP server
  (:class:`tasks.environments.mcp_environments.McpEnvironment`), executed by its own session.

The helpers below dispatch on the kind, so the declarative path behaves exactly as it did before there was a
second kind. A session (:class:`EnvironmentSession`) is one execution at a time: ``load`` starts a fresh copy of the
environment's initial state, ``call`` runs one call, ``state`` observes the state, ``run`` is a whole execution
(the blueprint's actions) from the initial state; a failure of the sandbox (a limit, a deadline, a dead worker or
server) is a :class:`~tasks.environments.declarative_sandbox.SandboxFailure` whose ``check`` names the rejection.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

from schemas.records import APISpec
from tasks.environments.declarative import (
    DEFAULT_LIMITS,
    CallResult,
    DiffEntry,
    EnvironmentSpec,
    Execution,
    Limits,
    State,
    initial_state,
    is_destructive,
    state_diff,
)
from tasks.environments.declarative_sandbox import SandboxLimits, SandboxSession


class EnvironmentSession(Protocol):
    """One execution at a time of an environment (see the module docstring)."""

    def load(self, env: Any, limits: Limits = DEFAULT_LIMITS) -> None: ...

    def call(self, name: str, arguments: Any) -> CallResult: ...

    def state(self) -> State: ...

    def run(self, env: Any, calls: list[tuple[str, dict[str, Any]]], limits: Limits = DEFAULT_LIMITS,
            stop_on_failure: bool = True) -> Execution: ...

    def close(self) -> None: ...


@runtime_checkable
class ExternalEnvironment(Protocol):
    """An environment whose state lives outside the platform's interpreter and is observed (an MCP server)."""

    env_id: str
    name: str
    description: str
    tools: list[APISpec]

    def start_state(self) -> State:
        """The state every execution starts from (observed when the environment was prepared)."""
        ...

    def state_diff(self, before: State, after: State) -> list[DiffEntry]: ...

    def is_destructive(self, api_name: str) -> bool: ...

    def state_text(self, limit: int) -> str:
        """The initial state as shown in a blueprint prompt."""
        ...

    def dialog_meta(self) -> dict[str, Any]:
        """What a dialog's ``meta`` carries besides the common keys (the source, the server)."""
        ...

    def coerce_arguments(self, api_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A blueprint action's arguments (scalars, as the strict answer model allows) fitted to the tool's schema."""
        ...

    def open_session(self) -> EnvironmentSession: ...

    def assistant_system(self) -> str:
        """The assistant agent's system message."""
        ...


Environment = EnvironmentSpec | ExternalEnvironment


def start_state(env: Environment) -> State:
    return initial_state(env) if isinstance(env, EnvironmentSpec) else env.start_state()


def diff(env: Environment, before: State, after: State) -> list[DiffEntry]:
    return state_diff(before, after) if isinstance(env, EnvironmentSpec) else env.state_diff(before, after)


def destructive(env: Environment, api_name: str) -> bool:
    return is_destructive(env, api_name) if isinstance(env, EnvironmentSpec) else env.is_destructive(api_name)


def new_session(env: Environment, sandbox: SandboxLimits) -> EnvironmentSession:
    return SandboxSession(sandbox) if isinstance(env, EnvironmentSpec) else env.open_session()


def dialog_meta(env: Environment) -> dict[str, Any]:
    return {} if isinstance(env, EnvironmentSpec) else env.dialog_meta()


def coerce_arguments(env: Environment, api_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return arguments if isinstance(env, EnvironmentSpec) else env.coerce_arguments(api_name, arguments)


def session_wait_s(session: Any, sandbox: SandboxLimits) -> float:
    """The longest one request of ``session`` may take (its own deadlines come first): a session that says
    (``max_wait_s``), else the declarative sandbox's deadline per request plus its start."""
    own = getattr(session, "max_wait_s", None)
    return float(own) if own else sandbox.timeout_s + sandbox.start_timeout_s + 5


def unasked_changes(env: Environment, api_name: str, changed: Sequence[str], expected_paths: Collection[str],
                    ground_truth_tools: Collection[str]) -> list[str]:
    """The changes of a call that the goal did not ask for. Declarative: the state paths the call changed that the
    ground truth does not change (``expected_paths``). External: everything the call changed, when the ground-truth
    actions never call that tool (an observed state's line paths shift with earlier changes, so they are not
    compared one by one)."""
    if isinstance(env, EnvironmentSpec):
        return [p for p in changed if p not in expected_paths]
    return [] if api_name in ground_truth_tools else list(changed)
