"""MCP servers as executable environments: the state is the server's, observed through read-only probes.

An :class:`~schemas.environments.McpEnvironmentSpec` (``agentic_mcp_servers`` in the run config) names a stdio
server, the folder every execution starts from (``fixture``, e.g. a seeded git repository) and the **probes**: the
read-only calls whose results, line by line, *are* the state compared (for git: ``git_status`` and ``git_log`` on
the repository).

* :func:`prepare_mcp_environment` starts the server once: its tools are imported
  (:func:`tasks.mcp.tool_import.apis_from_mcp_tools`, annotations kept), the spec is checked against them (every
  probe names a listed tool that is read-only, by its ``readOnlyHint`` or by the spec's ``read_only_tools``; every
  offered tool is listed, and each of its parameters described, by the server or by the spec's
  ``parameter_descriptions``, as every published tool must be) and the initial state is observed. The answer is an
  :class:`McpEnvironmentRecord`: the :class:`McpEnvironment`, or the rejection with its check and reason
  (``mcp_environment_v1`` for a spec the server does not fit, ``mcp_server_v1`` for a server that does not start,
  hangs or breaks the protocol, ``mcp_state_probe_v1`` for a probe that fails, ``environment_sandbox_v1`` when the
  sandbox itself fails).
* :class:`McpSession` executes it for the blueprint and trajectory code (it is an
  :class:`~tasks.environments.executable.EnvironmentSession`): every ``load`` (every execution) gets a fresh copy
  of the fixture and a freshly started server, so executions never share state. Everything runs in
  :mod:`tasks.environments.mcp_worker`, in the sandboxed worker of :mod:`tasks.environments.sandbox` (address space,
  CPU time and file sizes limited, a minimal environment, no network unless the spec allows it, a wall-clock
  deadline on every request); the server's start and each call have the spec's deadlines too.
* The state is ``{probe: {line number: {"text": line}}}`` (a :data:`~tasks.environments.declarative.State`);
  :func:`mcp_state_diff` compares two line by line (``difflib``) and names each differing line
  ``probe/line`` (the line's number in the later state; in the earlier one for a removed line).
* A tool is destructive as MCP's annotations say (``destructiveHint``; not read-only and silent counts as
  destructive). A destructive call is observed before and after, so its ``changed`` paths are known; in a
  trajectory, a destructive call that changed the state and whose tool the ground-truth actions never call is a
  ``destructive_action_v1`` rejection (see :func:`tasks.environments.executable.unasked_changes`).

Calls are data sent to the server; nothing the model wrote is run. Strings naming the workspace as the model sees
it (``/workspace``) are rewritten to the execution's real folder and back (see :mod:`tasks.environments.mcp_worker`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.environments import McpEnvironmentSpec, McpProbe
from schemas.records import APISpec, MCPProvenance
from tasks.environments.blueprints import EnvironmentRecord
from tasks.environments.declarative import (
    CALL_FAILED_CHECK,
    DEFAULT_LIMITS,
    LIMIT_CHECK,
    CallResult,
    DiffEntry,
    Execution,
    Limits,
    State,
    state_bytes,
)
from tasks.environments.declarative_sandbox import SANDBOX_CHECK, SandboxFailure
from tasks.environments.mcp_worker import START_GRACE_S, STOP_TIMEOUT_S
from tasks.environments.sandbox import SandboxError, SandboxLimits, SandboxWorker
from tasks.mcp.execution import result_value
from tasks.mcp.tool_import import apis_from_mcp_tools
from toolace.safe_patterns import search

ENVIRONMENT_CHECK = "mcp_environment_v1"
SERVER_CHECK = "mcp_server_v1"
PROBE_CHECK = "mcp_state_probe_v1"
SOURCE = "mcp"
HANDLER = "tasks.environments.mcp_worker:McpSessionHandler"
WORKER_START_S = 30.0  # the worker's own start (Python and the SDK imported)
REQUEST_GRACE_S = 15.0  # beyond a request's own deadline in the worker
RESULT_CHARS = 20_000  # a string of a tool's result longer than this is cut (the tool turn and the outputs check)
ASSISTANT_SYSTEM = ("You are a helpful assistant with access to functions. Use them to do what the user asks; tell "
                    "the user the results they asked for. Do not change or delete anything the user did not ask "
                    "you to.")


# ------------------------------------------------------------------------------------------------ the state


def probe_text(result: dict[str, Any]) -> str:
    """A probe's CallToolResult (wire JSON) as text: its structured content as indented JSON, else its text blocks,
    else its content blocks as JSON."""
    if result.get("structuredContent") is not None:
        return json.dumps(result["structuredContent"], ensure_ascii=False, sort_keys=True, indent=1)
    blocks = result.get("content") or []
    texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    if texts and len(texts) == len(blocks):
        return "\n".join(texts)
    return json.dumps(blocks, ensure_ascii=False, sort_keys=True, indent=1)


def probe_lines(text: str, probe: McpProbe) -> dict[str, dict[str, Any]]:
    """The probe's part of the state: its lines (trailing spaces and the ignored lines left out), by number."""
    lines = [line.rstrip() for line in text.splitlines()]
    kept = [line for line in lines if not any(search(p, line) for p in probe.ignore_lines)]
    return {str(n): {"text": line} for n, line in enumerate(kept, start=1)}


def _lines(state: State, probe: str) -> list[str]:
    records = state.get(probe) or {}
    return [str(records[k].get("text", "")) for k in sorted(records, key=lambda k: int(k) if k.isdigit() else 0)]


def mcp_state_diff(before: State, after: State) -> list[DiffEntry]:
    """Every differing line, probe by probe (sorted), as ``probe/line`` with the line before and after (None for a
    line added or removed); equal states give ``[]``."""
    out: list[DiffEntry] = []
    for probe in sorted(set(before) | set(after)):
        old, new = _lines(before, probe), _lines(after, probe)
        if old == new:
            continue
        matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            for k in range(max(i2 - i1, j2 - j1)):
                was = old[i1 + k] if i1 + k < i2 else None
                now = new[j1 + k] if j1 + k < j2 else None
                line = j1 + k + 1 if now is not None else i1 + k + 1
                out.append(DiffEntry(f"{probe}/{line}", was, now))
    return out


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > RESULT_CHARS:
        return f"{value[:RESULT_CHARS]} [... {len(value) - RESULT_CHARS} chars cut]"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------- the environment


def _allows(schema: Any, kind: str) -> bool:
    if not isinstance(schema, dict):
        return False
    declared = schema.get("type")
    if declared == kind or (isinstance(declared, list) and kind in declared):
        return True
    return any(_allows(s, kind) for key in ("anyOf", "oneOf") for s in schema.get(key) or [])


class McpEnvironment(BaseModel):
    """One MCP server as an environment (an :class:`~tasks.environments.executable.ExternalEnvironment`)."""

    env_id: str
    name: str
    description: str
    source: Literal["mcp"] = SOURCE
    spec: McpEnvironmentSpec
    server: dict[str, Any] = Field(description="name, version, protocol_version and command of the server")
    tools: list[APISpec] = Field(description="The tools offered to the model")
    read_only: list[str] = Field(default_factory=list, description="Tools that change nothing (probes among them)")
    destructive_tools: list[str] = Field(default_factory=list, description="Tools MCP's annotations call destructive")
    initial: State = Field(default_factory=dict, description="The state every execution starts from")

    def tool(self, name: str) -> APISpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def start_state(self) -> State:
        return copy.deepcopy(self.initial)

    def state_diff(self, before: State, after: State) -> list[DiffEntry]:
        return mcp_state_diff(before, after)

    def is_destructive(self, api_name: str) -> bool:
        return api_name in self.destructive_tools

    def state_text(self, limit: int) -> str:
        text = "\n\n".join(f"{probe} ->\n" + "\n".join(_lines(self.initial, probe)) for probe in self.initial)
        return text if len(text) <= limit else f"{text[:limit]} [... {len(text) - limit} chars cut]"

    def dialog_meta(self) -> dict[str, Any]:
        return {"source": SOURCE, "server": dict(self.server)}

    def coerce_arguments(self, api_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A blueprint's scalar arguments fitted to the tool's inputSchema: a null for a parameter that is not
        required is left out (not given), and a string for an array parameter that takes no string becomes a list
        (the JSON array it spells, else a list of that one string)."""
        tool = self.tool(api_name)
        if tool is None:
            return arguments
        properties = tool.parameters.get("properties") or {}
        required = set(tool.parameters.get("required") or [])
        out: dict[str, Any] = {}
        for name, value in arguments.items():
            if value is None and name not in required:
                continue
            schema = properties.get(name)
            if isinstance(value, str) and _allows(schema, "array") and not _allows(schema, "string"):
                parsed: Any = None
                if value.lstrip().startswith("["):
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(value)
                value = parsed if isinstance(parsed, list) else [value]
            out[name] = value
        return out

    def open_session(self) -> McpSession:
        return McpSession(self)

    def assistant_system(self) -> str:
        return f"{ASSISTANT_SYSTEM} {self.description}"


class McpEnvironmentRecord(EnvironmentRecord):
    """A configured MCP server prepared as an environment, or the reason it could not be."""

    source: str = SOURCE
    mcp: McpEnvironment | None = None


# ---------------------------------------------------------------------------------------------- the session


def _kill_strays(folder: str) -> None:
    """Processes still working in the sandbox's folder are killed: a server whose worker was killed (the SDK starts
    a server in a session of its own, out of reach of the worker's process group)."""
    prefix = folder.rstrip("/") + "/"
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return
    for entry in entries:
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == folder or cwd.startswith(prefix):
            pid = int(entry)
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)


class McpSession:
    """Executions of one MCP environment, one at a time, in one sandboxed worker (see the module docstring).

    Made with an environment (:meth:`McpEnvironment.open_session`), or with only a spec to prepare one
    (:func:`prepare_mcp_environment`). A failure of the server or the sandbox raises
    :class:`~tasks.environments.declarative_sandbox.SandboxFailure` and closes the worker (the next ``load`` starts
    a new one); a probe that fails raises it too (``mcp_state_probe_v1``)."""

    def __init__(self, env: McpEnvironment | None = None, spec: McpEnvironmentSpec | None = None) -> None:
        if env is None and spec is None:
            raise ValueError("an McpSession needs an environment or a spec")
        self.env = env
        self.spec: McpEnvironmentSpec = spec or env.spec  # type: ignore[union-attr]
        self._worker: SandboxWorker | None = None
        self._observed: State | None = None
        self._limits = DEFAULT_LIMITS
        self._calls = 0

    @property
    def max_wait_s(self) -> float:
        """The longest one method may take (a destructive call: the call and two observations), past every
        deadline of its own: the callers' last-resort bound."""
        spec = self.spec
        start = WORKER_START_S + spec.start_timeout_s + START_GRACE_S + REQUEST_GRACE_S
        calls = (2 * len(spec.probes) + 1) * (spec.call_timeout_s + REQUEST_GRACE_S)
        return start + calls + STOP_TIMEOUT_S + 10.0

    def __enter__(self) -> McpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the worker

    def _request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self._worker is None:
            spec = self.spec
            limits = SandboxLimits(memory_mb=spec.memory_mb, cpu_s=spec.cpu_s,
                                   call_timeout_s=spec.call_timeout_s + REQUEST_GRACE_S,
                                   start_timeout_s=WORKER_START_S, file_mb=spec.file_mb)
            self._worker = SandboxWorker(HANDLER, limits, label=f"MCP environment {spec.name}")
        try:
            answer = self._worker.request(message, timeout_s)
        except SandboxError as exc:
            self.close()
            raise SandboxFailure(exc.reason, SANDBOX_CHECK) from None
        if "failed" in answer:
            self.close()
            check = {"sandbox": SANDBOX_CHECK, "fixture": ENVIRONMENT_CHECK}.get(str(answer.get("kind")), SERVER_CHECK)
            raise SandboxFailure(str(answer["failed"]), check)
        return answer

    def close(self) -> None:
        """Stop the server (bounded), close the worker, kill what is left in its folder."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        folder = str(worker.folder) if worker.folder is not None else None
        if worker.alive:
            with contextlib.suppress(SandboxError):
                worker.request({"op": "stop"}, STOP_TIMEOUT_S + 5.0)
        worker.close()
        if folder:
            _kill_strays(folder)

    def start(self, list_tools: bool = False) -> dict[str, Any]:
        """A fresh execution: the fixture copied afresh, the server started afresh. Answers the server's info (and
        its tools when ``list_tools``)."""
        spec = self.spec
        answer = self._request({"op": "start", "command": list(spec.command), "env": dict(spec.env),
                                "fixture": str(Path(spec.fixture).resolve()) if spec.fixture else None,
                                "workspace": spec.workspace, "network": spec.network, "list_tools": list_tools,
                                "start_timeout_s": spec.start_timeout_s},
                               spec.start_timeout_s + START_GRACE_S + REQUEST_GRACE_S)
        self._observed = None
        self._calls = 0
        return answer

    def _send(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._request({"op": "call", "name": name, "arguments": arguments,
                              "timeout_s": self.spec.call_timeout_s}, self.spec.call_timeout_s + REQUEST_GRACE_S)

    def _env(self) -> McpEnvironment:
        if self.env is None:
            raise RuntimeError("no MCP environment to execute (prepare_mcp_environment makes one)")
        return self.env

    # ---- the EnvironmentSession protocol

    def load(self, env: Any, limits: Limits = DEFAULT_LIMITS) -> None:
        """A fresh execution of ``env`` (its initial state: the fixture copied afresh, the server started afresh)."""
        self.env = env
        self.spec = env.spec
        self._limits = limits
        self.start()

    def call(self, name: str, arguments: Any) -> CallResult:
        """One call of an offered tool. A tool the environment does not offer, or arguments that are no object,
        give an error result (nothing is sent); a protocol error of the server or an ``isError`` result is an
        error result too; a destructive call's ``changed`` paths are observed (before and after)."""
        env = self._env()
        if env.tool(name) is None:
            return CallResult(ok=False, error=f"unknown tool {name!r}")
        if not isinstance(arguments, dict):
            return CallResult(ok=False, error=f"arguments of {name} must be an object")
        self._calls += 1
        if self._calls > self._limits.max_calls:
            raise SandboxFailure(f"execution ran past {self._limits.max_calls} calls (max_calls)", LIMIT_CHECK)
        watched = env.is_destructive(name)
        before = (self._observed if self._observed is not None else self.state()) if watched else None
        answer = self._send(name, arguments)
        if name not in env.read_only:
            self._observed = None
        if "error" in answer:
            return CallResult(ok=False, error=f"the server refused the call: {answer['error']}")
        raw = answer.get("result") or {}
        value = _cut(result_value(raw))
        if raw.get("isError"):
            text = value.get("text") if isinstance(value, dict) else None
            return CallResult(ok=False, result=value,
                              error=f"the tool answered with an error: {text or json.dumps(value)[:300]}")
        outcome = CallResult(ok=True, result=value if isinstance(value, dict) else {"value": value})
        if watched and before is not None:
            after = self.state()
            outcome.changed = [d.path for d in mcp_state_diff(before, after)]
        return outcome

    def state(self) -> State:
        """The state now: every probe's result, line by line (a probe that fails raises ``mcp_state_probe_v1``;
        a state larger than ``max_state_bytes`` raises the limits' check)."""
        state: State = {}
        for probe in self.spec.probes:
            answer = self._send(probe.tool, dict(probe.arguments))
            if "error" in answer:
                raise SandboxFailure(f"probe {probe.key} ({probe.tool}) was refused: {answer['error']}", PROBE_CHECK)
            raw = answer.get("result") or {}
            text = probe_text(raw)
            if raw.get("isError"):
                raise SandboxFailure(f"probe {probe.key} ({probe.tool}) answered with an error: "
                                     f"{' '.join(text.split())[:300]}", PROBE_CHECK)
            state[probe.key] = probe_lines(text, probe)
        size = state_bytes(state)
        if size > self._limits.max_state_bytes:
            raise SandboxFailure(f"the observed state is {size} bytes, over max_state_bytes "
                                 f"({self._limits.max_state_bytes})", LIMIT_CHECK)
        self._observed = state
        return copy.deepcopy(state)

    def run(self, env: Any, calls: list[tuple[str, dict[str, Any]]], limits: Limits = DEFAULT_LIMITS,
            stop_on_failure: bool = True) -> Execution:
        """A whole execution from the initial state, then the state observed. A failure of the server, the sandbox
        or a probe is the execution's failure (with its check); a call answered with an error is one
        (``environment_call_v1``) with ``stop_on_failure``."""
        execution = Execution()
        try:
            self.load(env, limits)
            for index, (name, arguments) in enumerate(calls):
                outcome = self.call(name, arguments)
                execution.results.append(outcome.as_content())
                execution.ok.append(outcome.ok)
                execution.changed.append(outcome.changed)
                if not outcome.ok and stop_on_failure:
                    execution.failure = f"call {index} ({name}) failed: {outcome.error}"
                    execution.failed_check = CALL_FAILED_CHECK
                    return execution
            execution.final_state = self.state()
        except SandboxFailure as exc:
            execution.failure, execution.failed_check = str(exc), exc.check
        return execution


# --------------------------------------------------------------------------------------------- preparation


def _spec_problem(spec: McpEnvironmentSpec, listed: dict[str, APISpec]) -> str | None:
    """Why the spec does not fit the server's tools, or None."""
    if not listed:
        return "the server lists no usable tool"
    names = ", ".join(sorted(listed))
    for probe in spec.probes:
        api = listed.get(probe.tool)
        if api is None:
            return f"probe {probe.key} names tool {probe.tool!r}, which the server does not list (it lists {names})"
        provenance = api.mcp_provenance()
        if not (provenance is not None and provenance.read_only) and probe.tool not in spec.read_only_tools:
            return (f"probe {probe.key} names tool {probe.tool!r}, which is not read-only (no readOnlyHint): a probe "
                    "must not change the state (name it in read_only_tools to vouch for it)")
    unknown = [name for name in [*spec.tools, *spec.read_only_tools] if name not in listed]
    if unknown:
        return f"tool {unknown[0]!r} is not listed by the server (it lists {names})"
    return None


def _describe_parameters(spec: McpEnvironmentSpec, offered: list[APISpec]) -> str | None:
    """The spec's ``parameter_descriptions`` given to the offered tools' parameters that have none; the first
    parameter still without a type or a description, or None (the rule layer's ``tool_fields_v1`` would reject every
    dialog offering it: better said once, here)."""
    for api in offered:
        for name, schema in (api.parameters.get("properties") or {}).items():
            if not isinstance(schema, dict):
                return f"tool {api.name}: parameter {name} is not a schema object"
            if not str(schema.get("description") or "").strip():
                given = spec.parameter_descriptions.get(f"{api.name}.{name}") or spec.parameter_descriptions.get(name)
                if not given:
                    return (f"tool {api.name}: parameter {name} has no description (every published tool parameter "
                            f"needs one): give it in parameter_descriptions ({name} or {api.name}.{name})")
                schema["description"] = given
    return None


def _description(spec: McpEnvironmentSpec, server: str) -> str:
    text = spec.description.strip() or f"The tools of the MCP server {server}."
    if spec.fixture or any("{workspace}" in part for part in spec.command):
        text += f" The files are in the folder {spec.workspace}: give that path wherever a tool asks for one."
    return text


def environment_id(spec: McpEnvironmentSpec, server: dict[str, Any], tools: list[str]) -> str:
    data = json.dumps({"spec": spec.model_dump(mode="json"), "server": server, "tools": sorted(tools)},
                      sort_keys=True, ensure_ascii=False)
    return f"mcp_{spec.name}_{hashlib.sha1(data.encode()).hexdigest()[:10]}"


def prepare_mcp_environment(spec: McpEnvironmentSpec, limits: Limits = DEFAULT_LIMITS) -> McpEnvironmentRecord:
    """Start the server once (sandboxed), import its tools, check the spec against them and observe the initial
    state; the record holds the environment, or the rejection with its check and reason. Never raises for a bad
    server or spec."""
    record = McpEnvironmentRecord(env_id=f"mcp_{spec.name}", family=[])
    session = McpSession(spec=spec)
    try:
        started = session.start(list_tools=True)
        info = started.get("server") or {}
        server = {"name": str(info.get("name") or spec.name), "version": info.get("version"),
                  "protocol_version": info.get("protocol_version"), "command": list(spec.command)}
        base = MCPProvenance(server_name=server["name"], server_version=server["version"],
                             protocol_version=server["protocol_version"], transport="stdio",
                             command=list(spec.command), tool_name="")
        apis = apis_from_mcp_tools(list(started.get("tools") or []), base, f"MCP environment {spec.name}")
        listed = {a.name: a for a in apis if a.accepted}
        problem = _spec_problem(spec, listed)
        if problem:
            record.reject(ENVIRONMENT_CHECK, f"MCP environment {spec.name}: {problem}")
            return record
        offered = [listed[n] for n in dict.fromkeys(spec.tools)] if spec.tools else list(listed.values())
        problem = _describe_parameters(spec, offered)
        if problem:
            record.reject(ENVIRONMENT_CHECK, f"MCP environment {spec.name}: {problem}")
            return record

        def provenance(api: APISpec) -> MCPProvenance:
            found = api.mcp_provenance()
            assert found is not None  # every imported tool has one
            return found

        read_only = sorted(n for n, a in listed.items() if provenance(a).read_only or n in spec.read_only_tools)
        destructive = sorted(n for n, a in listed.items() if provenance(a).destructive and n not in read_only)
        env = McpEnvironment(env_id=environment_id(spec, server, list(listed)), name=spec.name,
                             description=_description(spec, server["name"]), spec=spec, server=server,
                             tools=offered, read_only=read_only, destructive_tools=destructive)
        session.env = env
        session._limits = limits
        env.initial = session.state()
        record.env_id, record.family, record.mcp = env.env_id, [t.name for t in offered], env
    except SandboxFailure as exc:
        label = f"MCP environment {spec.name}"
        record.reject(exc.check, str(exc) if str(exc).startswith(label) else f"{label}: {exc}")
    finally:
        session.close()
    return record
