"""The sandboxed worker that runs BFCL's executable classes: calls, state, the allow list, the limits, clean-up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks.environments.bfcl_classes import BfclSandbox, Call, execution_result
from tasks.environments.sandbox import (
    SandboxCrashed,
    SandboxLimitExceeded,
    SandboxLimits,
    SandboxRequestError,
    SandboxTimeout,
    SandboxWorker,
    from_wire,
    to_wire,
)

pytest.importorskip("bfcl_eval", reason="bfcl-eval is installed by `toolace fetch-models --only bfcl`")

FILES = {"GorillaFileSystem": {"root": {"ws": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "alpha\nbeta budget\ngamma"}}}}}}


def _children() -> set[int]:
    """The pids of this process's live (not zombie) children."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _gone(worker: SandboxWorker, folder: Path | None) -> None:
    assert worker.pid is not None
    assert not Path(f"/proc/{worker.pid}").exists()  # killed and reaped
    assert not worker.alive
    assert folder is not None and not folder.exists()  # its temporary folder removed


@pytest.fixture()
def no_leftovers():
    before = _children()
    yield
    assert _children() <= before


def test_calls_on_several_classes_keep_state(no_leftovers: None) -> None:
    with BfclSandbox() as box:
        methods = box.load("env", ["GorillaFileSystem", "MathAPI", "TwitterAPI", "TicketAPI"], {
            **FILES, "TwitterAPI": {"username": "ann", "password": "pw", "authenticated": True, "tweets": {},
                                    "comments": {}, "retweets": {}, "following_list": [], "tweet_counter": 0},
            "TicketAPI": {"ticket_queue": [], "ticket_counter": 1, "current_user": "ann"}})
        assert {"cd", "mkdir", "ls", "mean", "post_tweet", "create_ticket", "get_ticket"} <= set(methods)
        results = box.execute("env", [
            Call("cd", kwargs={"folder": "ws"}), Call("mkdir", kwargs={"dir_name": "reports"}),
            Call("ls"), Call("grep", kwargs={"file_name": "notes.txt", "pattern": "budget"}),
            Call("mean", kwargs={"numbers": [1, 2, 3, 6]}),
            Call("post_tweet", kwargs={"content": "hello", "tags": ["#a"]}),
            Call("create_ticket", kwargs={"title": "broken", "description": "it is"}),
        ])
        assert json.loads(results[2]) == {"current_directory_content": ["notes.txt", "reports"]}
        assert json.loads(results[3]) == {"matching_lines": ["beta budget"]}
        assert json.loads(results[4]) == {"result": 3.0}
        tweet = json.loads(results[5])
        assert tweet["content"] == "hello" and tweet["username"] == "ann"
        ticket_id = json.loads(results[6])["id"]
        # state is kept across requests: the working directory, the new folder, the ticket
        later = box.execute("env", [Call("pwd"), Call("get_ticket", kwargs={"ticket_id": ticket_id})])
        assert json.loads(later[0]) == {"current_working_directory": "/ws"}
        assert json.loads(later[1])["title"] == "broken"
        state = box.state("env")
        assert "reports" in state["GorillaFileSystem"]["root"]["contents"]
        assert state["TwitterAPI"]["tweet_counter"] == 1


def test_state_comparison_names_the_differing_attribute() -> None:
    with BfclSandbox() as box:
        for env in ("model", "truth"):
            box.load(env, ["GorillaFileSystem"], FILES)
        assert box.compare("model", "truth").valid
        box.execute("model", [Call("touch", kwargs={"file_name": "extra.txt"})])
        comparison = box.compare("model", "truth")
        assert not comparison.valid and comparison.class_name == "GorillaFileSystem"
        assert list(comparison.differences) == ["root"]
        assert "extra.txt" in comparison.differences["root"]["model"]["contents"]
        assert "extra.txt" not in comparison.differences["root"]["ground_truth"]["contents"]


def test_only_allowed_methods_run_and_errors_become_results() -> None:
    with BfclSandbox() as box:
        box.load("env", ["GorillaFileSystem"], FILES)
        results = box.execute("env", [
            Call("_load_scenario", kwargs={"scenario": {}}),  # private: not on the allow list
            Call("__init__"), Call("exit"), Call("os.remove", kwargs={"path": "x"}), Call("open", ("f",)),
            Call("GorillaFileSystem.ls"), Call("mean", kwargs={"numbers": [1]}),  # MathAPI is not loaded
            Call("cd", kwargs={"nope": 1}), Call("cd", kwargs={"folder": "ws"}, error="nested call not executed"),
        ])
        assert results == [
            "Error during execution: name '_load_scenario' is not defined",
            "Error during execution: name '__init__' is not defined",
            "Error during execution: Function call exit is not allowed.",
            "Error during execution: Function call remove is not allowed.",
            "Error during execution: name 'open' is not defined",
            "Error during execution: name 'GorillaFileSystem' is not defined",
            "Error during execution: name 'mean' is not defined",
            "Error during execution: GorillaFileSystem.cd() got an unexpected keyword argument 'nope'",
            "Error during execution: nested call not executed",
        ]
        assert box.state("env")["GorillaFileSystem"]["root"]["name"] == "ws"  # nothing reloaded the scenario
        with pytest.raises(SandboxRequestError, match="unknown BFCL class"):
            box.load("other", ["NotAClass"], {})
        with pytest.raises(SandboxRequestError, match="no environment 'missing'"):
            box.execute("missing", [Call("ls")])
        assert box.worker.alive  # refused requests leave the worker serving


def test_a_call_past_the_wall_clock_limit_kills_the_worker(no_leftovers: None) -> None:
    box = BfclSandbox(SandboxLimits(call_timeout_s=1.0))
    with box:
        box.load("env", ["MathAPI"], {})
        folder = box.worker.folder
        with pytest.raises(SandboxTimeout, match="wall-clock limit"):
            box.execute("env", [Call("logarithm", kwargs={"value": 2.0, "base": 3.0, "precision": 1_000_000})])
        assert not box.worker.alive
    _gone(box.worker, folder)


def test_cpu_limit_kills_the_worker(no_leftovers: None) -> None:
    box = BfclSandbox(SandboxLimits(cpu_s=1, call_timeout_s=30.0))
    with box:
        box.load("env", ["MathAPI"], {})
        folder = box.worker.folder
        with pytest.raises(SandboxLimitExceeded, match="CPU time limit of 1 s"):
            box.execute("env", [Call("power", kwargs={"base": 3, "exponent": 100_000_000})])
    _gone(box.worker, folder)


def test_memory_limit_ends_the_worker_with_the_reason(no_leftovers: None) -> None:
    box = BfclSandbox(SandboxLimits(memory_mb=384))
    with box:
        box.load("env", ["MathAPI"], {})
        folder = box.worker.folder
        with pytest.raises(SandboxLimitExceeded, match="memory limit of 384 MiB exceeded"):
            box.execute("env", [Call("square_root", kwargs={"number": 2.0, "precision": 1_000_000_000})])
        with pytest.raises(SandboxCrashed, match="not running"):
            box.execute("env", [Call("add", kwargs={"a": 1, "b": 2})])
    _gone(box.worker, folder)


def test_handler_must_live_in_the_environments_package() -> None:
    with pytest.raises(ValueError, match="tasks.environments"):
        SandboxWorker("os:system")


def test_typed_wire_round_trip_and_result_strings() -> None:
    value = {"t": (1, "a", [2, (3,)]), "b": b"\x00\xff", "c": 1 + 2j, "k": {1: "one", (1, 2): "pair"},
             "__tuple__": "plain key", "f": 1.5, "n": None}
    assert from_wire(json.loads(json.dumps(to_wire(value)))) == value
    assert execution_result("text") == "text"
    assert execution_result({"a": 1}) == '{"a": 1}'
    assert execution_result({"a": {1, 2}}) == "{'a': {1, 2}}"  # not JSON: str, as BFCL does
    assert execution_result(None) == "None"
