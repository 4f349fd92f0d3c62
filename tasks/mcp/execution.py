"""Executed tool turns: a dialog's call of an imported MCP tool answered by really calling it (``tools/call``).

Each call runs in a sandbox: :mod:`tasks.mcp.sandbox_worker` in a subprocess of its own, in a fresh working folder
(removed afterwards; also the server's ``HOME`` and ``TMPDIR``), in a process group of its own, with an address-space
limit (``memory_mb``) and a CPU-time limit set by ``setrlimit`` before it starts, a time limit on the call and a
deadline on the whole, after which the group is killed; a stdio server is started inside it (so under the same
limits) and stopped after the call. Without ``network`` the worker and its server have no network (a network
namespace of their own); a streamable-HTTP server is called only when it is on this machine's loopback or
``network`` is on. The server sees only the SDK's default environment (no keys of ours).

Which tools run is :func:`execution_refusal`: only MCP tools with a server to call, ``read_only`` runs the tools
that say they are read-only, ``all`` every tool, and a destructive tool (MCP's default for a tool that is not
read-only and does not say otherwise) only when ``destructive_tools`` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from jsonschema.exceptions import best_match
from jsonschema.validators import Draft202012Validator, validator_for
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import APISpec

EXECUTION_CHECK = "tool_execution_v1"
OUTPUT_SCHEMA_CHECK = "tool_output_schema_v1"
DEADLINE_GRACE_S = 15.0  # beyond start + call time limits: the worker's own shutdown of its server is bounded too
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


class ExecutionPolicy(BaseModel):
    """Which tool calls are executed, and the sandbox's limits (from the run config)."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["none", "read_only", "all"] = "none"
    destructive_tools: tuple[str, ...] = Field((), description="Destructive tools that may still be executed")
    network: bool = False
    time_limit_s: float = Field(30.0, gt=0)
    start_timeout_s: float = Field(30.0, gt=0)
    memory_mb: int = Field(2048, ge=64)

    @classmethod
    def from_config(cls, config: Any) -> ExecutionPolicy | None:
        """The policy of a run config (``execute_*`` options); None when nothing is executed."""
        if getattr(config, "execute_tools", "none") == "none":
            return None
        return cls(mode=config.execute_tools, destructive_tools=tuple(config.execute_destructive_tools),
                   network=config.execute_network, time_limit_s=config.execute_time_limit_s,
                   memory_mb=config.execute_memory_mb)


@dataclass
class ToolRun:
    """One executed call: its result (as the tool turn's content), how long it took, and why it failed."""

    result: Any
    duration_s: float
    error: str | None = None
    check: str | None = None


def _is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in _LOOPBACK


def execution_refusal(api: APISpec, policy: ExecutionPolicy) -> str | None:
    """Why a call of ``api`` is simulated rather than executed under ``policy``; None when it is executed."""
    provenance = api.mcp_provenance()
    if provenance is None:
        return "not an MCP tool"
    if policy.mode == "none":
        return "execute_tools is none"
    if provenance.transport == "file" or not (provenance.command or provenance.url):
        return "imported from a saved tools/list: no server to call"
    if provenance.destructive and api.name not in policy.destructive_tools:
        return "destructive, and not named in execute_destructive_tools"
    if policy.mode == "read_only" and not provenance.read_only:
        return "not marked read-only (execute_tools is read_only)"
    if provenance.url and not policy.network and not _is_loopback(provenance.url):
        return "its server is on the network (execute_network is off)"
    return None


def _limits(memory_bytes: int, cpu_s: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec: system calls only
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def result_value(result: dict[str, Any]) -> Any:
    """A CallToolResult (wire JSON) as the tool turn's value: its structured content, else its text (parsed when it
    is a JSON object, else ``{"text": ...}``), else its content blocks."""
    if result.get("structuredContent") is not None:
        return result["structuredContent"]
    blocks = result.get("content") or []
    texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    if texts and len(texts) == len(blocks):
        text = "\n".join(texts)
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                return value
        return {"text": text}
    return {"content": blocks}


def output_problem(api: APISpec, value: Any) -> str | None:
    """How an executed result breaks the tool's declared outputSchema, or None."""
    provenance = api.mcp_provenance()
    if provenance is None or provenance.result_schema != "declared":
        return None
    schema = api.result_schema
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"the result breaks its outputSchema: {error.message}" + (f" (at {where})" if where else "")


class MCPToolExecutor:
    """The dialog generator's tool executor (:class:`tasks.dialogs.generation.ToolExecutor`) for MCP tools."""

    def __init__(self, policy: ExecutionPolicy) -> None:
        self.policy = policy

    def executes(self, api: APISpec) -> bool:
        return execution_refusal(api, self.policy) is None

    async def execute(self, api: APISpec, arguments: dict[str, Any]) -> ToolRun:
        provenance = api.mcp_provenance()
        assert provenance is not None, "execute() is called for the tools executes() accepts"
        workdir = tempfile.mkdtemp(prefix="toolace-mcp-")
        request = {"command": provenance.command, "url": provenance.url, "tool": provenance.tool_name or api.name,
                   "arguments": arguments, "time_limit_s": self.policy.time_limit_s,
                   "start_timeout_s": self.policy.start_timeout_s,
                   "isolate_network": bool(provenance.command) and not self.policy.network,
                   "env": {"HOME": workdir, "TMPDIR": workdir}}
        started = time.perf_counter()
        try:
            answer = await self._run_worker(request, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        elapsed = round(time.perf_counter() - started, 3)
        duration = float(answer.get("duration_s") or elapsed)
        where = f"{api.name} on {provenance.server_name}"
        if not answer.get("ok"):
            check = OUTPUT_SCHEMA_CHECK if answer.get("kind") == "output_schema" else EXECUTION_CHECK
            error = str(answer.get("error") or "the call failed")
            return ToolRun(result={"error": error}, duration_s=duration, error=f"{where}: {error}", check=check)
        raw = answer.get("result") or {}
        value = result_value(raw)
        if raw.get("isError"):
            text = value.get("text") if isinstance(value, dict) else None
            error = f"{where}: the tool answered with an error: {text or json.dumps(value)[:300]}"
            return ToolRun(result=value, duration_s=duration, error=error, check=EXECUTION_CHECK)
        if problem := output_problem(api, value):
            return ToolRun(result=value, duration_s=duration, error=f"{where}: {problem}", check=OUTPUT_SCHEMA_CHECK)
        return ToolRun(result=value, duration_s=duration)

    async def _run_worker(self, request: dict[str, Any], workdir: str) -> dict[str, Any]:
        policy = self.policy
        deadline = policy.start_timeout_s + policy.time_limit_s + DEADLINE_GRACE_S
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "TMPDIR": workdir,
               "LANG": os.environ.get("LANG", "C.UTF-8"), "PYTHONPATH": _PROJECT_ROOT}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tasks.mcp.sandbox_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=workdir, env=env,
            start_new_session=True, preexec_fn=_limits(policy.memory_mb * 1024 * 1024, math.ceil(deadline)))
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), deadline)
        except TimeoutError:
            return {"ok": False, "kind": "timeout", "error": f"the sandbox did not finish within {deadline:g} s"}
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever the worker left in its group
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(process.wait(), 5)
        lines = [line for line in stdout.decode("utf-8", "replace").splitlines() if line.strip()]
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            tail = " | ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-3:])[-400:]
            code = process.returncode
            why = "was killed (memory or CPU limit?)" if code is not None and code < 0 else f"exited with {code}"
            return {"ok": False, "kind": "sandbox", "error": f"the sandbox {why} without an answer" +
                    (f"; its stderr ends: {tail}" if tail else "")}
        return answer
