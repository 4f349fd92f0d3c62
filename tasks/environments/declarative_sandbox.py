"""Synthesised environments executed in a sandboxed subprocess, with time and memory limits.

The interpreter (:mod:`tasks.environments.declarative`) runs no model-written code and bounds its own work, but an
environment and the calls made on it are untrusted input: a bug of ours on a hostile design, or a state that
grows within its bounds faster than expected, must cost a rejection, never the run. So every execution the
pipeline makes runs in :mod:`tasks.environments.declarative_worker`, a separate Python process that caps its own
address space and CPU time (``RLIMIT_AS``, ``RLIMIT_CPU``) and is killed at a wall-clock deadline per request.

:class:`SandboxSession` is one worker held for a sequence of requests (a trajectory's calls, one at a time, or a
batch of blueprint executions: one process start, about 0.3 s, shared by many). A limit hit, a dead worker or a
deadline passed becomes a :class:`SandboxFailure` whose message says which; the session is then closed and the
next request starts a fresh worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.environments.declarative import (
    DEFAULT_LIMITS,
    LIMIT_CHECK,
    CallResult,
    EnvironmentSpec,
    Execution,
    Limits,
    State,
)

SANDBOX_CHECK = "environment_sandbox_v1"
_ROOT = Path(__file__).resolve().parents[2]
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class SandboxLimits:
    """The worker's wall-clock deadline per request, address-space cap and CPU-time cap."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    cpu_s: int = 60
    start_timeout_s: float = 20.0  # the first request also waits for the interpreter to start


DEFAULT_SANDBOX = SandboxLimits()


class SandboxFailure(Exception):
    """The worker could not answer: past its deadline, out of memory or dead. ``check`` names the rejection."""

    def __init__(self, message: str, check: str = SANDBOX_CHECK) -> None:
        super().__init__(message)
        self.check = check


class SandboxSession:
    """One worker process; :meth:`request` sends one JSON request and waits (bounded) for its one-line answer."""

    def __init__(self, sandbox: SandboxLimits = DEFAULT_SANDBOX) -> None:
        self.sandbox = sandbox
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._fresh = True

    def _start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith(("KEY", "TOKEN", "SECRET", "PASSWORD"))}
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.environments.declarative_worker",
             "--memory-mb", str(self.sandbox.memory_mb), "--cpu-s", str(self.sandbox.cpu_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=_ROOT, env=env)
        self._buffer = b""
        self._fresh = True
        return self._proc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=1.0)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout=5.0)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, proc: subprocess.Popen[bytes], message: str) -> SandboxFailure:
        proc.kill()
        try:
            proc.wait(timeout=5.0)
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        except (subprocess.TimeoutExpired, OSError, ValueError):
            stderr = ""
        self._proc = None
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        if "MemoryError" in stderr:
            message += " (out of memory)"
        elif stderr.strip():
            message += f": {stderr.strip().splitlines()[-1][:200]}"
        return SandboxFailure(message)

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        timeout = self.sandbox.timeout_s + (self.sandbox.start_timeout_s if self._fresh else 0.0)
        self._fresh = False
        try:
            proc.stdin.write(json.dumps(payload, ensure_ascii=False).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail(proc, f"the sandbox worker died (exit status {proc.poll()})") from None
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._fail(proc, f"the sandbox worker gave no answer within {timeout:g} s (timeout)")
                if not selector.select(left):
                    continue
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    status = proc.wait(timeout=5.0)
                    raise self._fail(proc, f"the sandbox worker died (exit status {status})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            raise self._fail(proc, f"the sandbox worker answered something that is not JSON: {line[:80]!r}") from None
        if not isinstance(answer, dict):
            raise self._fail(proc, "the sandbox worker answered something that is not a JSON object")
        if "fatal" in answer:
            raise self._fail(proc, f"the sandbox worker failed: {answer['fatal']}")
        return dict(answer)

    # -- the requests

    def load(self, env: EnvironmentSpec, limits: Limits = DEFAULT_LIMITS, state: State | None = None) -> None:
        self.request({"op": "load", "environment": env.model_dump(mode="json"),
                      "limits": dataclasses.asdict(limits), "state": state})

    def call(self, name: str, arguments: Any) -> CallResult:
        """One call on the loaded state; a limit hit raises :class:`SandboxFailure` (check ``LIMIT_CHECK``)."""
        answer = self.request({"op": "call", "name": name, "arguments": arguments})
        if "limit" in answer:
            raise SandboxFailure(str(answer["limit"]), LIMIT_CHECK)
        return CallResult(ok=bool(answer["ok"]), result=answer.get("result"), error=answer.get("error"),
                          changed=list(answer.get("changed") or []))

    def state(self) -> State:
        return dict(self.request({"op": "state"})["state"])

    def run(self, env: EnvironmentSpec, calls: list[tuple[str, dict[str, Any]]], limits: Limits = DEFAULT_LIMITS,
            stop_on_failure: bool = True) -> Execution:
        """A whole execution from the initial state. A worker failure is the execution's failure."""
        try:
            self.load(env, limits)
            answer = self.request({"op": "run", "calls": [[n, a] for n, a in calls],
                                   "stop_on_failure": stop_on_failure})
        except SandboxFailure as exc:
            return Execution(failure=str(exc), failed_check=exc.check)
        return Execution.model_validate(answer)


def run_sandboxed(env: EnvironmentSpec, calls: list[tuple[str, dict[str, Any]]], limits: Limits = DEFAULT_LIMITS,
                  sandbox: SandboxLimits = DEFAULT_SANDBOX, stop_on_failure: bool = True) -> Execution:
    """One execution in a fresh worker (see :meth:`SandboxSession.run`)."""
    with SandboxSession(sandbox) as session:
        return session.run(env, calls, limits, stop_on_failure)
