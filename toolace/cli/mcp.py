"""``toolace serve-mcp``: an API pool served as an MCP server, its answers simulated by the tool agent."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from toolace.cli.errors import fail, user_errors


class Transport(enum.StrEnum):
    stdio = "stdio"
    http = "http"


def serve_mcp(
    pool: Annotated[str, typer.Option(help="API pool to serve: a .jsonl or .parquet file or URL")],
    transport: Annotated[Transport, typer.Option(help="stdio (the client starts this command) or http "
                                                 "(streamable HTTP at http://HOST:PORT/mcp)")] = Transport.stdio,
    host: Annotated[str, typer.Option(help="Address to listen on (http)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (http)")] = 8765,
    llm_base_url: Annotated[str | None, typer.Option(
        help="Endpoint of the tool agent; its key is read from OPENAI_API_KEY", envvar="OPENAI_BASE_URL",
        show_envvar=True, show_default="the embedded SmolLM2 model")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at the endpoint",
                                                  show_default="the one model the endpoint serves")] = None,
    concurrency: Annotated[int, typer.Option(help="Maximum LLM requests in flight")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Most tokens of one simulated result")] = 512,
) -> None:
    """Serve an API pool's APIs as MCP tools, each answered by the tool agent (simulated, valid against the
    API's result schema) through the LLM gateway. With stdio, nothing but the protocol goes to stdout."""
    import anyio

    from tasks.apis.importing import read_pool
    from tasks.mcp.pool_server import mcp_tool_names, serve_http, serve_stdio
    from toolace.llm.endpoint import llm_endpoint
    from toolace.llm.gateway import GatewaySettings

    if concurrency < 1 or max_tokens < 16:
        fail("--concurrency must be at least 1 and --max-tokens at least 16")
    with user_errors():
        apis = [api for api in read_pool(pool) if api.accepted]
        if not apis:
            fail(f"pool {pool} has no accepted API to serve")
        with llm_endpoint(llm_base_url, llm_model) as endpoint:
            settings = GatewaySettings(base_url=endpoint.base_url, model=endpoint.model, concurrency=concurrency,
                                       max_tokens=max_tokens)
            typer.echo(f"serving {len(mcp_tool_names(apis))} tools of {pool} over {transport.value}"
                       + (f" at http://{host}:{port}/mcp" if transport is Transport.http else ""), err=True)
            if transport is Transport.http:
                serve_http(apis, settings, host, port)
            else:
                anyio.run(serve_stdio, apis, settings)
