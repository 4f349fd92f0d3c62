"""Executed tool turns (issue 22 items 3 and 5): calls of imported MCP tools made for real in a sandbox (own
subprocess and working folder, time limit, memory limit, no network unless allowed), recorded in the dialog's tool
turn (executed, duration, error), a destructive tool never run unless named, and the card's tool counts."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.records import APISpec, MCPProvenance, Turn
from tasks.dataset.card import ToolTally, tools_section
from tasks.dialogs.generation import generate_dialogs, plan_dialogs
from tasks.mcp.client import ServerTarget
from tasks.mcp.execution import (
    EXECUTION_CHECK,
    OUTPUT_SCHEMA_CHECK,
    ExecutionPolicy,
    MCPToolExecutor,
    execution_refusal,
)
from tasks.mcp.tool_import import import_from_server
from tasks.verification.rules import score_dialog
from tests.mcp_support import fixture_command, http_fixture_server, make_git_repo, server_command
from toolace.config import RunConfig
from toolace.llm.gateway import GatewaySettings, LLMGateway

TIME = server_command("mcp-server-time")
GIT = server_command("mcp-server-git")


def mcp_api(name: str, annotations: dict[str, bool], transport: str = "stdio", url: str | None = None) -> APISpec:
    provenance = MCPProvenance(server_name="s", transport=transport, command=["srv"] if transport == "stdio" else None,
                               url=url, tool_name=name, annotations=annotations)
    return APISpec(api_id=name, name=name, description=name, parameters={"type": "object", "properties": {}},
                   result_schema={"type": "object"}, domain="s", node_ids=[], operators=["imported", "mcp"],
                   mcp=provenance.model_dump(mode="json"))


def test_which_calls_are_executed():
    reader, writer = mcp_api("read", {"readOnlyHint": True}), mcp_api("write", {"destructiveHint": False})
    wiper, unsure = mcp_api("wipe", {"readOnlyHint": False, "destructiveHint": True}), mcp_api("unsure", {})
    saved = mcp_api("saved", {"readOnlyHint": True}, transport="file")
    remote = mcp_api("remote", {"readOnlyHint": True}, "streamable_http", "https://tools.example.com/mcp")
    local = mcp_api("local", {"readOnlyHint": True}, "streamable_http", "http://127.0.0.1:8931/mcp")
    plain = APISpec(api_id="p", name="p", description="p", parameters={"type": "object"},
                    result_schema={"type": "object"}, domain="d", node_ids=[], operators=[])
    none, read_only, every = (ExecutionPolicy(mode=m) for m in ("none", "read_only", "all"))
    assert execution_refusal(reader, none) == "execute_tools is none"
    assert execution_refusal(plain, every) == "not an MCP tool"
    assert execution_refusal(reader, read_only) is None and execution_refusal(local, read_only) is None
    assert execution_refusal(writer, read_only) == "not marked read-only (execute_tools is read_only)"
    assert execution_refusal(writer, every) is None
    # a tool that is not read-only and does not say otherwise is destructive (MCP's defaults)
    for tool in (wiper, unsure):
        assert execution_refusal(tool, every) == "destructive, and not named in execute_destructive_tools"
    assert execution_refusal(wiper, ExecutionPolicy(mode="all", destructive_tools=("wipe",))) is None
    assert execution_refusal(saved, every) == "imported from a saved tools/list: no server to call"
    assert execution_refusal(remote, every) == "its server is on the network (execute_network is off)"
    assert execution_refusal(remote, ExecutionPolicy(mode="all", network=True)) is None
    assert ExecutionPolicy.from_config(RunConfig()) is None
    policy = ExecutionPolicy.from_config(RunConfig(execute_tools="all", execute_destructive_tools=["wipe"],
                                                   execute_time_limit_s=5, execute_memory_mb=512))
    assert policy == ExecutionPolicy(mode="all", destructive_tools=("wipe",), time_limit_s=5, memory_mb=512)


def test_sandboxed_calls_of_real_servers(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    apis = {a.name: a for target in (ServerTarget.from_command([TIME]),
                                     ServerTarget.from_command([GIT, "--repository", str(repo)]),
                                     ServerTarget.from_command(fixture_command()))
            for a in import_from_server(target) if a.accepted}
    listener = socket.create_server(("127.0.0.1", 0))  # something to reach on this machine's loopback
    port = listener.getsockname()[1]
    sandboxed = MCPToolExecutor(ExecutionPolicy(mode="all", time_limit_s=3, memory_mb=1024))
    networked = MCPToolExecutor(ExecutionPolicy(mode="all", time_limit_s=3, memory_mb=1024, network=True))
    calls = [(sandboxed, "get_current_time", {"timezone": "Europe/Paris"}),
             (sandboxed, "git_status", {"repo_path": str(repo)}),
             (sandboxed, "sleep", {"seconds": 120}),
             (sandboxed, "bad_output", {}),
             (sandboxed, "connect", {"host": "127.0.0.1", "port": port}),
             (networked, "connect", {"host": "127.0.0.1", "port": port}),
             (sandboxed, "allocate", {"mb": 1500})]

    async def main() -> list[Any]:
        return await asyncio.gather(*(executor.execute(apis[name], args) for executor, name, args in calls))

    try:
        now, status, hung, wrong, isolated, reached, hog = asyncio.run(main())
    finally:
        listener.close()
    assert now.error is None and now.result["timezone"] == "Europe/Paris" and 0 < now.duration_s < 3
    assert Draft202012Validator(apis["get_current_time"].result_schema).is_valid(now.result)
    assert status.error is None and "On branch main" in status.result["text"]
    folder = Path(isolated.result["cwd"])  # its own working folder, removed after the call
    assert folder.name.startswith("toolace-mcp-") and str(folder.parent) == tempfile.gettempdir()
    assert not folder.exists() and Path(reached.result["cwd"]) != folder
    assert hung.check == EXECUTION_CHECK and 3 <= hung.duration_s < 6
    assert hung.error == "sleep on notebook-fixture: the call did not finish within its time limit of 3 s"
    assert wrong.check == OUTPUT_SCHEMA_CHECK
    assert wrong.error == ("bad_output on notebook-fixture: Invalid structured content returned by tool bad_output: "
                           "'many' is not of type 'integer'")
    assert isolated.error is None and isolated.result["reached"] is False
    assert "Network is unreachable" in isolated.result["error"]
    assert reached.result["reached"] is True
    assert hog.check == EXECUTION_CHECK and "MemoryError" in hog.error and hog.error.startswith(
        "allocate on notebook-fixture: MCP server")


def test_stateful_http_server_and_destructive_tools():
    with http_fixture_server() as url:
        apis = {a.name: a for a in import_from_server(ServerTarget.from_url(url)) if a.accepted}
        executor = MCPToolExecutor(ExecutionPolicy(mode="all", time_limit_s=10))
        assert not executor.executes(apis["wipe_notes"])  # destructive, not named

        assert MCPToolExecutor(ExecutionPolicy(mode="all", destructive_tools=("wipe_notes",))).executes(
            apis["wipe_notes"])

        async def main() -> list[Any]:
            first = await executor.execute(apis["add_note"], {"text": "buy milk"})
            return [first, await executor.execute(apis["list_notes"], {})]

        first, listed = asyncio.run(main())
    assert first.result == {"count": 1} and listed.result == {"notes": ["buy milk"]}  # the server kept its state


@pytest.fixture(scope="module")
def time_apis() -> list[APISpec]:
    return [a for a in import_from_server(ServerTarget.from_command([TIME])) if a.accepted]


def _time_dialog(llm: Any, executor: Any, apis: list[APISpec]) -> Any:
    llm.script(lambda body: {"tool_calls": [{"name": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]}
               if body.get("tools") else None)
    now = next(a for a in apis if a.name == "get_current_time")
    plans = plan_dialogs([now, *[a for a in apis if a is not now]], 1, {"single": 1.0}, 2, random.Random(0))

    async def main() -> Any:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            return (await generate_dialogs(plans, apis, gateway, seed=0, executor=executor))[0]
        finally:
            await gateway.aclose()

    return asyncio.run(main())


def test_dialog_tool_turn_is_the_real_result(llm, time_apis):
    dialog = _time_dialog(llm, MCPToolExecutor(ExecutionPolicy(mode="read_only")), time_apis)
    assert dialog.accepted, dialog.reason
    tool_turn = next(t for t in dialog.turns if t.role == "tool")
    assert tool_turn.executed and tool_turn.error is None and tool_turn.duration_s > 0
    result = json.loads(tool_turn.content)
    assert result["timezone"] == "Asia/Tokyo" and isinstance(result["is_dst"], bool)
    assert not [p for p in score_dialog(dialog, 2000) if p.check == "tool_result_schema_v1"]
    assert {"executed", "duration_s", "error"} <= set(tool_turn.model_dump())
    simulated = [r for r in llm.requests if "ToolResult" in json.dumps(r.get("response_format") or {})]
    assert not simulated  # the tool agent was not asked
    tally = ToolTally()
    tally.add(dialog)
    assert tally.report() == {"by_source": {"synthesised": 0, "openapi": 0, "mcp": 2, "imported": 0},
                              "tool_turns": {"executed": 1, "simulated": 0},
                              "executed_tools": {"get_current_time (mcp-time)": 1}}
    assert "Real tools (results from actually calling them, with the number of turns): " \
           "`get_current_time (mcp-time)` (1)." in tools_section(tally.report())


@dataclass
class FailingRun:
    result: Any
    duration_s: float
    error: str | None
    check: str | None


class FailingExecutor:
    def executes(self, api: APISpec) -> bool:
        return True

    async def execute(self, api: APISpec, arguments: dict[str, Any]) -> FailingRun:
        return FailingRun({"error": "boom"}, 0.5, f"{api.name} on mcp-time: boom", EXECUTION_CHECK)


def test_a_failed_execution_rejects_the_dialog_and_keeps_the_turn(llm, time_apis):
    dialog = _time_dialog(llm, FailingExecutor(), time_apis)
    assert not dialog.accepted and dialog.rejected_by == EXECUTION_CHECK
    assert dialog.reason == "get_current_time on mcp-time: boom"
    last = dialog.turns[-1]
    assert last.role == "tool" and last.executed and last.error == dialog.reason and last.duration_s == 0.5


def test_simulated_turns_are_written_as_before():
    turn = Turn(role="tool", tool_call_id="c1", name="t", content="{}")
    assert turn.model_dump() == {"role": "tool", "content": "{}", "tool_calls": [], "tool_call_id": "c1", "name": "t",
                                 "reasoning_content": None}
    assert "executed" not in turn.model_dump_json()
    assert Turn.model_validate(turn.model_dump()) == turn
    assert tools_section({"by_source": {"synthesised": 3}, "tool_turns": {"executed": 0, "simulated": 4},
                          "executed_tools": {}}).endswith(
        "Tool turns: 0 executed (the tool's real result), 4 simulated by the tool agent. No tool was called for "
        "real: every tool result was written by the tool agent.")


def test_the_dialog_batch_task_executes_under_the_run_policy(llm, time_apis):
    """The wiring of a run: the batch task (its plain function, on the LLM loop's thread) with the config's policy."""
    from flows.batch_tasks import generate_dialog_batch

    llm.script(lambda body: {"tool_calls": [{"name": "get_current_time", "arguments": {"timezone": "UTC"}}]}
               if body.get("tools") else None)
    now = next(a for a in time_apis if a.name == "get_current_time")
    plans = plan_dialogs([now], 1, {"single": 1.0}, 1, random.Random(0))
    settings = GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01)
    policy = ExecutionPolicy.from_config(RunConfig(execute_tools="read_only"))
    dialogs, _ = generate_dialog_batch.fn("scope", plans, [now], settings, 0, 1, policy)
    tool_turn = next(t for t in dialogs[0].turns if t.role == "tool")
    assert dialogs[0].accepted and tool_turn.executed and json.loads(tool_turn.content)["timezone"] == "UTC"
