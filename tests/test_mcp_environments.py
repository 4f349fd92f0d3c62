"""MCP servers as environments, with the real ``mcp-server-git`` over a seeded repository: the environment prepared
(tools imported, initial state observed through the probes), blueprints executed (accepted, an action the server
answers with an error, an unknown tool), trajectories verified against the server (accepted, a different final
state with its paths, an unasked destructive call), bad servers and specs as rejections with their reasons, the
agentic pipeline with an MCP environment and its published meta, and the run config's option."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from schemas.environments import BlueprintProposal, McpEnvironmentSpec
from schemas.records import Turn
from tasks.dataset.rows import toolace_row
from tasks.environments.agentic_dialogs import AgenticSettings, make_agentic_dialogs
from tasks.environments.blueprints import (
    EXECUTION_CHECK,
    UNKNOWN_TOOL_CHECK,
    BlueprintRecord,
    blueprint_messages,
    execute_blueprint,
    parse_blueprint,
)
from tasks.environments.mcp_environments import (
    ENVIRONMENT_CHECK,
    PROBE_CHECK,
    SERVER_CHECK,
    McpEnvironment,
    McpSession,
    mcp_state_diff,
    prepare_mcp_environment,
)
from tasks.environments.trajectories import (
    DESTRUCTIVE_CHECK,
    FINAL_STATE_CHECK,
    AssistantReply,
    TrajectoryOutcome,
    UserReply,
    run_trajectory,
)
from tests.mcp_support import fixture_command, make_git_repo, server_command
from toolace.config import RunConfig, load_config
from toolace.errors import ConfigError
from toolace.llm.gateway import LLMStats, Structured

GIT = server_command("mcp-server-git")
# fixed identities and dates: a commit made by any execution hashes the same
GIT_ENV = {"GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com", "GIT_COMMITTER_NAME": "Agent",
           "GIT_COMMITTER_EMAIL": "agent@example.com", "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+0000",
           "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+0000"}
REPO = {"repo_path": "/workspace"}
DESCRIPTIONS = {"repo_path": "Path of the git repository", "files": "Paths of the files to stage",
                "message": "The commit message", "max_count": "How many commits to show at most"}
GOAL = "In my repository at /workspace, stage notes.txt and commit it with the message 'Add notes'."


def seeded_repo(folder: Path) -> Path:
    """One commit (README.md), then work not yet committed: README.md changed, notes.txt untracked."""
    make_git_repo(folder)
    (folder / "README.md").write_text("hello world\n")
    (folder / "notes.txt").write_text("buy milk\n")
    return folder


def git_spec(fixture: Path, **changes: Any) -> McpEnvironmentSpec:
    data: dict[str, Any] = {
        "name": "git", "command": [GIT, "--repository", "{workspace}"], "env": GIT_ENV, "fixture": str(fixture),
        "description": "A git repository with uncommitted work.",
        "probes": [{"tool": "git_status", "arguments": REPO}, {"tool": "git_log", "arguments": REPO}],
        "tools": ["git_status", "git_add", "git_commit", "git_reset", "git_log"],
        "parameter_descriptions": DESCRIPTIONS}
    return McpEnvironmentSpec.model_validate({**data, **changes})


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seeded_repo(tmp_path_factory.mktemp("mcp-env") / "repo")


@pytest.fixture(scope="module")
def git_env(fixture_repo: Path) -> McpEnvironment:
    record = prepare_mcp_environment(git_spec(fixture_repo))
    assert (record.status, record.reason, record.source) == ("accepted", None, "mcp")
    assert record.mcp is not None
    return record.mcp


def proposal(*actions: tuple[str, dict[str, Any]], outputs: Sequence[str] = (), goal: str = GOAL,
             changes_state: bool = True) -> BlueprintProposal:
    return BlueprintProposal.model_validate({
        "user_goal": goal, "changes_state": changes_state, "outputs": list(outputs),
        "actions": [{"api": api, "arguments": [{"name": k, "value": v} for k, v in args.items()]}
                    for api, args in actions]})


COMMIT = proposal(("git_add", {**REPO, "files": "notes.txt"}), ("git_commit", {**REPO, "message": "Add notes"}),
                  outputs=["committed successfully"])


@pytest.fixture(scope="module")
def commit(git_env: McpEnvironment) -> BlueprintRecord:
    record = parse_blueprint(COMMIT, git_env)
    with McpSession(git_env) as session:
        execute_blueprint(record, git_env, session)
    assert (record.status, record.reason, record.executed) == ("accepted", None, True)
    return record


# ----------------------------------------------------------------------------------------- the environment


def test_the_environment_is_the_servers_tools_and_its_observed_state(git_env: McpEnvironment,
                                                                      fixture_repo: Path) -> None:
    assert [t.name for t in git_env.tools] == ["git_status", "git_add", "git_commit", "git_reset", "git_log"]
    assert git_env.tools[1].mcp_provenance().annotations["readOnlyHint"] is False  # annotations kept
    assert git_env.destructive_tools == ["git_reset"] and "git_status" in git_env.read_only
    assert git_env.server["name"] == "mcp-git" and git_env.server["version"]
    assert git_env.server["command"] == [GIT, "--repository", "{workspace}"]
    status = [r["text"] for r in git_env.initial["git_status"].values()]
    assert "\tmodified:   README.md" in status and "\tnotes.txt" in status
    log = [r["text"] for r in git_env.initial["git_log"].values()]
    assert "Message: first commit" in log
    # the blueprint prompt shows the observed state and where the files are
    prompt = blueprint_messages(git_env)[1]["content"]
    assert "\tnotes.txt" in prompt and "/workspace" in prompt and "assistant that uses tools" in \
        blueprint_messages(git_env)[0]["content"]


def test_a_blueprint_changing_the_repository_is_executed_and_its_state_observed(commit: BlueprintRecord,
                                                                               fixture_repo: Path) -> None:
    # the strict answer's string became the list git_add's schema asks for
    assert commit.blueprint.actions[0].arguments == {"repo_path": "/workspace", "files": ["notes.txt"]}
    assert commit.results[0] == {"text": "Files staged successfully"}
    assert commit.results[1]["text"].startswith("Changes committed successfully with hash ")
    log = [r["text"] for r in commit.final_state["git_log"].values()]
    assert log[1:5] == [f"Commit: {commit.results[1]['text'].rsplit(' ', 1)[1]}", "Author: Agent",
                        "Date: 2025-01-01 00:00:00+00:00", "Message: Add notes"]
    paths = [d["path"] for d in commit.diff]
    assert paths[:5] == ["git_log/2", "git_log/3", "git_log/4", "git_log/5", "git_log/6"]
    assert any(p.startswith("git_status/") for p in paths)
    assert {"path": "git_status/10", "before": "\tnotes.txt", "after": None} in commit.diff
    # the execution worked on a copy: the fixture is as it was
    porcelain = subprocess.run(["git", "-C", str(fixture_repo), "status", "--porcelain"], capture_output=True,
                               text=True, check=True, timeout=30).stdout
    assert porcelain.splitlines() == [" M README.md", "?? notes.txt"]


def test_failing_and_unknown_actions_are_rejected(git_env: McpEnvironment) -> None:
    unstaged = parse_blueprint(proposal(("git_commit", {**REPO, "message": "Nothing staged"})), git_env)
    unknown = parse_blueprint(proposal(("git_push", {**REPO, "remote": "origin"})), git_env)
    with McpSession(git_env) as session:
        for record in (unstaged, unknown):
            execute_blueprint(record, git_env, session)
    assert unstaged.rejected_by == EXECUTION_CHECK and unstaged.executed
    assert unstaged.reason is not None and unstaged.reason.startswith(
        "call 0 (git_commit) failed: the tool answered with an error: ") and "No changes staged" in unstaged.reason
    assert (unknown.rejected_by, unknown.reason, unknown.executed) == (
        UNKNOWN_TOOL_CHECK, "action 0 names unknown tool 'git_push'", False)


# ------------------------------------------------------------------------------------------- trajectories


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": json.dumps(arguments)}


class Script:
    """Scripted agents: the assistant's replies in order; the user states the goal, then thanks and finishes."""

    def __init__(self, replies: list[AssistantReply]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, Any]]] = []

    async def assistant(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AssistantReply:
        self.seen.append(messages)
        return self.replies.pop(0)

    async def user(self, goal: str, turns: Sequence[Turn]) -> UserReply:
        return UserReply(goal) if not turns else UserReply("Thanks!", finished=True)


def trajectory(env: McpEnvironment, record: BlueprintRecord, script: Script) -> TrajectoryOutcome:
    return asyncio.run(run_trajectory(env, record, script.user, script.assistant, "mcp-d1"))


def test_a_trajectory_reaching_the_ground_truth_state_is_accepted(git_env: McpEnvironment,
                                                                   commit: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("git_add", repo_path="/workspace", files=["../outside.txt"])]),
                     AssistantReply(tool_calls=[call("git_add", repo_path="/workspace", files=["notes.txt"]),
                                                call("git_commit", repo_path="/workspace", message="Add notes")]),
                     AssistantReply(content="Done: the notes were committed successfully.")])
    dialog = trajectory(git_env, commit, script).dialog
    assert (dialog.status, dialog.reason) == ("accepted", None)
    assert [t.role for t in dialog.turns] == ["user", "assistant", "tool", "assistant", "tool", "tool", "assistant"]
    # a failed call gets its error, with the workspace as the model knows it (never the sandbox's real folder)
    error = json.loads(dialog.turns[2].content or "")["error"]
    assert "outside the repository '/workspace'" in error and "toolace-sandbox" not in error
    assert json.loads(dialog.turns[4].content or "") == {"text": "Files staged successfully"}
    assert script.seen[0][0]["content"].endswith("The files are in the folder /workspace: give that path wherever "
                                                 "a tool asks for one.")  # the assistant is told where
    meta = dialog.meta
    assert meta["env_id"] == git_env.env_id and meta["source"] == "mcp"
    assert meta["server"] == git_env.server and meta["initial_state"] == git_env.initial
    assert meta["ground_truth_actions"][0] == {"api": "git_add",
                                               "arguments": {"repo_path": "/workspace", "files": ["notes.txt"]}}
    assert meta["final_state_diff"] == commit.diff


def test_a_trajectory_reaching_another_state_is_rejected_with_the_differing_paths(
        git_env: McpEnvironment, commit: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("git_add", repo_path="/workspace", files=["notes.txt"]),
                                                call("git_commit", repo_path="/workspace", message="notes")]),
                     AssistantReply(content="Done: committed successfully.")])
    dialog = trajectory(git_env, commit, script).dialog
    assert dialog.rejected_by == FINAL_STATE_CHECK
    assert dialog.reason == "the final state differs from the ground truth at git_log/2, git_log/5"
    assert [d["path"] for d in dialog.meta["final_state_diff"]] == [d["path"] for d in commit.diff]


def test_a_destructive_call_the_goal_did_not_ask_for_is_rejected(git_env: McpEnvironment,
                                                                  commit: BlueprintRecord) -> None:
    script = Script([AssistantReply(tool_calls=[call("git_add", repo_path="/workspace", files=["README.md"])]),
                     AssistantReply(tool_calls=[call("git_reset", repo_path="/workspace")]),
                     AssistantReply(content="never reached")])
    dialog = trajectory(git_env, commit, script).dialog
    assert dialog.rejected_by == DESTRUCTIVE_CHECK
    assert dialog.reason is not None and dialog.reason.startswith(
        'git_reset({"repo_path": "/workspace"}) changed git_status/')
    assert dialog.reason.endswith("which the goal does not ask for") and len(script.replies) == 1


def test_the_state_diff_names_probe_and_line() -> None:
    before = {"p": {"1": {"text": "a"}, "2": {"text": "b"}}, "q": {"1": {"text": "x"}}}
    after = {"p": {"1": {"text": "a"}, "2": {"text": "B"}, "3": {"text": "c"}}, "q": {"1": {"text": "x"}}}
    assert [d.as_dict() for d in mcp_state_diff(before, after)] == [
        {"path": "p/2", "before": "b", "after": "B"}, {"path": "p/3", "before": None, "after": "c"}]
    assert mcp_state_diff(after, after) == []


# --------------------------------------------------------------------------------------------- bad input


def test_bad_servers_and_specs_are_rejections_with_their_reasons(fixture_repo: Path) -> None:
    specs = [git_spec(fixture_repo, command=["/nonexistent/mcp-server"]),
             git_spec(fixture_repo, start_timeout_s=0.5,
                      command=[sys.executable, "-c", "import time; time.sleep(30)"]),
             git_spec(fixture_repo, probes=[{"tool": "git_status", "arguments": REPO},
                                            {"tool": "git_show", "arguments": {**REPO, "revision": "nope"}}]),
             git_spec(fixture_repo, probes=[{"tool": "git_commit", "arguments": {**REPO, "message": "x"}}]),
             git_spec(fixture_repo, parameter_descriptions={})]
    with ThreadPoolExecutor(len(specs)) as pool:  # each in its own sandbox: they may run at once
        missing, hanging, failing_probe, writing_probe, undescribed = pool.map(prepare_mcp_environment, specs)
    assert missing.rejected_by == SERVER_CHECK
    assert missing.reason == ("MCP environment git: MCP server `/nonexistent/mcp-server` could not be started: "
                              "No such file or directory")
    assert hanging.rejected_by == SERVER_CHECK
    assert hanging.reason is not None and hanging.reason.endswith("did not answer within 0.5 s (during initialize)")
    assert failing_probe.rejected_by == PROBE_CHECK
    assert failing_probe.reason is not None and failing_probe.reason.startswith(
        "MCP environment git: probe git_show (git_show) answered with an error: ")
    assert writing_probe.rejected_by == ENVIRONMENT_CHECK
    assert writing_probe.reason == ("MCP environment git: probe git_commit names tool 'git_commit', which is not "
                                    "read-only (no readOnlyHint): a probe must not change the state (name it in "
                                    "read_only_tools to vouch for it)")
    assert undescribed.rejected_by == ENVIRONMENT_CHECK
    assert undescribed.reason == ("MCP environment git: tool git_status: parameter repo_path has no description "
                                  "(every published tool parameter needs one): give it in parameter_descriptions "
                                  "(repo_path or git_status.repo_path)")


def test_the_server_has_no_network_and_sees_the_workspace_as_the_model_does() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # something to reach on this machine's loopback
    try:
        record = prepare_mcp_environment(McpEnvironmentSpec(
            name="notebook", command=fixture_command(), tools=["add_note", "list_notes"],
            parameter_descriptions={"text": "The note's text"},
            probes=[{"tool": "list_notes"},
                    {"tool": "connect", "arguments": {"host": "127.0.0.1", "port": listener.getsockname()[1]}}]))
    finally:
        listener.close()
    assert record.accepted and record.mcp is not None
    lines = [r["text"].strip() for r in record.mcp.initial["connect"].values()]
    assert '"reached": false' in lines and '"cwd": "/workspace",' in lines  # its folder, as the model names it
    assert any("Network is unreachable" in line for line in lines)
    assert [r["text"] for r in record.mcp.initial["list_notes"].values()] == ["{", ' "notes": []', "}"]


def test_the_run_config_takes_mcp_servers_and_says_what_is_wrong(tmp_path: Path, fixture_repo: Path) -> None:
    server = {"name": "git", "command": [GIT, "--repository", "{workspace}"], "fixture": str(fixture_repo),
              "probes": [{"tool": "git_status", "arguments": REPO}]}
    config = RunConfig(agentic_mcp_servers=[server])
    assert config.agentic_mcp_servers[0].probes[0].key == "git_status"
    assert config.public_dict()["agentic_mcp_servers"][0]["fixture"] == str(fixture_repo.resolve())
    for change, message in (({"fixture": str(tmp_path / "nope")}, "fixture .* is not a folder"),
                            ({"probes": []}, "agentic_mcp_servers.0.probes: List should have at least 1 item"),
                            ({"env": {"GITHUB_TOKEN": "x"}}, r"env holds a secret \(GITHUB_TOKEN\)"),
                            ({"probes": [{"tool": "git_log", "ignore_lines": ["(?=x)"]}]}, "uses a lookahead"),
                            ({"fixtur": "x"}, "agentic_mcp_servers.0.fixtur: Extra inputs are not permitted")):
        path = tmp_path / "run.yaml"  # JSON is YAML
        path.write_text(json.dumps({"agentic_mcp_servers": [{**server, **change}]}))
        with pytest.raises(ConfigError, match=message):
            load_config(path)


# ------------------------------------------------------------------------------------------- end to end


class ProposingGateway:
    """The gateway's part the blueprint stage uses: each structured answer is the next proposal."""

    def __init__(self, proposals: list[BlueprintProposal]) -> None:
        self.proposals = list(proposals)
        self.stats: dict[str, LLMStats] = {}

    async def structured(self, output: type, messages: list[dict[str, Any]], **_: Any) -> Structured[Any]:
        return Structured(value=self.proposals.pop(0), raw_outputs=["{}"])


def test_agentic_dialogs_over_an_mcp_server_are_published_with_their_environment(fixture_repo: Path) -> None:
    script = Script([AssistantReply(tool_calls=[call("git_add", repo_path="/workspace", files=["notes.txt"])]),
                     AssistantReply(tool_calls=[call("git_commit", repo_path="/workspace", message="Add notes")]),
                     AssistantReply(content="Your notes were committed successfully.")])
    settings = AgenticSettings(dialogs=1, blueprints_per_environment=1, model_checks=False,
                               mcp_environments=(git_spec(fixture_repo),))
    run = asyncio.run(make_agentic_dialogs([], [], ProposingGateway([COMMIT]), settings,  # type: ignore[arg-type]
                                           user=lambda k: script.user, assistant=lambda k: script.assistant))
    stats = run.stats()
    assert {k: stats[k] for k in ("environments_accepted", "environment_sources", "blueprints_accepted",
                                  "trajectories_accepted", "rejected_by")} == {
        "environments_accepted": 1, "environment_sources": {"synthesised": 0, "mcp": 1}, "blueprints_accepted": 1,
        "trajectories_accepted": 1, "rejected_by": {}}
    assert stats["executions"] == 4  # two ground-truth actions, two calls of the trajectory
    dialog = run.accepted[0]
    meta = toolace_row(dialog)["meta"]
    assert meta["dialog_type"] == "agentic_multi_turn" and meta["source"] == "mcp"
    assert meta["env_id"] == run.environments[0].env_id and meta["env_id"].startswith("mcp_git_")
    assert meta["server"]["name"] == "mcp-git" and meta["server"]["command"][1:] == ["--repository", "{workspace}"]
    assert "git_status" in meta["initial_state"] and meta["final_state_diff"][0]["path"] == "git_log/2"
