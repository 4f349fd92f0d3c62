"""``toolace serve-mcp`` (issue 22 item 4): a pool's APIs as MCP tools answered by the tool agent through the
gateway (here the scripted OpenAI-compatible server), driven with the official SDK's client over stdio."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
from jsonschema import Draft202012Validator
from mcp import ClientSession, StdioServerParameters, stdio_client
from typer.testing import CliRunner

from schemas.records import APISpec
from tasks.apis.importing import merge_into_pool
from tasks.mcp.client import wire
from tasks.mcp.pool_server import mcp_tool_names
from toolace.cli import app

WEATHER_RESULT = {"type": "object", "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}},
                  "required": ["city", "temperature_c"]}
POOL = [
    APISpec(api_id="w1", name="Get Weather Now", description="Current weather of a city",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            result_schema=WEATHER_RESULT, domain="Weather", node_ids=[], operators=[]),
    APISpec(api_id="c1", name="convert_units", description="Convert a value between units",
            parameters={"type": "object", "properties": {"value": {"type": "number"}, "to": {"type": "string"}},
                        "required": ["value", "to"]},
            result_schema={"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]},
            domain="Units", node_ids=[], operators=[]),
]


def test_tool_names_are_valid_mcp_names():
    rejected = POOL[1].model_copy(update={"api_id": "x", "status": "rejected"})
    assert list(mcp_tool_names([*POOL, rejected, POOL[0].model_copy(update={"api_id": "w2"})])) == \
        ["Get_Weather_Now", "convert_units", "Get_Weather_Now_2"]


def test_serve_mcp_answers_with_the_tool_agent(llm, tmp_path):
    pool = str(tmp_path / "pool.jsonl")
    merge_into_pool(pool, POOL)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "toolace.cli", "serve-mcp", "--pool", pool, "--llm-base-url",
                                      llm.base_url, "--llm-model", "scripted-model"],
        env={"PREFECT_HOME": str(tmp_path / "prefect"), "OPENAI_API_KEY": "test",
             **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}})

    async def session_results() -> dict[str, Any]:
        with (tmp_path / "server.err").open("w") as errlog, anyio.fail_after(60):
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                init = wire(await session.initialize())
                tools = wire(await session.list_tools())["tools"]
                weather = wire(await session.call_tool("Get_Weather_Now", {"city": "Paris"}))
                bad = wire(await session.call_tool("convert_units", {"value": "ten"}))
                unknown = wire(await session.call_tool("no_such_tool", {}))
                return {"init": init, "tools": tools, "weather": weather, "bad": bad, "unknown": unknown}

    got = anyio.run(session_results)
    assert got["init"]["serverInfo"]["name"] == "toolace-pool"
    tools = {t["name"]: t for t in got["tools"]}
    assert set(tools) == {"Get_Weather_Now", "convert_units"}
    assert tools["Get_Weather_Now"]["title"] == "Get Weather Now"
    assert tools["Get_Weather_Now"]["outputSchema"] == WEATHER_RESULT
    assert tools["Get_Weather_Now"]["inputSchema"]["required"] == ["city"]
    weather = got["weather"]
    assert not weather.get("isError")
    assert Draft202012Validator(WEATHER_RESULT).is_valid(weather["structuredContent"])
    assert json.loads(weather["content"][0]["text"]) == weather["structuredContent"]
    asked = [r for r in llm.requests if "Get Weather Now" in json.dumps(r.get("messages"))]
    assert len(asked) == 1 and asked[0]["response_format"]["type"] == "json_schema"  # the tool agent, once
    assert got["bad"]["isError"] and got["bad"]["content"][0]["text"] == \
        "invalid arguments for convert_units: 'to' is a required property"
    assert got["unknown"]["isError"] and got["unknown"]["content"][0]["text"] == "unknown tool no_such_tool"


def test_serve_mcp_refuses_an_empty_pool(tmp_path):
    pool = str(tmp_path / "empty.jsonl")
    merge_into_pool(pool, [])
    result = CliRunner().invoke(app, ["serve-mcp", "--pool", pool, "--llm-base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 1 and f"pool {pool} has no accepted API to serve" in result.output
