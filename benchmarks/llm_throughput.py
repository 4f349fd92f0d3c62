"""Does the pipeline keep a shared LLM server busy? Completed requests/s of the pipeline against the scripted
server (fixed 200 ms latency, concurrency 64), divided by what a bare asyncio loop of the same `openai` client
reaches against the same server in the same run. The bare loop runs over both of the SDK's transports (aiohttp,
which the gateway uses, and the default httpx); the ratio is taken against the faster.

    .venv/bin/python benchmarks/llm_throughput.py [--docs 400] [--apis 120] [--dialogs 120] [--bare 2000]
        [--batch-size N] [--task-runner thread|dask] [--dask-workers 2]

The scripted server runs in its own process (its CPU is not the pipeline's). The pipeline is the real flow
(mining, API synthesis, dialog generation with 3 agents, both verification layers; no loss model, so every
stage is LLM-bound) over a generated corpus, with a cold response cache. Printed: requests/s of the bare
loop and of the whole flow, the ratios (whole flow, and its dialog phase), each LLM stage's requests/s with
its mean latency and requests in flight, the pipeline's CPU seconds per request
spent outside the server, and the CPU seconds of each process (pipeline, scripted server, Prefect's server).
After the run, a sample of the pipeline's own request bodies is sent again by the bare loop, through
``chat.completions.create`` and as orjson bytes through ``client.post`` (as the gateway sends them): the same
requests without the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import orjson
from openai._base_client import make_request_options

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LLM_STAGES = ("mining", "api_synthesis", "dialog_generation", "verification")


def benchmark_folder(prefix: str) -> Path:
    """A temporary folder for one benchmark run, with Prefect's home inside it and Prefect kept offline."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return tmp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(latency: float, module: str = "tests.scripted_llm_server") -> tuple[subprocess.Popen, str]:
    """The scripted server ``module`` (its ``--port``/``--latency`` CLI) in its own process; its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port),
                                "--latency", str(latency)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, f"{url}/v1"
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the scripted server did not start")


TRANSPORTS = ("aiohttp", "httpx")


CREATE_PARAMETERS = frozenset(inspect.signature(openai.AsyncOpenAI(api_key="x").chat.completions.create).parameters)


async def bare_loop(base_url: str, requests: int, concurrency: int, transport: str = "aiohttp",
                    bodies: list[dict] | None = None, raw: bool = False) -> float:
    """Requests/s of a plain asyncio loop: `concurrency` requests in flight through one AsyncOpenAI client,
    over the SDK's aiohttp transport (what the gateway uses) or its default httpx one. Each request is a one-line
    message, or with ``bodies`` one of the pipeline's own request bodies, sent again as they were: through
    ``chat.completions.create``, or (``raw``) encoded with orjson and posted as the gateway does. The clock starts
    after a full garbage collection, so collecting the heap the pipeline left does not slow the baseline."""
    http_client = openai.DefaultAioHttpClient(timeout=60) if transport == "aiohttp" else None
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60,
                                http_client=http_client)
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            if bodies and raw:
                await client.post("/chat/completions", content=orjson.dumps(bodies[i % len(bodies)]), cast_to=object,
                                  options=make_request_options(security={"bearer_auth": True}))
            elif bodies:
                body = bodies[i % len(bodies)]
                await client.chat.completions.create(
                    **{k: v for k, v in body.items() if k in CREATE_PARAMETERS},
                    extra_body={k: v for k, v in body.items() if k not in CREATE_PARAMETERS} or None)
            else:
                await client.chat.completions.create(model="scripted-model", max_tokens=64,
                                                     messages=[{"role": "user", "content": f"request {i}"}])

    gc.collect()  # a full collection of the heap the pipeline left must not land inside the loop's timing
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    await client.close()
    return requests / elapsed


def process_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and of every process it started, by what they run:
    the scripted LLM server, Prefect's temporary API server and this process (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        stats[pid] = (command, (int(fields[11]) + int(fields[12])) / ticks)
    totals: dict[str, float] = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        command, seconds = stats.get(pid, ("", 0.0))
        role = ("this process (client / pipeline)" if pid == os.getpid()
                else "scripted LLM server" if "scripted_llm_server" in command or "scale_server" in command
                else "Prefect API server" if "prefect" in command
                else "Dask workers" if "multiprocessing" in command or "distributed" in command
                else "other")
        totals[role] = totals.get(role, 0.0) + seconds
    return totals


def with_cpu(measure: Callable[[], list[float]]) -> tuple[list[float], dict[str, float]]:
    """``measure()``'s rates, and the CPU seconds each process spent while it ran (:func:`process_cpu`)."""
    before = process_cpu()
    rates = measure()
    return rates, {k: v - before.get(k, 0.0) for k, v in process_cpu().items()}


def make_corpus(folder: Path, docs: int) -> None:
    """`docs` distinct API documents made from the bundled sample corpus (a numbered edition of each)."""
    from toolace.config import SAMPLE_CORPUS

    sources = sorted(p for p in Path(SAMPLE_CORPUS).iterdir() if p.suffix in (".md", ".txt", ".html"))
    folder.mkdir(parents=True)
    for i in range(docs):
        source = sources[i % len(sources)]
        text = source.read_text(encoding="utf-8")
        (folder / f"{i:05d}-{source.name}").write_text(f"{text}\n\nEdition {i}: revised endpoint notes.\n")


def in_flight_per_process(args: argparse.Namespace) -> int:
    """The gateway's cap is per process: on Dask each worker process gets its share of ``--concurrency``, so
    the pipeline never has more requests in flight than the bare loop."""
    if getattr(args, "task_runner", "thread") == "dask":
        return max(1, args.concurrency // args.dask_workers)
    return args.concurrency


def record_requests(keep: int) -> list[dict]:
    """A uniform sample (reservoir, ``keep`` bodies) of the request bodies the pipeline's gateway sends, for the
    bare loop to send again: the same requests without the pipeline."""
    from toolace.llm.gateway import LLMGateway

    sample: list[dict] = []
    seen = [0]
    rng = random.Random(0)
    send = LLMGateway._send

    async def recording(self: LLMGateway, body: dict, stats: object, stage: str) -> dict:
        seen[0] += 1
        if len(sample) < keep:
            sample.append(body)
        elif (j := rng.randrange(seen[0])) < keep:
            sample[j] = body
        return await send(self, body, stats, stage)  # type: ignore[arg-type]

    LLMGateway._send = recording  # type: ignore[method-assign]
    return sample


def run_pipeline(base_url: str, corpus: Path, out: Path, args: argparse.Namespace) -> tuple[dict, float, float]:
    from prefect import flow

    from flows.toolace_pipeline import DatasetRejected, toolace_pipeline
    from toolace.config import RunConfig

    @flow(name="warm-up")
    def warm_up() -> None:
        """Start Prefect's temporary server before the clock starts (it takes ~15 s here)."""

    warm_up()
    config = RunConfig(llm_base_url=base_url, llm_model="scripted-model", corpus=str(corpus), out=str(out),
                       apis=args.apis, dialogs=args.dialogs, target_model=None, run_id="bench",
                       concurrency=in_flight_per_process(args), mix_tolerance=1.0,
                       **({"batch_size": args.batch_size} if args.batch_size else {}),
                       task_runner=getattr(args, "task_runner", "thread"),
                       dask_workers=getattr(args, "dask_workers", 2),
                       min_acceptance_rate=0.0, model_checks=getattr(args, "model_checks", True))
    cpu0, wall0, by_process0 = time.process_time(), time.perf_counter(), process_cpu()
    try:
        toolace_pipeline(config)
        folder = out / "runs" / "bench"
    except DatasetRejected:
        folder = out / "staging" / "bench"
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    by_process = {k: v - by_process0.get(k, 0.0) for k, v in process_cpu().items()}
    print("CPU seconds during the pipeline, by process: "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(by_process.items(), key=lambda kv: -kv[1])))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dialogs_subflow_s"] = stage_run_time("dialogs")
    return manifest, wall, cpu


def stage_run_time(stage: str) -> float | None:
    """How long the stage's subflow ran, start to end, as Prefect records it (and its UI shows): the one flow run
    of that name in this benchmark's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[stage])))
    spans = [(r.end_time - r.start_time).total_seconds() for r in runs if r.start_time and r.end_time]
    return spans[0] if len(spans) == 1 else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--apis", type=int, default=120)
    parser.add_argument("--dialogs", type=int, default=120)
    parser.add_argument("--bare", type=int, default=2000, help="requests of the bare loop")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch tasks' size [default: the run config's default, 16]")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--task-runner", choices=("thread", "dask"), default="thread")
    parser.add_argument("--dask-workers", type=int, default=2,
                        help="worker processes of the local Dask cluster; each gets --concurrency / workers")
    args = parser.parse_args()
    tmp = benchmark_folder("toolace-throughput-")
    server, base_url = start_server(args.latency)
    try:
        make_corpus(tmp / "corpus", args.docs)
        bare_before: dict[str, float] = {}
        bare_cpu: dict[str, dict[str, float]] = {}
        for transport in TRANSPORTS:
            [bare_before[transport]], bare_cpu[transport] = with_cpu(
                lambda t=transport: [asyncio.run(bare_loop(base_url, args.bare, args.concurrency, t))])
        sent = record_requests(args.bare)
        manifest, wall, cpu = run_pipeline(base_url, tmp / "corpus", tmp / "out", args)
        bare_after = {t: asyncio.run(bare_loop(base_url, args.bare, args.concurrency, t)) for t in TRANSPORTS}
        replayed, replay_cpu = with_cpu(lambda: [
            asyncio.run(bare_loop(base_url, args.bare, args.concurrency, "aiohttp", sent)) for _ in range(2)])
        posted, posted_cpu = with_cpu(lambda: [
            asyncio.run(bare_loop(base_url, args.bare, args.concurrency, "aiohttp", sent, raw=True))
            for _ in range(2)])
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    stages = manifest["stages"]
    requests = sum(s["llm_requests"] for s in stages.values())
    ideal = args.concurrency / args.latency
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; scripted "
          f"server in its own process, latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
    means = {t: (bare_before[t] + bare_after[t]) / 2 for t in TRANSPORTS}
    for transport in TRANSPORTS:
        print(f"bare asyncio loop, {transport} transport ({args.bare} requests, before/after the pipeline): "
              f"{bare_before[transport]:.1f} / {bare_after[transport]:.1f} req/s (mean {means[transport]:.1f}; "
              f"{means[transport] / ideal:.2f} of the ideal {ideal:.0f}); CPU per request: "
              + ", ".join(f"{k} {1000 * v / args.bare:.1f} ms" for k, v in bare_cpu[transport].items() if v > 0))
    # the ratio is taken against the faster bare loop, whichever transport it used
    bare = max(means.values())
    print(f"pipeline, whole flow: {requests} requests in {wall:.1f} s = {requests / wall:.1f} req/s "
          f"(ratio to the faster bare loop, {bare:.1f} req/s: {requests / wall / bare:.2f})")
    print("stages (dialog generation and verification overlap: a batch is verified while the next generates, "
          "so their seconds add up to more than the flow's):")
    for name in LLM_STAGES:
        s = stages[name]
        rate = s["llm_requests"] / s["wall_time_s"] if s["wall_time_s"] else 0.0
        latency = s.get("llm_latency_s", 0.0) / max(s["llm_requests"], 1)
        in_flight = rate * latency  # Little's law: mean requests in flight over the stage's wall time
        print(f"  {name:<18} {s['llm_requests']:>6} requests {s['wall_time_s']:>7.1f} s {rate:>7.1f} req/s "
              f"({s['items_in']} items; mean latency seen by the gateway {1000 * latency:.0f} ms, "
              f"mean in flight {in_flight:.0f})")
    before = ("mining", "context_tree", "api_synthesis", "calibration")
    others = sum(stages[n]["wall_time_s"] for n in (*before, "publish") if n in stages)
    phase_requests = stages["dialog_generation"]["llm_requests"] + stages["verification"]["llm_requests"]
    phase_wall = wall - others  # includes the flow's own set-up and reports: a lower bound of the phase's rate
    print("other stages (s): " + ", ".join(f"{n} {stages[n]['wall_time_s']:.1f}"
                                           for n in (*before, "publish") if n in stages))
    print(f"flow's wall time less the other stages (the dialogs stage plus the flow's own set-up, subflow "
          f"transitions and reports; a lower bound): {phase_requests} requests in {phase_wall:.1f} s = "
          f"{phase_requests / phase_wall:.1f} req/s (ratio to the faster bare loop "
          f"{phase_requests / phase_wall / bare:.2f})")
    span = manifest.get("dialogs_subflow_s")
    if span:  # the dialog phase: the dialogs stage's subflow, start to end (the duration the Prefect UI shows)
        phase_wall = span
        latency_s = stages["dialog_generation"].get("llm_latency_s", 0.0) + stages["verification"].get(
            "llm_latency_s", 0.0)
        print(f"dialog phase (the dialogs stage's subflow run, start to end, from Prefect's API): {phase_requests} "
              f"requests in {span:.1f} s = {phase_requests / span:.1f} req/s (ratio to the faster bare loop "
              f"{phase_requests / span / bare:.2f}); mean requests in flight {latency_s / span:.1f} of "
              f"{args.concurrency} ({latency_s / span / args.concurrency:.2f} x concurrency)")
    for how, rates, used in (("chat.completions.create", replayed, replay_cpu),
                             ("client.post of orjson bytes, as the gateway sends them", posted, posted_cpu)):
        mean = sum(rates) / len(rates)
        print(f"bare asyncio loop sending {len(sent)} of the pipeline's own requests again, {how} (aiohttp, "
              f"{args.bare} requests, twice after the pipeline): {rates[0]:.1f} / {rates[1]:.1f} req/s (mean "
              f"{mean:.1f}); CPU per request: " + ", ".join(f"{k} {1000 * v / (2 * args.bare):.1f} ms"
                                                             for k, v in used.items() if v > 0))
        print(f"  same requests, ratio to this loop: whole flow {requests / wall / mean:.2f}, "
              f"dialog phase {phase_requests / phase_wall / mean:.2f}")
    print(f"pipeline CPU outside the server: {cpu:.1f} s = {1000 * cpu / max(requests, 1):.1f} ms per request; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
