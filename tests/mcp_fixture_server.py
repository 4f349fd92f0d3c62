"""A stateful MCP server of our own for the tests, on the official SDK's low-level server (stdio or streamable HTTP).

Its tools: ``add_note`` / ``list_notes`` / ``wipe_notes`` (state kept by the server process: a note added by one call
is listed by the next), ``whereami`` (its working folder), ``sleep`` (hangs for as long as asked), ``bad_output``
(a result that breaks its own outputSchema), ``allocate`` (holds that many MB), ``connect`` (opens a TCP
connection; says its working folder too), and ``broken_schema`` (an inputSchema that is no valid JSON Schema).
``--page-size`` pages tools/list; ``--exit-on-page N`` makes the process exit when page N is asked for (a server
that dies mid-listing).

    python tests/mcp_fixture_server.py --transport http --port 8931
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

NOTES_SCHEMA = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}}},
                "required": ["notes"]}
TOOLS: list[dict[str, Any]] = [
    {"name": "add_note", "description": "Add a note to the server's notebook",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
     "outputSchema": {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]},
     "annotations": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False}},
    {"name": "list_notes", "description": "List the notes in the notebook",
     "inputSchema": {"type": "object", "properties": {}}, "outputSchema": NOTES_SCHEMA,
     "annotations": {"readOnlyHint": True}},
    {"name": "wipe_notes", "description": "Delete every note",
     "inputSchema": {"type": "object", "properties": {}},
     "annotations": {"readOnlyHint": False, "destructiveHint": True}},
    {"name": "whereami", "description": "The server's working folder",
     "inputSchema": {"type": "object", "properties": {}}, "annotations": {"readOnlyHint": True}},
    {"name": "sleep", "description": "Wait that many seconds",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]},
     "annotations": {"readOnlyHint": True}},
    {"name": "bad_output", "description": "Count things (wrongly)",
     "inputSchema": {"type": "object", "properties": {}},
     "outputSchema": {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]},
     "annotations": {"readOnlyHint": True}},
    {"name": "allocate", "description": "Hold that many megabytes",
     "inputSchema": {"type": "object", "properties": {"mb": {"type": "integer"}}, "required": ["mb"]},
     "annotations": {"readOnlyHint": True}},
    {"name": "connect", "description": "Open a TCP connection",
     "inputSchema": {"type": "object", "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
                     "required": ["host", "port"]},
     "annotations": {"readOnlyHint": True, "openWorldHint": True}},
    {"name": "broken_schema", "description": "A tool whose inputSchema is no valid JSON Schema",
     "inputSchema": {"type": "object", "properties": {"x": {"type": "strng"}}},
     "annotations": {"readOnlyHint": True}},
]


def _result(structured: Any, text: str | None = None) -> types.CallToolResult:
    import json

    return types.CallToolResult(content=[types.TextContent(text=text if text is not None else json.dumps(structured))],
                                structured_content=structured)


def build_server(page_size: int, exit_on_page: int | None) -> Server:
    notes: list[str] = []
    tools = [types.Tool.model_validate(t) for t in TOOLS]

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        start = int(params.cursor) if params is not None and params.cursor else 0
        page = start // page_size + 1
        if exit_on_page is not None and page >= exit_on_page:
            os._exit(7)
        end = start + page_size
        return types.ListToolsResult(tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        if params.name == "add_note":
            notes.append(str(args.get("text")))
            return _result({"count": len(notes)})
        if params.name == "list_notes":
            return _result({"notes": list(notes)})
        if params.name == "wipe_notes":
            notes.clear()
            return _result({"wiped": True})
        if params.name == "whereami":
            return _result({"cwd": os.getcwd()})
        if params.name == "sleep":
            await anyio.sleep(float(args.get("seconds", 0)))
            return _result({"slept": args.get("seconds")})
        if params.name == "bad_output":
            return _result({"count": "many"})
        if params.name == "allocate":
            held = bytearray(int(args["mb"]) * 1024 * 1024)
            return _result({"held_mb": len(held) // (1024 * 1024)})
        if params.name == "connect":
            try:
                with socket.create_connection((str(args["host"]), int(args["port"])), timeout=3):
                    return _result({"reached": True, "cwd": os.getcwd()})
            except OSError as exc:
                return _result({"reached": False, "error": str(exc), "cwd": os.getcwd()})
        return types.CallToolResult(content=[types.TextContent(text=f"unknown tool {params.name}")], is_error=True)

    return Server("notebook-fixture", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--exit-on-page", type=int, default=None)
    args = parser.parse_args()
    server = build_server(args.page_size, args.exit_on_page)
    if args.transport == "http":
        import uvicorn

        uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=args.port,
                    log_level="warning")
        return
    from mcp.server.stdio import stdio_server

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
