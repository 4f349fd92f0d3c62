"""Do faults cost time in proportion? The issue's run (`toolace run --apis 60 --dialogs 30`, decision_samples 1,
guidance_rounds 0, model_checks false, default concurrency 8 and batch size 16) against the scripted server,
once clean and once with 20% of requests faulty, and the ratio of their wall times (target: at most 3x).

    .venv/bin/python benchmarks/fault_run.py [--latency 1.0] [--stall-s 120] [--apis 60] [--dialogs 30]

The fault mix (issue 19), each kind on 4% of requests, drawn reproducibly per request: a 429 with
``Retry-After: 0.5``; a 500; a stall of ``--stall-s`` seconds, then the normal answer; the TCP connection closed
right after the request is read, with no response (``hangup``); a normal answer whose content is cut in half.

Each run is the real CLI (``toolace run ... --config``) in its own process, against its own scripted server
process (``benchmarks.scale_server``'s varied answers, every answer ``--latency`` seconds late, like a model on
a shared server), with a fresh ``--out`` and ``PREFECT_HOME``. Printed per run: the CLI's wall time, the flow's
own wall time (the manifest's ``started_at`` to ``finished_at``, which leaves out the temporary Prefect server's
start), LLM requests, hedges and retries, per-stage wall times, and the counts that show every item accounted
for (each stage's ``items_in`` = accepted + rejected); for the faulty run also the faults the server injected and
how many stalled requests the client abandoned (their hedge had answered). Figures are recorded in
docs/benchmarks.md, never asserted.

``--no-hedge`` sets ``llm_hedge: false``: the same runs as before hedging existed, for comparison.
``serve`` runs the faulty server alone: ``python -m benchmarks.fault_run serve --port 8765 --fault-rate 0.2``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAULT_KINDS = ("rate_limit", "server_error", "stall", "hangup", "truncated_json")
CONFIG = "decision_samples: 1\nguidance_rounds: 0\nmodel_checks: false\ntemplate_families: []\n"


def serve(args: argparse.Namespace) -> None:
    """The scale benchmarks' scripted server with the issue's fault mix; its fault counts are written to
    ``--counts`` every second (the benchmark reads them after the run)."""
    from benchmarks.scale_server import build_server

    server = build_server("127.0.0.1", args.port, args.latency)
    if args.fault_rate > 0:
        share = args.fault_rate / len(FAULT_KINDS)
        server.set_fault_rates(dict.fromkeys(FAULT_KINDS, share), seed=args.seed, retry_after_s=0.5,
                               stall_s=args.stall_s)
    server.start()
    print(f"fault server: base_url {server.base_url}", flush=True)
    stop = threading.Event()
    try:
        while not stop.wait(1.0):
            if args.counts:
                counts = {"faults": dict(server.faults_injected), "stalls_abandoned": server.stalls_abandoned}
                Path(args.counts).write_text(json.dumps(counts))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, args: argparse.Namespace, fault_rate: float, counts: Path) -> subprocess.Popen[bytes]:
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "benchmarks.fault_run", "serve", "--port", str(port),
                                "--latency", str(args.latency), "--fault-rate", str(fault_rate),
                                "--stall-s", str(args.stall_s), "--seed", str(args.seed), "--counts", str(counts)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the scripted server did not start")


def one_run(name: str, fault_rate: float, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One ``toolace run`` against a fresh server; its figures."""
    work = folder / name
    work.mkdir(parents=True)
    (work / "config.yaml").write_text(CONFIG + ("" if args.hedge else "llm_hedge: false\n"))
    port = free_port()
    counts = work / "faults.json"
    server = start_server(port, args, fault_rate, counts)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "PREFECT_API_URL")}
    env.update({"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "PREFECT_LOGGING_LEVEL": "WARNING"})
    command = [str(Path(sys.executable).parent / "toolace"), "run", "--apis", str(args.apis), "--dialogs",
               str(args.dialogs), "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "scripted-model",
               "--target-model", "none", "--config", str(work / "config.yaml"), "--out", str(work / "out"),
               "--run-id", name]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
    finally:
        wall = time.perf_counter() - started
        time.sleep(1.5)  # the server's last counts
        server.terminate()
        server.wait(timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{name} run failed ({done.returncode}): {done.stderr[-3000:]}")
    manifest = json.loads((work / "out" / "runs" / name / "manifest.json").read_text())
    flow_s = (dt.datetime.fromisoformat(manifest["finished_at"])
              - dt.datetime.fromisoformat(manifest["started_at"])).total_seconds()
    stages = manifest["stages"]
    return {"wall_s": wall, "flow_s": flow_s, "stages": stages,
            "requests": sum(s["llm_requests"] for s in stages.values()),
            "hedges": sum(s.get("hedges", 0) for s in stages.values()),
            "retries": sum(s["retries"] for s in stages.values()),
            "accounted": all(s["items_in"] == s["accepted"] + s["rejected"] for s in stages.values()),
            "dialogs": manifest["dataset"]["dialogs"], "apis": stages["api_synthesis"]["accepted"],
            "server": json.loads(counts.read_text()) if counts.is_file() else {}}


def show(name: str, run: dict[str, Any]) -> None:
    print(f"{name}: CLI wall {run['wall_s']:.1f} s, flow {run['flow_s']:.1f} s; {run['requests']} LLM requests, "
          f"{run['hedges']} hedges, {run['retries']} retries; {run['apis']} APIs and {run['dialogs']} dialogs "
          f"accepted; every item accounted for: {run['accounted']}")
    if run["server"]:
        print(f"  server: faults injected {run['server'].get('faults')}, stalled requests abandoned by the client "
              f"{run['server'].get('stalls_abandoned')}")
    for stage, s in run["stages"].items():
        print(f"  {stage:<18} in {s['items_in']:>4} acc {s['accepted']:>4} rej {s['rejected']:>4} "
              f"{s['wall_time_s']:>7.1f} s {s['llm_requests']:>5} req {s.get('hedges', 0):>3} hedges "
              f"{s['retries']:>4} retries")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serving = sub.add_parser("serve", help="run the faulty scripted server alone")
    serving.add_argument("--port", type=int, default=8765)
    serving.add_argument("--counts", default=None, help="file the fault counts are written to every second")
    for each in (parser, serving):
        each.add_argument("--latency", type=float, default=1.0, help="seconds every answer takes")
        each.add_argument("--stall-s", type=float, default=120.0, help="how long a stalled request is held")
        each.add_argument("--seed", type=int, default=1, help="the fault draws' seed")
    serving.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of faulty requests (5 kinds)")
    parser.add_argument("--apis", type=int, default=60)
    parser.add_argument("--dialogs", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=3600.0, help="most seconds one run may take")
    parser.add_argument("--only", choices=("clean", "faulty"), help="run one of the two")
    parser.add_argument("--no-hedge", dest="hedge", action="store_false",
                        help="llm_hedge: false (as before issue 19: a stalled request holds its batch)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
        return
    folder = Path(tempfile.mkdtemp(prefix="toolace-faults-"))
    print(f"{platform.node()}: {os.cpu_count()} cores, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
          f"--apis {args.apis} --dialogs {args.dialogs}, answers {args.latency:g} s late, faults on "
          f"{args.fault_rate:.0%} of requests (stalls {args.stall_s:g} s), hedging {'on' if args.hedge else 'off'}, "
          f"work in {folder}", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    for name, rate in (("clean", 0.0), ("faulty", args.fault_rate)):
        if args.only in (None, name):
            runs[name] = one_run(name, rate, args, folder)
            show(name, runs[name])
    if len(runs) == 2:
        clean, faulty = runs["clean"], runs["faulty"]
        print(f"ratio faulty/clean: CLI wall {faulty['wall_s'] / clean['wall_s']:.2f}x, "
              f"flow {faulty['flow_s'] / clean['flow_s']:.2f}x")


if __name__ == "__main__":
    main()
