"""An API pool served as an MCP server (``toolace serve-mcp``): each accepted API is an MCP tool whose answers come
from the tool agent (simulated, valid against the API's result schema) through the LLM gateway, so agent frameworks
and evaluation harnesses can run against the synthetic APIs.

Tools keep their pool names when those are valid MCP tool names (``[A-Za-z0-9_.-]``, at most 128 characters), else
get one made from them (the pool name is the tool's ``title``). Arguments are checked against the API's parameters
before any LLM request: a call that breaks them gets an ``isError`` result naming the problem, as does a call the
tool agent could not answer. A result schema that is an object is the tool's ``outputSchema`` and the answer its
``structuredContent``; every answer is also the tool result's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from jsonschema.exceptions import best_match
from jsonschema.validators import Draft202012Validator, validator_for
from mcp.server.lowlevel import Server

from schemas.records import APISpec
from toolace.llm.gateway import GatewaySettings, LLMCallFailed, LLMGateway

STAGE = "mcp_pool_server"
SERVER_NAME = "toolace-pool"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

Answer = Callable[[APISpec, dict[str, Any]], Awaitable[Any]]


def mcp_tool_names(apis: list[APISpec]) -> dict[str, APISpec]:
    """Each accepted API under an MCP tool name (its own when valid, else one made from it; unique)."""
    named: dict[str, APISpec] = {}
    for api in apis:
        if not api.accepted:
            continue
        base = api.name if _NAME_OK.match(api.name) else (_NAME_BAD_CHARS.sub("_", api.name).strip("_")[:120] or "tool")
        name, n = base, 2
        while name in named:
            name, n = f"{base[:120]}_{n}", n + 1
        named[name] = api
    return named


def _is_object_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "object"


def tool_listing(named: dict[str, APISpec]) -> list[types.Tool]:
    tools = []
    for name, api in named.items():
        raw: dict[str, Any] = {"name": name, "description": api.description,
                               "inputSchema": {**api.parameters, "type": "object"}}
        if name != api.name:
            raw["title"] = api.name
        if _is_object_schema(api.result_schema):
            raw["outputSchema"] = api.result_schema
        provenance = api.mcp_provenance()
        if provenance is not None and provenance.annotations:
            raw["annotations"] = provenance.annotations
        tools.append(types.Tool.model_validate(raw))
    return tools


def argument_problem(api: APISpec, arguments: dict[str, Any]) -> str | None:
    schema = {**api.parameters, "type": "object"}
    error = best_match(validator_for(schema, default=Draft202012Validator)(schema).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"invalid arguments for {api.name}: {error.message}" + (f" (at {where})" if where else "")


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def build_pool_server(apis: list[APISpec], answer: Answer) -> Server:
    """A low-level MCP server listing the pool's accepted APIs and answering each call with ``answer``."""
    named = mcp_tool_names(apis)
    listing = tool_listing(named)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listing)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        api = named.get(params.name)
        if api is None:
            return _error(f"unknown tool {params.name}")
        arguments = params.arguments or {}
        if problem := argument_problem(api, arguments):
            return _error(problem)
        try:
            value = await answer(api, arguments)
        except LLMCallFailed as exc:
            return _error(f"the tool agent could not answer {api.name}: {exc}")
        text = json.dumps(value, ensure_ascii=False)
        structured = value if _is_object_schema(api.result_schema) and isinstance(value, dict) else None
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=structured)

    return Server(SERVER_NAME, version="1", instructions="Simulated APIs of a toolace API pool: every answer is "
                  "written by an LLM tool agent to the API's result schema, not by a real service.",
                  on_list_tools=list_tools, on_call_tool=call_tool)


class ToolAgent:
    """The tool agent behind the served tools: one gateway, made in the serving event loop at the first call."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.gateway: LLMGateway | None = None

    async def __call__(self, api: APISpec, arguments: dict[str, Any]) -> Any:
        if self.gateway is None:
            self.gateway = LLMGateway(self.settings)
        brief = json.dumps({"name": api.name, "description": api.description, "parameters": api.parameters},
                           ensure_ascii=False)
        answer = await self.gateway.structured_json("ToolResult", api.result_schema, [
            {"role": "system", "content": "You simulate an API server. Return only the API's result."},
            {"role": "user", "content": f"API: {brief}\nCall arguments: {json.dumps(arguments, ensure_ascii=False)}"
                                        "\nReturn a realistic result."},
        ], stage=STAGE)
        if answer.value is None:
            raise LLMCallFailed(answer.error or "the tool agent gave no result")
        return answer.value

    async def aclose(self) -> None:
        if self.gateway is not None:
            await self.gateway.aclose()


async def serve_stdio(apis: list[APISpec], settings: GatewaySettings) -> None:
    """Serve over stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    agent = ToolAgent(settings)
    server = build_pool_server(apis, agent)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await agent.aclose()


def serve_http(apis: list[APISpec], settings: GatewaySettings, host: str, port: int) -> None:
    """Serve over streamable HTTP at ``http://HOST:PORT/mcp`` until interrupted."""
    import uvicorn

    server = build_pool_server(apis, ToolAgent(settings))
    uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
