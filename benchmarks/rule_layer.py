"""Rule-layer throughput over 10,000 samples on one core, beside BFCL's own AST checker on the same calls.

    python benchmarks/rule_layer.py [--n 10000] [--repeat 3] [--no-bfcl]

1. ``benchmarks/bfcl_env/make_calls.py`` writes N BFCL-shaped items (function docs in BFCL's dialect, a
   model output, the possible answers; about 20% carry one fault: wrong type, missing required parameter,
   unknown value, unexpected parameter, wrong function, wrong count).
2. Each item becomes a Sample (tools + a user turn + the assistant's call turn) and the whole rule layer
   (every check, ``tasks.verification.rules.score_sample``) runs over it, pinned to one core. Two figures:
   rules on already-decoded calls (what BFCL's checker gets), and rules plus parsing the Python-style call
   text with ``ast`` (what ``toolace verify`` does on ToolACE/BFCL text).
3. BFCL's ``ast_checker`` times the same items in its own environment (``benchmarks/bfcl_env/setup.sh``
   installs ``bfcl-eval`` there, never in the project). Its figure is printed beside ours.

The two do different jobs: BFCL compares a call to known possible answers; our rules check a call against
the tool's schema (types, enums, ranges, formats, patterns, nesting) plus the dialog's shape, with no
answer key. The script also prints how many faulty items each one flags, per fault kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.records import ToolCall  # noqa: E402
from schemas.samples import Sample, SampleTurn, ToolSpec  # noqa: E402
from tasks.formats.call_format import render_calls  # noqa: E402
from tasks.formats.call_parsing import parse_calls  # noqa: E402
from tasks.verification.rules import score_sample  # noqa: E402

BFCL_PYTHON = ROOT / "benchmarks" / "bfcl_env" / ".venv" / "bin" / "python"


def sample_of(item: dict[str, Any], index: int, parse: bool) -> Sample:
    calls = [ToolCall(id=f"c{i}", name=name, arguments=args)
             for i, entry in enumerate(item["model_output"]) for name, args in entry.items()]
    text = render_calls(calls)
    if parse:
        calls = parse_calls(text, [f["name"] for f in item["function"]])
    return Sample(index=index, id=item["id"], format="bfcl",
                  tools=[ToolSpec(name=f["name"], description=f["description"], parameters=f["parameters"])
                         for f in item["function"]],
                  turns=[SampleTurn(role="user", content="Please help with this request."),
                         SampleTurn(role="assistant", tool_calls=calls, call_text=text)])


def time_rules(items: list[dict[str, Any]], parse: bool, repeat: int) -> tuple[float, list[bool]]:
    best = float("inf")
    passed: list[bool] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        passed = [not score_sample(sample_of(item, i, parse)) for i, item in enumerate(items)]
        best = min(best, time.perf_counter() - t0)
    return best, passed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest is reported")
    parser.add_argument("--no-bfcl", action="store_true", help="skip BFCL's checker")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp:
        calls = Path(tmp) / "calls.jsonl"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/bfcl_env/make_calls.py"), "--n", str(args.n),
                        "--seed", "0", "--out", str(calls)], check=True)
        items = [json.loads(line) for line in calls.read_text().splitlines()]
        decoded_s, passed = time_rules(items, parse=False, repeat=args.repeat)
        parsed_s, _ = time_rules(items, parse=True, repeat=args.repeat)
        bfcl: dict[str, Any] | None = None
        if not args.no_bfcl:
            if not BFCL_PYTHON.exists():
                subprocess.run(["bash", str(ROOT / "benchmarks/bfcl_env/setup.sh")], check=True)
            verdict_file = Path(tmp) / "bfcl.jsonl"
            done = subprocess.run([str(BFCL_PYTHON), str(ROOT / "benchmarks/bfcl_ast_timing.py"), str(calls),
                                   "--repeat", str(args.repeat), "--verdicts", str(verdict_file)],
                                  check=True, capture_output=True, text=True)
            bfcl = json.loads(done.stdout)
            bfcl_valid = [json.loads(line)["valid"] for line in verdict_file.read_text().splitlines()]
    n = len(items)
    print(f"machine: {os.cpu_count()} cores, pinned to 1; {n} samples "
          f"({dict(Counter(i['category'] for i in items))})")
    print(f"rule layer, decoded calls:        {n / decoded_s:9.0f} samples/s  ({decoded_s:.2f} s)")
    print(f"rule layer, parsing call text:    {n / parsed_s:9.0f} samples/s  ({parsed_s:.2f} s)")
    if bfcl:
        print(f"BFCL ast_checker {bfcl['bfcl_eval_version']}: {bfcl['items_per_s']:9.0f} samples/s  "
              f"({bfcl['seconds']:.2f} s; its import {bfcl['import_seconds']:.1f} s not counted)")
    faults = Counter(i["mutation"] for i in items if i["mutation"])
    ours = Counter(i["mutation"] for i, ok in zip(items, passed, strict=True) if i["mutation"] and not ok)
    clean_flagged = sum(1 for i, ok in zip(items, passed, strict=True) if not i["mutation"] and not ok)
    print(f"clean items flagged by our rules: {clean_flagged}")
    line = "faulty items flagged (ours" + (" / BFCL" if bfcl else "") + "):"
    for kind, count in faults.most_common():
        theirs = (f" / {sum(1 for i, ok in zip(items, bfcl_valid, strict=True) if i['mutation'] == kind and not ok)}"
                  if bfcl else "")
        line += f" {kind} {ours[kind]}{theirs} of {count};"
    print(line)


if __name__ == "__main__":
    main()
