"""An MCP server as the environment of ``agentic_multi_turn`` dialogs in a real run: the pipeline flow with
``agentic_mcp_servers`` naming the real ``mcp-server-git`` over a seeded repository (the helpers of
tests/test_mcp_environments.py) and a mix that is all agentic; the scripted server plays the blueprint writer, the
committee, the user and the assistant (tests/mcp_git_script.py). The run publishes the server's dialogs in every
format with their environment in ``meta``, counts the MCP source in the manifest and keeps every decided dialog in
its table. One run (a module fixture) serves every test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.toolace_pipeline import toolace_pipeline
from tests.mcp_git_script import COMMITTED, git_rule, git_task
from tests.test_mcp_environments import GIT, git_spec, seeded_repo
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")

DIALOGS = 3  # the blueprint prompt's three kinds: a commit, a lookup, a commit of both files
TASKS = [git_task(k) for k in range(1, DIALOGS + 1)]
ENV_META = ("env_id", "source", "server", "initial_state", "ground_truth_actions", "final_state_diff")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tool_results(row: dict[str, Any]) -> list[Any]:
    """A ToolACE row's tool results, one per call (a tool turn is a list of ``{"name", "results"}``)."""
    return [item["results"] for turn in row["conversations"] if turn["from"] == "tool"
            for item in json.loads(turn["value"])]


@pytest.fixture(scope="module")
def mcp_run(prefect_harness, scripted_server, tmp_path_factory, mixed_corpus) -> dict[str, Any]:
    """One run of three agentic dialogs, all from the git environment; its run folder and the fixture repository."""
    from tests.conftest import judges_pass

    folder = tmp_path_factory.mktemp("mcp-flow")
    repo = seeded_repo(folder / "repo")
    scripted_server.reset()
    for rule in (judges_pass, git_rule):  # the last added is tried first
        scripted_server.script(rule)
    try:
        config = RunConfig(llm_base_url=scripted_server.base_url, llm_model="scripted-model",
                           out=str(folder / "out"), run_id="mcp-agentic", corpus=mixed_corpus, apis=1,
                           dialogs=DIALOGS, batch_size=4, target_model=None, template_check_rows=0,
                           dialog_mix={"agentic_multi_turn": 1.0}, agentic_mcp_servers=[git_spec(repo)])
        summary = toolace_pipeline(config)
        return {"run_dir": Path(summary["run_dir"]), "repo": repo}
    finally:
        scripted_server.reset()


def test_the_servers_dialogs_are_published_with_their_environment_in_meta(mcp_run):
    rows = lines(mcp_run["run_dir"] / "dataset" / "toolace.jsonl")
    assert sorted(r["meta"]["user_goal"] for r in rows) == sorted(t.goal for t in TASKS)
    env_ids = {r["meta"]["env_id"] for r in rows}
    assert len(env_ids) == 1 and next(iter(env_ids)).startswith("mcp_git_")
    by_goal = {r["meta"]["user_goal"]: r for r in rows}
    for task in TASKS:
        meta = by_goal[task.goal]["meta"]
        assert meta["dialog_type"] == "agentic_multi_turn" and meta["source"] == "mcp"
        assert meta["server"]["name"] == "mcp-git" and meta["server"]["version"]
        assert meta["server"]["command"] == [GIT, "--repository", "{workspace}"]
        initial = meta["initial_state"]  # the probes' lines, as the server showed them before any call
        assert "Message: first commit" in [r["text"] for r in initial["git_log"].values()]
        assert {"\tmodified:   README.md", "\tnotes.txt"} <= {r["text"] for r in initial["git_status"].values()}
        assert [a["api"] for a in meta["ground_truth_actions"]] == [a["api"] for a in task.blueprint["actions"]]
        assert meta["required_outputs"] == task.blueprint["outputs"]
        if task.blueprint["changes_state"]:  # the new commit's lines in the log, and the status without the files
            message = task.calls[-1][1]["message"]
            diff = meta["final_state_diff"]
            assert [d["path"] for d in diff][:5] == ["git_log/2", "git_log/3", "git_log/4", "git_log/5", "git_log/6"]
            assert {"path": "git_log/5", "before": None, "after": f"Message: {message}"} in diff
            assert {"path": "git_status/10", "before": "\tnotes.txt", "after": None} in diff
        else:
            assert meta["final_state_diff"] == []
    # the calls the server executed and its real results are the published conversation
    commit = by_goal[TASKS[0].goal]["conversations"]
    assert [t["from"] for t in commit] == ["user", "assistant", "tool", "assistant"]
    assert commit[1]["value"] == '[git_add(repo_path="/workspace", files=["notes.txt"]), ' \
                                 'git_commit(repo_path="/workspace", message="Add notes")]'
    assert "Files staged successfully" in commit[2]["value"]
    assert "Changes committed successfully with hash " in commit[2]["value"]
    assert COMMITTED in commit[3]["value"]
    lookup = by_goal[TASKS[1].goal]["conversations"]
    assert "\\tnotes.txt" in lookup[2]["value"] and "notes.txt" in lookup[3]["value"]  # git_status's real answer


def test_every_format_holds_the_same_mcp_dialogs_row_for_row(mcp_run):
    run_dir = mcp_run["run_dir"]
    rows = lines(run_dir / "dataset" / "toolace.jsonl")
    sharegpt_rows = lines(run_dir / "dataset" / "sharegpt.jsonl")
    assert [r["id"] for r in sharegpt_rows] == [r["id"] for r in rows]
    for row, other in zip(rows, sharegpt_rows, strict=True):
        assert other["meta"] == row["meta"] and other["meta"]["source"] == "mcp"
        assert {t["from"] for t in other["conversations"]} == {"human", "function_call", "observation", "gpt"}
    # OpenAI's fine-tuning format takes no other key than messages and tools (no id, no meta: README's table)
    openai_rows = lines(run_dir / "dataset" / "openai.jsonl")
    assert len(openai_rows) == len(rows)
    for row, other in zip(rows, openai_rows, strict=True):
        assert set(other) == {"messages", "tools"}
        assert other["messages"][0] == {"role": "user", "content": row["meta"]["user_goal"]}
        assert [m["role"] for m in other["messages"]][-1] == "assistant"
        assert [t["function"]["name"] for t in other["tools"]] == row["meta"]["apis_offered"] == [
            "git_status", "git_add", "git_commit", "git_reset", "git_log"]
        results = [json.loads(m["content"]) for m in other["messages"] if m["role"] == "tool"]
        assert results and results == tool_results(row)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    shard = pl.concat([pl.from_arrow(pq.read_table(run_dir / p)) for p in manifest["dataset"]["parquet"]])
    assert shard["id"].to_list() == [r["id"] for r in rows]
    assert set(shard["dialog_type"]) == {"agentic_multi_turn"} and set(shard["domain"]) == {"mcp-git"}
    first = shard.row(0, named=True)
    messages = [json.loads(m) if isinstance(m, str) else m for m in first["messages"]]
    assert messages[0] == {"role": "user", "content": rows[0]["meta"]["user_goal"]}
    assert any(m["role"] == "tool" for m in messages)  # the server's real results, as a model will see them


def test_the_parquet_shards_carry_the_environment_meta(mcp_run):
    """The trainer-ready shards carry each agentic dialog's environment (``environment``, a JSON value) as the JSON
    rows carry it in ``meta``."""
    import datasets

    run_dir = mcp_run["run_dir"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    files = [str(run_dir / p) for p in manifest["dataset"]["parquet"]]
    shard = datasets.load_dataset("parquet", data_files=files, split="train")
    metas = {r["id"]: r["meta"] for r in lines(run_dir / "dataset" / "toolace.jsonl")}
    assert len(shard) == len(metas)
    for row in shard:
        environment = row["environment"]
        assert environment["source"] == "mcp" and set(ENV_META) <= set(environment)
        assert all(environment[key] == metas[row["id"]][key] for key in ENV_META)


def test_the_manifest_counts_the_mcp_source_and_nothing_is_lost(mcp_run):
    run_dir = mcp_run["run_dir"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["agentic"]
    assert counts["environment_sources"] == {"synthesised": 0, "mcp": 1}
    assert (counts["environments_proposed"], counts["environments_accepted"]) == (1, 1)
    assert (counts["blueprints_proposed"], counts["blueprints_executed"], counts["blueprints_accepted"]) == (3, 3, 3)
    assert (counts["trajectories_run"], counts["trajectories_accepted"]) == (3, 3)
    assert counts["executions"] == 10  # the actions (2 + 1 + 2) and the trajectories' calls, executed on the server
    assert counts["rejected_by"] == {}
    assert manifest["expectations"]["success"]

    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    published = {r["id"] for r in lines(run_dir / "dataset" / "toolace.jsonl")}
    assert len(published) == DIALOGS
    assert dialogs.height == counts["trajectories_run"]  # every decided dialog is in the table
    assert set(dialogs["dialog_type"]) == {"agentic_multi_turn"}
    assert set(dialogs.filter(pl.col("status") == "accepted")["dialog_id"]) == published
    assert manifest["stages"]["dialog_generation"]["items_in"] == DIALOGS
    # every execution worked on a copy: the fixture repository is as it was
    porcelain = subprocess.run(["git", "-C", str(mcp_run["repo"]), "status", "--porcelain"], capture_output=True,
                               text=True, check=True, timeout=30).stdout
    assert porcelain.splitlines() == [" M README.md", "?? notes.txt"]
