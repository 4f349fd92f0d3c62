"""Time `toolace run` on the embedded model from a cold LLM cache, as `make run` does it.

Prints wall time, accepted dialogs and, per stage, time, LLM requests and tokens, from the run's
manifest. Usage: python benchmarks/embedded_run.py [--apis 8] [--dialogs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apis", type=int, default=8)
    parser.add_argument("--dialogs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect")}
        env.pop("OPENAI_BASE_URL", None)
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "toolace"), "run", "--out", tmp, "--run-id", "bench",
                        "--apis", str(args.apis), "--dialogs", str(args.dialogs)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        manifest = json.loads((Path(tmp) / "runs" / "bench" / "manifest.json").read_text())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"toolace run --apis {args.apis} --dialogs {args.dialogs} (embedded SmolLM2-135M, cold cache)")
    print(f"wall time: {wall:.0f} s; accepted dialogs: {manifest['dataset']['dialogs']}")
    print(f"{'stage':<18}{'in':>5}{'acc':>5}{'rej':>5}{'time s':>9}{'LLM req':>9}{'tok in':>9}{'tok out':>9}")
    for name, s in manifest["stages"].items():
        print(f"{name:<18}{s['items_in']:>5}{s['accepted']:>5}{s['rejected']:>5}{s['wall_time_s']:>9.1f}"
              f"{s['llm_requests']:>9}{s['tokens_in']:>9}{s['tokens_out']:>9}")


if __name__ == "__main__":
    main()
