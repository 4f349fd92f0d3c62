"""The sandboxed side of one executed MCP tool call: ``python -m tasks.mcp.sandbox_worker`` reads a request (JSON)
on stdin and writes one answer (JSON) on stdout.

:mod:`tasks.mcp.execution` starts it in a fresh working folder, in a process group of its own, with its memory
(address space) and CPU time limited by ``setrlimit``; a stdio MCP server it starts inherits all of that. Before it
imports anything that could start a thread, it leaves the machine's network (a new network namespace, inside a new
user namespace where it is not root already): the server it starts then has no network interface but a loopback
that is down. If that cannot be done, the call is refused, never made with the network.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from typing import Any

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def isolate_network() -> None:
    """This process (and what it starts) in a network namespace of its own; raises OSError when impossible."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if os.geteuid() == 0 and libc.unshare(CLONE_NEWNET) == 0:
        return
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                       ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as handle:
            handle.write(text)


async def _call(request: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    import anyio

    from tasks.mcp.client import ServerTarget, _Phase, describe_failure, open_session, wire

    target = ServerTarget(command=tuple(request.get("command") or ()), url=request.get("url"),
                          env=tuple((request.get("env") or {}).items()), cwd=os.getcwd())
    start_s, limit_s = float(request["start_timeout_s"]), float(request["time_limit_s"])
    phase = _Phase()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace", dir=os.getcwd()) as errlog:
        try:
            with anyio.fail_after(start_s + limit_s):
                async with open_session(target, errlog, phase) as (session, _):
                    phase.now = f"tools/call {request['tool']}"
                    started = time.perf_counter()
                    try:
                        with anyio.fail_after(limit_s):
                            result = await session.call_tool(request["tool"], request.get("arguments") or {})
                    except TimeoutError:
                        return {"ok": False, "kind": "timeout", "duration_s": round(time.perf_counter() - started, 3),
                                "error": f"the call did not finish within its time limit of {limit_s:g} s"}
                    except RuntimeError as exc:  # the SDK checks structured content against the outputSchema
                        return {"ok": False, "kind": "output_schema", "error": str(exc).splitlines()[0],
                                "duration_s": round(time.perf_counter() - started, 3)}
                    return {"ok": True, "result": wire(result), "duration_s": round(time.perf_counter() - started, 3)}
        except Exception as exc:  # a clear error naming the server, never a traceback
            return {"ok": False, "kind": "server", "error": describe_failure(target, exc, phase.now, start_s, errlog)}
    return {"ok": False, "kind": "server", "error": "no answer"}  # not reached: the block returns


def main() -> None:
    request = json.loads(sys.stdin.read())
    if request.get("isolate_network"):
        try:
            isolate_network()
        except OSError as exc:
            print(json.dumps({"ok": False, "kind": "isolation",
                              "error": f"no network isolation is possible here ({exc}); the call was not made"}))
            return
    import anyio

    print(json.dumps(anyio.run(_call, request), ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
