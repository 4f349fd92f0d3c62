"""The pipeline at the paper's released scale against the scripted server: wall time, requests/s, peak memory.

    .venv/bin/python benchmarks/scale_run.py [--apis 26500] [--dialogs 11300] [--docs 2000] [--latency 0.2]

Targets (issue 7): 26,500 APIs and 11,300 dialogs in under 45 minutes and 3 GB on the 2-core machine. Use
smaller --apis/--dialogs for a partial run: the figures printed per stage show how time and memory grow.
The scripted server runs in its own process (see benchmarks/llm_throughput.py, whose helpers this reuses):
``benchmarks/scale_server.py``, whose mining and API answers vary like a model's (the plain scripted server's
answers collide at this scale, so the API target could not be reached; ``--plain-server`` uses it anyway).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.llm_throughput import benchmark_folder, make_corpus, run_pipeline, start_server  # noqa: E402


class RssSampler(threading.Thread):
    """This process's resident memory, sampled every second, so memory can be read per stage."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.started_at = time.perf_counter()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with open("/proc/self/statm") as statm:
                pages = int(statm.read().split()[1])
            self.samples.append((time.perf_counter() - self.started_at, pages * os.sysconf("SC_PAGE_SIZE") / 2**20))

    def last(self, at: float) -> float:
        """The last sample taken at or before ``at``."""
        return next((mib for t, mib in reversed(self.samples) if t <= at), float("nan"))

    def peak(self, start: float, end: float) -> float:
        return max((mib for t, mib in self.samples if start <= t <= end), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apis", type=int, default=26_500)
    parser.add_argument("--dialogs", type=int, default=11_300)
    parser.add_argument("--docs", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-model-checks", dest="model_checks", action="store_false",
                        help="rules-only verification (the scripted server's judges answer at random, so with the "
                             "model layer most dialogs are rejected and the dialog target is not reached)")
    parser.add_argument("--plain-server", action="store_true",
                        help="tests.scripted_llm_server's schema-derived answers instead of benchmarks.scale_server")
    parser.add_argument("--rss-log", type=Path, help="write every RSS sample (seconds, MiB) to this CSV file")
    args = parser.parse_args()
    tmp = benchmark_folder("toolace-scale-")
    server, base_url = start_server(args.latency, "tests.scripted_llm_server" if args.plain_server
                                    else "benchmarks.scale_server")
    try:
        make_corpus(tmp / "corpus", args.docs)
        sampler = RssSampler()
        sampler.start()
        manifest, wall, cpu = run_pipeline(base_url, tmp / "corpus", tmp / "out", args)
        sampler.stop.set()
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    stages = manifest["stages"]
    requests = sum(s["llm_requests"] for s in stages.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{os.cpu_count()} cores; {args.docs} documents, asked for {args.apis} APIs and {args.dialogs} dialogs; "
          f"scripted server latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}, "
          f"model layer {'on' if args.model_checks else 'off'}")
    print(f"wall {wall / 60:.1f} min, {requests} LLM requests = {requests / wall:.1f} req/s, CPU {cpu:.0f} s, "
          f"peak RSS {peak:.0f} MiB; accepted APIs {stages['api_synthesis']['accepted']}, "
          f"accepted dialogs {manifest['dataset']['dialogs']}")
    # the dialogs loop starts after mining, tree, APIs and calibration (their wall times, in this order) and
    # ends before publish; the flow started wall seconds before the sampler's last sample
    offset = sampler.samples[-1][0] - wall if sampler.samples else 0.0
    loop_start = offset + sum(stages[n]["wall_time_s"] for n in ("mining", "context_tree", "api_synthesis",
                                                                  "calibration"))
    loop_end = offset + wall - stages["publish"]["wall_time_s"]
    third = (loop_end - loop_start) / 3
    before, publishing = sampler.peak(0, loop_start), sampler.peak(loop_end, offset + wall + 5)
    thirds = [sampler.peak(loop_start + k * third, loop_start + (k + 1) * third) for k in range(3)]
    print(f"RSS before the dialogs loop {before:.0f} MiB; peak in the loop's first / second / last third "
          f"{thirds[0]:.0f} / {thirds[1]:.0f} / {thirds[2]:.0f} MiB; peak while publishing {publishing:.0f} MiB")
    ends = [sampler.last(loop_start + (k + 1) * third) for k in range(3)]
    print(f"RSS at the end of the loop's first / second / last third {ends[0]:.0f} / {ends[1]:.0f} / {ends[2]:.0f} MiB")
    if args.rss_log:
        args.rss_log.write_text("seconds,mib\n" + "".join(f"{t:.1f},{m:.1f}\n" for t, m in sampler.samples))
    for name, s in stages.items():
        print(f"  {name:<18} in {s['items_in']:>6} acc {s['accepted']:>6} {s['wall_time_s']:>8.1f} s "
              f"{s['llm_requests']:>7} requests")


if __name__ == "__main__":
    main()
