"""The pipeline at the paper's released scale against the scripted server: wall time, requests/s, peak memory.

    .venv/bin/python benchmarks/scale_run.py [--apis 26500] [--dialogs 11300] [--docs 2000] [--latency 0.2]

Targets (issue 7): 26,500 APIs and 11,300 dialogs in under 45 minutes and 3 GB on the 2-core machine. Use
smaller --apis/--dialogs for a partial run: the figures printed per stage show how time and memory grow.
The scripted server runs in its own process (see benchmarks/llm_throughput.py, whose helpers this reuses).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.llm_throughput import benchmark_folder, make_corpus, run_pipeline, start_server  # noqa: E402


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
    args = parser.parse_args()
    tmp = benchmark_folder("toolace-scale-")
    server, base_url = start_server(args.latency)
    try:
        make_corpus(tmp / "corpus", args.docs)
        manifest, wall, cpu = run_pipeline(base_url, tmp / "corpus", tmp / "out", args)
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
    for name, s in stages.items():
        print(f"  {name:<18} in {s['items_in']:>6} acc {s['accepted']:>6} {s['wall_time_s']:>8.1f} s "
              f"{s['llm_requests']:>7} requests")


if __name__ == "__main__":
    main()
