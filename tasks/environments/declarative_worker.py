"""The subprocess that executes synthesised environments: ``python -m tasks.environments.declarative_worker``.

It caps its own address space (``--memory-mb``, ``RLIMIT_AS``) and CPU time (``--cpu-s``, ``RLIMIT_CPU``) before
reading anything, then answers JSON requests, one per line on stdin, with one JSON line each on stdout:

* ``{"op": "load", "environment": {...}, "limits": {...}, "state": {...} | null}``: the environment to execute
  (``state`` null: its initial state); answers ``{"loaded": env_id}``;
* ``{"op": "call", "name": ..., "arguments": {...}}``: one call on the loaded state; answers the call's result
  (``ok``, ``result``, ``error``, ``changed``) or ``{"limit": reason}`` (the state is kept as it was);
* ``{"op": "run", "calls": [[name, arguments], ...], "stop_on_failure": bool}``: a whole execution from the
  loaded environment's initial state (or the loaded state); answers the :class:`Execution`;
* ``{"op": "state"}``: answers ``{"state": ...}``.

A request it cannot read or serve answers ``{"fatal": reason}``; a ``MemoryError`` is answered the same way
when there is memory left to write it, else the process dies and the parent names the exit status. The parent
(:mod:`tasks.environments.declarative_sandbox`) kills it at a wall-clock deadline.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any


def _cap(memory_mb: int, cpu_s: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_s > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def serve(lines: Any, out: Any) -> None:
    from tasks.environments.declarative import EnvironmentSpec, Interpreter, LimitExceeded, Limits, run_calls

    env: EnvironmentSpec | None = None
    limits = Limits()
    start: Any = None
    interpreter: Interpreter | None = None
    for line in lines:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "load":
                env = EnvironmentSpec.model_validate(request["environment"])
                limits = Limits(**(request.get("limits") or {}))
                start = request.get("state")
                interpreter = Interpreter(env, limits, start)
                answer: dict[str, Any] = {"loaded": env.env_id}
            elif env is None or interpreter is None:
                answer = {"fatal": "no environment loaded"}
            elif op == "call":
                try:
                    outcome = interpreter.call(str(request.get("name")), request.get("arguments"))
                    answer = {"ok": outcome.ok, "result": outcome.result, "error": outcome.error,
                              "changed": outcome.changed}
                except LimitExceeded as exc:
                    answer = {"limit": str(exc)}
            elif op == "run":
                calls = [(str(name), arguments) for name, arguments in request.get("calls") or []]
                execution = run_calls(env, calls, limits, bool(request.get("stop_on_failure", True)), start)
                answer = execution.model_dump(mode="json")
            elif op == "state":
                answer = {"state": interpreter.state}
            else:
                answer = {"fatal": f"unknown op {op!r}"}
        except MemoryError:
            answer = {"fatal": "the worker ran out of memory (MemoryError)"}
        except Exception as exc:  # a bad request is answered, never a crash of the loop
            answer = {"fatal": f"{type(exc).__name__}: {str(exc)[:300]}"}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--cpu-s", type=int, default=30)
    args = parser.parse_args(argv)
    _cap(args.memory_mb, args.cpu_s)
    serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
