"""An MCP client session with the official ``mcp`` SDK, over stdio (a server we start) or streamable HTTP (a URL).

Everything the server says is read as wire JSON (``model_dump(by_alias=True)``: ``inputSchema``, ``nextCursor``,
``serverInfo``), which is the same in the SDK's v1 (camelCase attributes) and v2 (snake_case attributes), so the
rest of the package never touches an SDK attribute name. Every wait has a deadline, a server we started is always
stopped (the SDK closes its stdin, then terminates and kills its process group), and each failure becomes one
:class:`MCPServerError` naming the server, what it was doing and its last words on stderr.
"""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlparse

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types
from pydantic import ValidationError

from toolace.errors import UserError

DEFAULT_TIMEOUT_S = 30.0
MAX_PAGES = 1000  # tools/list pages read from one server at most
STDERR_TAIL_LINES = 5


class MCPServerError(UserError):
    """An MCP server that could not be started, reached or understood: the message names the server."""


@dataclass(frozen=True)
class ServerTarget:
    """A stdio server's command line, or a streamable-HTTP server's URL."""

    command: tuple[str, ...] = ()
    url: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    @classmethod
    def from_command(cls, text: str | list[str]) -> ServerTarget:
        parts = shlex.split(text) if isinstance(text, str) else list(text)
        if not parts:
            raise MCPServerError("--mcp needs a command (e.g. --mcp \"mcp-server-time\")")
        return cls(command=tuple(parts))

    @classmethod
    def from_url(cls, url: str) -> ServerTarget:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise MCPServerError(f"--mcp-url {url!r} is not an http(s) URL")
        return cls(url=url)

    @property
    def transport(self) -> str:
        return "streamable_http" if self.url else "stdio"

    @property
    def label(self) -> str:
        return f"MCP server {self.url}" if self.url else f"MCP server `{shlex.join(self.command)}`"


@dataclass
class ServerInfo:
    """What ``initialize`` told: the server's name, version and the protocol version agreed."""

    name: str
    version: str | None
    protocol_version: str | None


@dataclass
class ServerListing:
    target: ServerTarget
    info: ServerInfo
    tools: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0


def wire(model: Any) -> dict[str, Any]:
    """An SDK model as the JSON the protocol carries (camelCase keys in both SDK majors)."""
    if isinstance(model, dict):
        return model
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def server_info(initialize_result: Any) -> ServerInfo:
    raw = wire(initialize_result)
    info = raw.get("serverInfo") or {}
    return ServerInfo(name=str(info.get("name") or "unnamed"), version=info.get("version"),
                      protocol_version=raw.get("protocolVersion"))


@contextlib.asynccontextmanager
async def _http_streams(url: str) -> AsyncIterator[tuple[Any, Any]]:
    """The streamable-HTTP transport: ``streamable_http_client`` (v2, two streams) or ``streamablehttp_client``
    (v1, two streams and a session-id getter)."""
    try:
        from mcp.client.streamable_http import streamable_http_client as opener
    except ImportError:  # the SDK's v1
        from mcp.client.streamable_http import streamablehttp_client as opener  # type: ignore[attr-defined,no-redef]
    async with opener(url) as streams:
        yield streams[0], streams[1]


class _Phase:
    """What the session is doing, for the error message."""

    def __init__(self) -> None:
        self.now = "starting"


@contextlib.asynccontextmanager
async def open_session(target: ServerTarget, errlog: IO[str], phase: _Phase | None = None,
                       ) -> AsyncIterator[tuple[ClientSession, ServerInfo]]:
    """An initialised client session. The caller bounds the time (``anyio.fail_after``); leaving the block stops a
    stdio server (stdin closed, then SIGTERM and SIGKILL to its process group, each wait bounded by the SDK)."""
    phase = phase or _Phase()
    streams: contextlib.AbstractAsyncContextManager[Any]
    if target.url:
        phase.now = "connecting"
        streams = _http_streams(target.url)
    else:
        phase.now = "starting"
        params = StdioServerParameters(command=target.command[0], args=list(target.command[1:]),
                                       env=dict(target.env) or None, cwd=target.cwd)
        streams = stdio_client(params, errlog=errlog)
    async with streams as (read, write), ClientSession(read, write) as session:
        phase.now = "initialize"
        result = await session.initialize()
        yield session, server_info(result)


async def list_all_tools(session: ClientSession, phase: _Phase | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every tool the server lists, page by page (``nextCursor``), as wire dicts; at most :data:`MAX_PAGES` pages,
    and a cursor the server already gave ends the listing (a server that loops)."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    pages = 0
    while pages < MAX_PAGES:
        if phase:
            phase.now = f"tools/list (page {pages + 1})"
        if cursor is None:
            page = await session.list_tools()
        else:
            try:
                page = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor))
            except TypeError:  # an SDK whose list_tools takes the cursor itself
                page = await session.list_tools(cursor=cursor)  # type: ignore[call-arg]
        pages += 1
        raw = wire(page)
        tools.extend(t for t in raw.get("tools") or [])
        cursor = raw.get("nextCursor")
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
    return tools, pages


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from the SDK's task groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _stderr_tail(errlog: IO[str]) -> str:
    try:
        errlog.flush()
        errlog.seek(0)
        lines = [line.rstrip() for line in errlog.read().splitlines() if line.strip()]
    except (OSError, ValueError):
        return ""
    return f"; its stderr ends: {' | '.join(lines[-STDERR_TAIL_LINES:])[-600:]}" if lines else ""


def describe_failure(target: ServerTarget, exc: BaseException, phase: str, timeout_s: float,
                     errlog: IO[str] | None = None) -> str:
    """One line naming the server, what it was doing and what went wrong."""
    exc = _leaf(exc)
    tail = _stderr_tail(errlog) if errlog is not None and target.command else ""
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, TimeoutError):
        return f"{target.label} did not answer within {timeout_s:g} s (during {phase}){tail}"
    if phase == "starting" and isinstance(exc, OSError):
        return f"{target.label} could not be started: {exc.strerror or exc}{tail}"
    if isinstance(exc, MCPError):
        code = getattr(exc, "code", None)
        if code == mcp_types.CONNECTION_CLOSED:
            return f"{target.label} closed the connection during {phase} (did it exit?){tail}"
        return f"{target.label} answered {phase} with error {code}: {str(exc) or 'no message'}{tail}"
    if isinstance(exc, ValidationError | ValueError | KeyError | RuntimeError) and not isinstance(exc, OSError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{target.label} answered out of protocol during {phase}: {first}{tail}"
    if isinstance(exc, OSError | anyio.BrokenResourceError | anyio.ClosedResourceError | anyio.EndOfStream):
        return f"{target.label} failed during {phase}: {exc or type(exc).__name__}{tail}"
    return f"{target.label} failed during {phase}: {type(exc).__name__}: {exc}{tail}"


async def alist_server_tools(target: ServerTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> ServerListing:
    """Start or reach the server, initialise and read every page of ``tools/list``, all within ``timeout_s``."""
    phase = _Phase()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout_s):
                async with open_session(target, errlog, phase) as (session, info):
                    tools, pages = await list_all_tools(session, phase)
                    return ServerListing(target=target, info=info, tools=tools, pages=pages)
        except Exception as exc:  # every failure (exception groups of the SDK's task groups too) names the server
            raise MCPServerError(describe_failure(target, exc, phase.now, timeout_s, errlog)) from None


def list_server_tools(target: ServerTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> ServerListing:
    """:func:`alist_server_tools` from synchronous code (the CLI)."""
    return anyio.run(alist_server_tools, target, timeout_s)
