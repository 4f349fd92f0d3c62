"""The sandboxed side of an MCP environment: a handler of :mod:`tasks.environments.sandbox`'s worker that holds one
MCP server session at a time.

The parent (:class:`tasks.environments.mcp_environments.McpSession`) starts
``python -m tasks.environments.sandbox --handler tasks.environments.mcp_worker:McpSessionHandler``: a worker in a
folder of its own, with its address space, CPU time and file sizes limited, a minimal environment and a wall-clock
deadline on every request (the worker's process group is killed past it). Requests:

* ``{"op": "start", ...}``: a fresh execution. The server running (if any) is stopped; a new folder
  ``execution-N/`` gets a copy of the fixture (``workspace/``) and a home of its own (``home/``, the server's
  ``HOME`` and ``TMPDIR``); the server is started in ``workspace/`` with ``{workspace}`` in its command line and
  variables replaced by that folder's path, initialised (and its tools listed when asked), all within
  ``start_timeout_s``. Without ``network`` the worker first leaves the machine's network for good (a network
  namespace of its own, :func:`tasks.mcp.sandbox_worker.isolate_network`), before any thread starts: the servers it
  starts have no network. Answers ``{"server": {...}, "tools": [...]}``.
* ``{"op": "call", "name": ..., "arguments": {...}, "timeout_s": ...}``: one ``tools/call`` within ``timeout_s``.
  Strings of the arguments naming the workspace as the model sees it (``/workspace``...) name the real folder;
  strings of the result naming the real folder name the model's. Answers ``{"result": CallToolResult}``, or
  ``{"error": ...}`` for a call the server refused at the protocol level (an unknown tool, invalid parameters).
* ``{"op": "stop"}``: the server is stopped (the SDK closes its stdin, then terminates its process group).

A server that cannot be started, closes the connection, hangs past a deadline or breaks the protocol is answered
``{"failed": reason}`` (the reason names the server, what it was doing and the end of its stderr; ``kind`` is
``sandbox`` when the sandbox could not be made, ``fixture`` when the fixture could not be copied); the parent
rejects the execution with it. Nothing here runs anything the model wrote: calls are data sent to the server.

The session lives on an event loop in a daemon thread (an anyio blocking portal), so the handler's synchronous
``handle`` can hold it across requests and a worker told to close never waits on it.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

START_GRACE_S = 10.0  # beyond start_timeout_s, for the SDK's own bounded shutdown of a server that did not start
STOP_TIMEOUT_S = 10.0


def replace_paths(value: Any, old: str, new: str, whole: bool) -> Any:
    """``value`` with every string naming ``old`` naming ``new`` instead: with ``whole``, a string that is ``old``
    or starts with ``old/`` (an argument that is a path); else every occurrence within a string (a result's
    text)."""
    if isinstance(value, str):
        if whole:
            return new + value[len(old):] if value == old or value.startswith(old.rstrip("/") + "/") else value
        return value.replace(old, new)
    if isinstance(value, list):
        return [replace_paths(v, old, new, whole) for v in value]
    if isinstance(value, dict):
        return {k: replace_paths(v, old, new, whole) for k, v in value.items()}
    return value


class McpSessionHandler:
    """One MCP server session at a time (see the module docstring)."""

    def __init__(self) -> None:
        self._portal: Any = None
        self._executions = 0
        self._isolated = False
        self._network: bool | None = None
        self._box: dict[str, Any] = {}
        self._hold_future: Future[None] | None = None
        self._errlog: IO[str] | None = None
        self._target: Any = None
        self._phase: Any = None
        self._real = ""
        self._alias = ""

    # ---- the event loop

    def _ensure_portal(self) -> Any:
        if self._portal is not None:
            return self._portal
        import anyio
        from anyio.from_thread import BlockingPortal

        handed: queue.Queue[Any] = queue.Queue()

        def run() -> None:
            async def main() -> None:
                async with BlockingPortal() as portal:
                    handed.put(portal)
                    await portal.sleep_until_stopped()

            anyio.run(main)

        threading.Thread(target=run, name="mcp-session-loop", daemon=True).start()
        self._portal = handed.get(timeout=30)
        return self._portal

    async def _hold(self, list_tools: bool, start_timeout_s: float, ready: threading.Event) -> None:
        """Start the server, initialise (list its tools), signal ``ready`` and keep the session until cancelled."""
        import anyio

        from tasks.mcp.client import list_all_tools, open_session

        scope = anyio.CancelScope(deadline=anyio.current_time() + start_timeout_s)
        self._box["scope"] = scope
        with scope:
            async with open_session(self._target, self._errlog, self._phase) as (session, info):
                tools = (await list_all_tools(session, self._phase))[0] if list_tools else []
                scope.deadline = math.inf
                self._box.update(session=session, info=info, tools=tools)
                self._phase.now = "serving"
                ready.set()
                await anyio.sleep_forever()
        if not ready.is_set():
            raise TimeoutError(f"no answer within {start_timeout_s:g} s")

    # ---- requests

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "start":
            return self._start(request)
        if op == "call":
            return self._call(request)
        if op == "stop":
            self._stop()
            return {"stopped": True}
        raise ValueError(f"unknown op {op!r}")

    def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        network = bool(request.get("network"))
        if self._network is not None and network != self._network:
            raise ValueError("a worker's network setting cannot change between executions")
        self._network = network
        if not network and not self._isolated:
            from tasks.mcp.sandbox_worker import isolate_network

            if self._portal is not None:
                raise RuntimeError("the network must be left before the first session starts")
            try:
                isolate_network()
            except OSError as exc:
                return {"failed": f"no network isolation is possible here ({exc}); the server was not started",
                        "kind": "sandbox"}
            self._isolated = True
        from tasks.mcp.client import ServerTarget, _Phase  # the SDK, imported once the network is left

        self._stop()
        self._executions += 1
        base = Path.cwd() / f"execution-{self._executions}"
        previous = Path.cwd() / f"execution-{self._executions - 1}"
        shutil.rmtree(previous, ignore_errors=True)
        workspace, home = base / "workspace", base / "home"
        home.mkdir(parents=True)
        fixture = request.get("fixture")
        try:
            if fixture:
                shutil.copytree(fixture, workspace, symlinks=True)
            else:
                workspace.mkdir()
        except OSError as exc:
            return {"failed": f"the fixture {fixture} could not be copied: {exc}", "kind": "fixture"}
        real = str(workspace)
        self._real, self._alias = real, str(request.get("workspace") or "/workspace")

        def placed(text: str) -> str:
            return str(text).replace("{workspace}", real)

        env = {"HOME": str(home), "TMPDIR": str(home),
               **{str(k): placed(v) for k, v in (request.get("env") or {}).items()}}
        command = tuple(placed(part) for part in request.get("command") or ())
        if not command:
            return {"failed": "no command to start the server"}
        self._target = ServerTarget(command=command, env=tuple(env.items()), cwd=real)
        self._phase = _Phase()
        self._errlog = (base / "server-stderr.txt").open("w+", encoding="utf-8", errors="replace")
        self._box = {}
        start_timeout_s = float(request.get("start_timeout_s") or 20.0)
        ready = threading.Event()
        portal = self._ensure_portal()
        future: Future[None] = portal.start_task_soon(self._hold, bool(request.get("list_tools")), start_timeout_s,
                                                      ready)
        self._hold_future = future
        deadline = time.monotonic() + start_timeout_s + START_GRACE_S
        while not ready.wait(0.02):
            if future.done() or time.monotonic() > deadline:
                break
        if not ready.is_set():
            return {"failed": self._failure(future, start_timeout_s)}
        info = self._box["info"]
        return {"server": {"name": info.name, "version": info.version, "protocol_version": info.protocol_version},
                "tools": self._box.get("tools") or []}

    def _describe(self, exc: BaseException, timeout_s: float) -> str:
        """:func:`tasks.mcp.client.describe_failure`, on the event loop (it reads anyio's cancellation class)."""
        from tasks.mcp.client import describe_failure

        return str(self._portal.call(describe_failure, self._target, exc, self._phase.now, timeout_s, self._errlog))

    def _failure(self, future: Future[None], timeout_s: float) -> str:
        """The one line describing why the session ended (or never started)."""
        if not future.done():
            self._cancel()
            return f"{self._target.label} did not answer within {timeout_s:g} s (during {self._phase.now})"
        return self._describe(future.exception() or RuntimeError("the session ended"), timeout_s)

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        import anyio
        from mcp import types as mcp_types
        from mcp.shared.exceptions import MCPError

        from tasks.mcp.client import wire

        session, future = self._box.get("session"), self._hold_future
        if session is None or future is None:
            return {"failed": "no MCP server is running (start first)"}
        if future.done():
            return {"failed": self._failure(future, 0)}
        name = str(request.get("name"))
        arguments = replace_paths(request.get("arguments") or {}, self._alias, self._real, whole=True)
        timeout_s = float(request.get("timeout_s") or 10.0)
        self._phase.now = f"tools/call {name}"

        async def call() -> dict[str, Any]:
            with anyio.fail_after(timeout_s):
                return wire(await session.call_tool(name, arguments))

        try:
            raw = self._portal.call(call)
        except TimeoutError:
            return {"failed": f"{self._target.label} did not answer {name} within {timeout_s:g} s"}
        except MCPError as exc:
            if getattr(exc, "code", None) == mcp_types.CONNECTION_CLOSED or future.done():
                return {"failed": self._describe(exc, timeout_s)}
            return {"error": str(exc) or f"error {getattr(exc, 'code', '?')}"}
        except RuntimeError as exc:  # the SDK checks structured content against the tool's outputSchema
            if future.done():
                return {"failed": self._describe(exc, timeout_s)}
            return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        except Exception as exc:  # a closed stream, a dead server: the session is over
            return {"failed": self._describe(exc, timeout_s)}
        finally:
            self._phase.now = "serving"
        result = replace_paths(raw, self._real, self._alias, whole=False)
        resolved = os.path.realpath(self._real)
        if resolved != self._real:  # a server that resolves symbolic links names the folder so
            result = replace_paths(result, resolved, self._alias, whole=False)
        return {"result": result}

    # ---- stopping

    def _cancel(self) -> None:
        scope = self._box.get("scope")
        if scope is not None and self._portal is not None:
            self._portal.call(scope.cancel)

    def _stop(self) -> None:
        future, self._hold_future = self._hold_future, None
        if future is not None:
            self._cancel()
            try:
                future.result(timeout=STOP_TIMEOUT_S)
            except Exception:  # a session that failed (or would not stop in time) has nothing more to say here
                pass
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None
        self._box = {}
