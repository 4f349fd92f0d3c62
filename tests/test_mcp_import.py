"""Importing tools from MCP servers (issue 22 items 1-2): real servers from PyPI (mcp-server-time, mcp-server-git on
a temporary repository) over stdio, our own stateful fixture server over streamable HTTP, saved tools/list files,
and the bad inputs: a server that does not start, exits at once, exits mid-listing, answers out of protocol or not
at all, and a tool with an invalid inputSchema."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from schemas.records import APISpec
from tasks.apis.importing import merge_into_pool, read_api_file, read_pool
from tasks.mcp.client import MCPServerError, ServerListing, ServerTarget, list_server_tools
from tasks.mcp.tool_import import SCHEMA_CHECK, apis_from_listing, import_from_server, infer_result_schema
from tests.mcp_support import fixture_command, http_fixture_server, make_git_repo, server_command
from toolace.cli import app

runner = CliRunner()
TIME = server_command("mcp-server-time")
GIT = server_command("mcp-server-git")


def test_cli_imports_mcp_server_time_with_schemas_annotations_and_provenance(tmp_path):
    pool = tmp_path / "pool.jsonl"
    result = runner.invoke(app, ["import-apis", "--mcp", "no-such-mcp-server-xyz", "--mcp", TIME, "--pool", str(pool)])
    assert "read 2, added 2, duplicates 0, rejected 0" in result.output  # the server that works is imported
    assert result.exit_code == 1 and "error: 1 MCP server(s) failed, the rest was imported: MCP server " \
                                      "`no-such-mcp-server-xyz`" in result.output
    apis = {a.name: a for a in read_pool(str(pool))}
    assert set(apis) == {"get_current_time", "convert_time"}
    now = apis["get_current_time"]
    assert now.operators == ["imported", "mcp"] and now.domain == "mcp-time" and now.tool_source() == "mcp"
    assert now.parameters["required"] == ["timezone"] and now.parameters["type"] == "object"
    assert set(now.result_schema["required"]) == {"timezone", "datetime", "day_of_week", "is_dst"}
    provenance = now.mcp_provenance()
    assert provenance is not None
    assert (provenance.server_name, provenance.transport, provenance.command) == ("mcp-time", "stdio", [TIME])
    assert provenance.server_version and provenance.protocol_version == "2025-11-25"
    assert provenance.result_schema == "declared" and provenance.read_only and not provenance.destructive
    assert provenance.annotations["idempotentHint"] is True and provenance.annotations["openWorldHint"] is False


def test_mcp_server_git_on_a_temporary_repository(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    apis = {a.name: a for a in import_from_server(ServerTarget.from_command([GIT, "--repository", str(repo)]))}
    assert {"git_status", "git_log", "git_commit", "git_reset", "git_add"} <= set(apis)
    assert all(a.accepted for a in apis.values()), [a.reason for a in apis.values() if not a.accepted]
    status, reset, commit = (apis[n].mcp_provenance() for n in ("git_status", "git_reset", "git_commit"))
    assert status.read_only and not status.destructive
    assert reset.destructive and not reset.read_only  # it throws away staged changes
    assert not commit.read_only and not commit.destructive
    assert status.server_name == "mcp-git" and "repo_path" in apis["git_status"].parameters["properties"]


def test_streamable_http_fixture_paged_listing_rejects_the_invalid_schema_only():
    with http_fixture_server("--page-size", "3") as url:
        listing = list_server_tools(ServerTarget.from_url(url), 30)
    assert listing.pages == 3 and listing.info.name == "notebook-fixture" and listing.info.version == "1.0.0"
    apis = {a.name: a for a in apis_from_listing(listing)}
    assert len(apis) == 9
    broken = apis.pop("broken_schema")
    assert not broken.accepted and broken.rejected_by == SCHEMA_CHECK
    assert broken.reason == (f"MCP server {url}: tool broken_schema: inputSchema is not a valid JSON Schema: 'strng' "
                             "is not valid under any of the given schemas (at properties/x/type)")
    assert all(a.accepted for a in apis.values())
    assert apis["whereami"].result_schema == {"type": "object"}  # no outputSchema: unknown until inferred
    assert apis["whereami"].mcp_provenance().result_schema == "unknown"
    assert apis["add_note"].mcp_provenance().url == url and apis["add_note"].mcp_provenance().transport == \
        "streamable_http"
    assert apis["wipe_notes"].mcp_provenance().destructive


@pytest.fixture(scope="module")
def time_listing() -> ServerListing:
    return list_server_tools(ServerTarget.from_command(TIME))


def test_saved_tools_list_imports_as_the_live_listing(tmp_path, time_listing):
    listing = time_listing
    live = apis_from_listing(listing)
    response = {"jsonrpc": "2.0", "id": 2, "result": {"tools": listing.tools},
                "serverInfo": {"name": "mcp-time", "version": "9"}, "protocolVersion": "2025-11-25"}
    saved = tmp_path / "time-tools.json"
    saved.write_text(json.dumps(response))
    from_file = read_api_file(str(saved))
    assert [(a.name, a.parameters, a.result_schema) for a in from_file] == \
        [(a.name, a.parameters, a.result_schema) for a in live]
    provenance = from_file[0].mcp_provenance()
    assert (provenance.transport, provenance.server_name, provenance.source_file) == ("file", "mcp-time", str(saved))
    # a bare ListToolsResult saved from the v2 SDK's attribute names (snake_case) reads the same
    snake = [{"name": t["name"], "description": t["description"], "input_schema": t["inputSchema"],
              "output_schema": t["outputSchema"]} for t in listing.tools]
    (tmp_path / "snake.json").write_text(json.dumps({"tools": snake}))
    assert [a.result_schema for a in read_api_file(str(tmp_path / "snake.json"))] == [a.result_schema for a in live]


def test_parquet_pool_keeps_the_provenance(tmp_path, time_listing):
    apis = apis_from_listing(time_listing)
    pool = str(tmp_path / "pool.parquet")
    assert merge_into_pool(pool, apis)["added"] == 2 and merge_into_pool(pool, apis)["duplicates"] == 2
    merge_into_pool(pool, [APISpec(api_id="x1", name="plain", description="d", parameters={"type": "object"},
                                   result_schema={"type": "object"}, domain="d", node_ids=[], operators=[])])
    back = {a.name: a for a in read_pool(pool)}
    assert back["get_current_time"].mcp_provenance() == apis[0].mcp_provenance()
    assert back["get_current_time"].mcp_provenance().command == [TIME]
    assert back["plain"].mcp_provenance() is None and back["plain"].tool_source() == "synthesised"


# ------------------------------------------------------------------------------------------------ bad input


def test_a_server_command_that_does_not_exist(tmp_path):
    result = runner.invoke(app, ["import-apis", "--mcp", "no-such-mcp-server-xyz --flag", "--pool",
                                 str(tmp_path / "p.jsonl")])
    assert result.exit_code == 1
    assert "error: MCP server `no-such-mcp-server-xyz --flag` could not be started: No such file or directory" \
        in result.output
    assert "error: nothing imported: 1 MCP server(s) failed" in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_a_server_that_exits_at_once_names_its_last_words():
    code = "import sys; print('no config found', file=sys.stderr); sys.exit(3)"
    with pytest.raises(MCPServerError) as caught:
        list_server_tools(ServerTarget.from_command([sys.executable, "-c", code]), 30)
    assert str(caught.value) == (f"MCP server `{shlex.join([sys.executable, '-c', code])}` closed the connection "
                                 "during initialize (did it exit?); its stderr ends: no config found")


def test_a_server_that_exits_mid_listing():
    command = fixture_command("--page-size", "3", "--exit-on-page", "2")
    with pytest.raises(MCPServerError) as caught:
        list_server_tools(ServerTarget.from_command(command), 30)
    assert str(caught.value) == f"MCP server `{shlex.join(command)}` closed the connection during tools/list " \
                                "(page 2) (did it exit?)"


def test_a_server_out_of_protocol_and_one_that_never_answers(tmp_path):
    liar = tmp_path / "liar.py"
    liar.write_text("import json, sys\nrequest = json.loads(sys.stdin.readline())\n"
                    "print(json.dumps({'jsonrpc': '2.0', 'id': request['id'], 'result': {'protocolVersion': 5}}),"
                    " flush=True)\nsys.stdin.read()\n")
    with pytest.raises(MCPServerError, match=r"^MCP server `.*liar.py` answered out of protocol during initialize: "
                                             r"\d+ validation errors? for InitializeResult"):
        list_server_tools(ServerTarget.from_command([sys.executable, str(liar)]), 30)
    mute = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    with pytest.raises(MCPServerError) as caught:
        list_server_tools(ServerTarget.from_command(mute), 1.5)
    assert str(caught.value) == f"MCP server `{shlex.join(mute)}` did not answer within 1.5 s (during initialize)"


def test_an_unreachable_url_and_a_bad_one():
    with pytest.raises(MCPServerError, match=r"^MCP server http://127\.0\.0\.1:9/mcp failed during initialize: "):
        list_server_tools(ServerTarget.from_url("http://127.0.0.1:9/mcp"), 10)
    result = runner.invoke(app, ["import-apis", "--mcp-url", "ftp://x", "--pool", "p.jsonl"])
    assert result.exit_code == 1 and "--mcp-url 'ftp://x' is not an http(s) URL" in result.output


def test_result_schema_inferred_from_executed_results():
    values = [{"city": "Paris", "temp": 3, "tags": ["a"]}, {"city": "Oslo", "temp": -1.5}]
    schema = infer_result_schema(values)
    assert schema == {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"},
                                                       "tags": {"type": "array", "items": {"type": "string"}}},
                      "required": ["city", "temp"]}
    assert all(Draft202012Validator(schema).is_valid(v) for v in values)
    assert infer_result_schema([]) == {"type": "object"}
