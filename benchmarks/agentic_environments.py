"""Benchmark of the agentic pipeline (synthesised environments, blueprints, trajectories) against the scripted server.

``--families`` copies of the library APIs (:mod:`tasks.environments.library_example`), each in its own domain, make
as many API families. :func:`tasks.environments.agentic_dialogs.make_agentic_dialogs` runs on them through one
``LLMGateway`` over real HTTP to an in-process :class:`ScriptedLLMServer` whose rules
(``tests/agentic_library_script.py``) play the environment designer, the blueprint writer, the committee, the user
and the assistant. It prints the run's counts (environments, blueprints proposed / executed / accepted,
trajectories accepted, sandbox executions per second, LLM tokens per accepted trajectory), then the interpreter's
own call rate in process and through one sandboxed worker, so the cost of the subprocess is visible.

``--embedded`` runs the same pipeline on the embedded SmolLM2-135M model instead (started on 127.0.0.1 as a run
starts it): every role is the small model's, so this measures what it manages, not the machinery.

``--mcp-git N`` runs it on the real ``mcp-server-git`` environment instead of synthesised ones
(:func:`tests.test_mcp_environments.git_spec` over a freshly seeded repository, no API families): N blueprints
proposed, executed (each execution on a fresh copy of the repository with a freshly started server) and reviewed,
and one trajectory per accepted blueprint, every role scripted by ``tests/mcp_git_script.py``. Its executions per
second count the server start-ups (the environment's preparation, one per executed blueprint, one per trajectory:
``server_starts``) in the execution time, which adds up the trajectories' overlapping executions
(``executions_per_wall_s`` divides by the wall time instead); then the cost of one execution's start (fixture
copied, server started), the server's own call rate in one execution (``--calls``, at most 200) and one state
observation, measured apart.

Usage: python benchmarks/agentic_environments.py [--families 8] [--votes 3] [--latency 0.0] [--calls 2000]
       [--embedded | --mcp-git N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from schemas.records import APISpec  # noqa: E402
from tasks.environments.agentic_dialogs import AgenticSettings, make_agentic_dialogs  # noqa: E402
from tasks.environments.declarative import Interpreter, Limits  # noqa: E402
from tasks.environments.declarative_sandbox import SandboxSession  # noqa: E402
from tasks.environments.library_example import library_apis, library_environment  # noqa: E402
from tests.agentic_library_script import library_rule  # noqa: E402
from tests.scripted_llm_server import ScriptedLLMServer  # noqa: E402
from toolace.llm.gateway import GatewaySettings, LLMGateway  # noqa: E402


def families(count: int) -> list[APISpec]:
    apis: list[APISpec] = []
    for k in range(count):
        for api in library_apis():
            apis.append(api.model_copy(update={"api_id": f"{api.api_id}_{k}", "domain": f"Library {k}"}))
    return apis


async def pipeline(base_url: str, args: argparse.Namespace, model: str = "scripted-model") -> dict:
    gateway = LLMGateway(GatewaySettings(base_url=base_url, model=model, backoff_base_s=0.01))
    try:
        settings = AgenticSettings(dialogs=3 * args.families, max_environments=args.families,
                                   judge_votes=args.votes)
        run = await make_agentic_dialogs(families(args.families), [], gateway, settings)
        return run.stats()
    finally:
        await gateway.aclose()


async def mcp_git_pipeline(base_url: str, args: argparse.Namespace, repo: Path) -> dict:
    from tests.test_mcp_environments import git_spec

    gateway = LLMGateway(GatewaySettings(base_url=base_url, model="scripted-model", backoff_base_s=0.01))
    try:
        settings = AgenticSettings(dialogs=args.mcp_git, blueprints_per_environment=args.mcp_git,
                                   judge_votes=args.votes, mcp_environments=(git_spec(repo),))
        run = await make_agentic_dialogs([], [], gateway, settings)
        stats = run.stats()
        # every execution starts a server: the preparation's, each blueprint's, each trajectory's
        stats["server_starts"] = len(run.environments) + stats["blueprints_executed"] + stats["trajectories_run"]
        # execution_s adds up the trajectories' executions, which overlap: the executions per second of wall time too
        stats["executions_per_wall_s"] = round(stats["executions"] / run.wall_time_s, 1) if run.wall_time_s else None
        return stats
    finally:
        await gateway.aclose()


def mcp_call_rates(repo: Path, calls: int) -> dict:
    """One execution's start (fresh fixture copy, server started; the mean of 5), ``calls`` git_status calls in one
    execution, and one observation of the state (every probe)."""
    from tasks.environments.mcp_environments import McpSession, prepare_mcp_environment
    from tests.test_mcp_environments import REPO, git_spec

    record = prepare_mcp_environment(git_spec(repo))
    assert record.mcp is not None, record.reason
    env, starts, limits = record.mcp, 5, Limits(max_calls=calls + 10)
    with McpSession(env) as session:
        began = time.perf_counter()
        for _ in range(starts):
            session.load(env, limits)
        load_s = (time.perf_counter() - began) / starts
        began = time.perf_counter()
        for _ in range(calls):
            session.call("git_status", dict(REPO))
        calls_per_s = calls / (time.perf_counter() - began)
        began = time.perf_counter()
        session.state()
        state_s = time.perf_counter() - began
    return {"mcp_execution_start_s": round(load_s, 3), "mcp_git_status_calls_per_s": round(calls_per_s),
            "mcp_state_observation_s": round(state_s, 3)}


def run_mcp_git(args: argparse.Namespace) -> None:
    from tests.mcp_git_script import git_rule
    from tests.test_mcp_environments import seeded_repo

    with tempfile.TemporaryDirectory(prefix="bench-mcp-git-") as folder:
        repo = seeded_repo(Path(folder) / "repo")
        server = ScriptedLLMServer(latency=args.latency, keep_requests=False).start()
        try:
            server.script(git_rule)
            stats = asyncio.run(mcp_git_pipeline(server.base_url, args, repo))
        finally:
            server.stop()
        print(json.dumps(stats, indent=2))
        print(json.dumps(mcp_call_rates(repo, min(args.calls, 200)), indent=2))


def call_rates(calls: int) -> dict:
    env = library_environment()
    work = [("checkout_book", {"book_id": "b1", "member_id": "m1"}), ("get_book", {"book_id": "b1"}),
            ("search_books", {"author": "austen"}), ("return_book", {"loan_id": 2})]
    limits = Limits(max_calls=calls + 10)
    interpreter = Interpreter(env, limits)
    began = time.perf_counter()
    for n in range(calls):
        interpreter.call(*work[n % len(work)])
    in_process = calls / (time.perf_counter() - began)
    with SandboxSession() as session:
        began = time.perf_counter()
        session.load(env, limits)
        started = time.perf_counter() - began
        began = time.perf_counter()
        for n in range(calls):
            session.call(*work[n % len(work)])
        sandboxed = calls / (time.perf_counter() - began)
    return {"interpreter_calls_per_s_in_process": round(in_process), "sandbox_calls_per_s": round(sandboxed),
            "sandbox_start_and_load_s": round(started, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="scripted server latency per answer (s)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--embedded", action="store_true", help="the embedded SmolLM2 model plays every role")
    parser.add_argument("--mcp-git", type=int, default=0, metavar="N",
                        help="N blueprint+trajectory cycles on the real mcp-server-git environment instead")
    args = parser.parse_args()
    if args.mcp_git and args.embedded:
        parser.error("--mcp-git and --embedded exclude each other")
    if args.mcp_git:
        print(f"# {platform.node()} python {platform.python_version()} mcp_git={args.mcp_git} votes={args.votes} "
              f"latency={args.latency}")
        run_mcp_git(args)
        return
    print(f"# {platform.node()} python {platform.python_version()} families={args.families} votes={args.votes} "
          f"latency={args.latency} embedded={args.embedded}")
    if args.embedded:
        from toolace.llm.endpoint import llm_endpoint

        began = time.perf_counter()
        with llm_endpoint(None, None) as endpoint:
            stats = asyncio.run(pipeline(endpoint.base_url, args, endpoint.model))
        stats["wall_time_with_model_start_s"] = round(time.perf_counter() - began, 1)
        print(json.dumps(stats, indent=2))
        return
    server = ScriptedLLMServer(latency=args.latency, keep_requests=False).start()
    try:
        server.script(library_rule)
        stats = asyncio.run(pipeline(server.base_url, args))
    finally:
        server.stop()
    print(json.dumps(stats, indent=2))
    print(json.dumps(call_rates(args.calls), indent=2))


if __name__ == "__main__":
    main()
