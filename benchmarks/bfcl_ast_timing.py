"""Time BFCL's own AST checker over a JSONL file of calls, on one core.

Runs INSIDE the separate BFCL environment (bfcl-eval is not a project dependency):

    benchmarks/bfcl_env/setup.sh
    python3 benchmarks/bfcl_env/make_calls.py --n 10000 --out /tmp/calls.jsonl
    benchmarks/bfcl_env/.venv/bin/python benchmarks/bfcl_ast_timing.py /tmp/calls.jsonl [--verdicts v.jsonl]
        [--repeat 5]   # report the fastest of 5 passes (the machine is shared)

Each input line: {"function": [BFCL function docs], "model_output": [{"func": {"param": value}}],
"possible_answer": [{"func": {"param": [values]}}], "category": "simple" | "parallel" | "multiple"}
(extra keys such as "id" and "mutation" are passed through to the verdicts). Calls
bfcl_eval.eval_checker.ast_eval.ast_checker.ast_checker(func_description, model_output, possible_answer,
language, test_category, model_name) once per line with Language.PYTHON, and prints one JSON object:
bfcl_eval_version, items, valid, exceptions, seconds (checker calls only, not JSON loading or the
import), items_per_s, import_seconds, per-category figures and, when lines carry "mutation", how often
BFCL's verdict agrees with it (valid iff mutation is null).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from importlib.metadata import version


def run_pass(ast_checker, items, language, model_name, clock):
    """One checker call per item; returns (verdicts, total checker ns, per-category counters)."""
    verdicts = []
    total_ns = 0
    per_cat: dict[str, Counter] = {}
    for item in items:
        category = item["category"]
        t0 = clock()
        try:
            result = ast_checker(item["function"], item["model_output"], item["possible_answer"], language,
                                 category, model_name)
            t1 = clock()
            verdict = {"valid": bool(result["valid"]), "error": result.get("error", []),
                       "error_type": result.get("error_type")}
        except Exception as exc:  # a checker crash is that item's verdict, not the run's end
            t1 = clock()
            verdict = {"valid": False, "error": [f"{type(exc).__name__}: {exc}"], "error_type": "exception",
                       "exception": True}
        total_ns += t1 - t0
        stats = per_cat.setdefault(category, Counter())
        stats["items"] += 1
        stats["ns"] += t1 - t0
        stats["valid"] += verdict["valid"]
        stats["exceptions"] += bool(verdict.get("exception"))
        verdicts.append(verdict)
    return verdicts, total_ns, per_cat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("calls", help="input JSONL")
    parser.add_argument("--verdicts", help="write one JSON verdict per item here")
    parser.add_argument("--model-name", default="gorilla-openfunctions-v2",
                        help="a key of BFCL's MODEL_CONFIG_MAPPING; only consulted for dotted function names")
    parser.add_argument("--core", type=int, default=0, help="CPU to pin to")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time this many passes; seconds is the fastest (verdicts come from the first)")
    args = parser.parse_args()

    os.sched_setaffinity(0, {args.core})

    started = time.perf_counter()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    import_seconds = time.perf_counter() - started

    with open(args.calls, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]

    language = Language.PYTHON
    model_name = args.model_name
    clock = time.perf_counter_ns
    passes = []
    for _ in range(max(1, args.repeat)):
        passes.append(run_pass(ast_checker, items, language, model_name, clock))
    verdicts = passes[0][0]
    _, total_ns, per_cat = min(passes, key=lambda p: p[1])  # fastest pass; verdicts are the same in each

    seconds = total_ns / 1e9
    report = {
        "bfcl_eval_version": version("bfcl-eval"),
        "python": sys.version.split()[0],
        "items": len(items),
        "valid": sum(v["valid"] for v in verdicts),
        "exceptions": sum(bool(v.get("exception")) for v in verdicts),
        "seconds": round(seconds, 6),
        "seconds_all_passes": [round(p[1] / 1e9, 6) for p in passes],
        "items_per_s": round(len(items) / seconds, 1) if seconds else None,
        "import_seconds": round(import_seconds, 3),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "model_name": model_name,
        "per_category": {
            c: {"items": s["items"], "valid": s["valid"], "exceptions": s["exceptions"],
                "seconds": round(s["ns"] / 1e9, 6), "items_per_s": round(s["items"] / (s["ns"] / 1e9), 1)}
            for c, s in sorted(per_cat.items())
        },
    }
    labelled = [(i, v) for i, v in zip(items, verdicts, strict=True) if "mutation" in i]
    if labelled:
        agree = sum(v["valid"] == (i["mutation"] is None) for i, v in labelled)
        report["agrees_with_mutation_label"] = {"labelled": len(labelled), "agree": agree}

    if args.verdicts:
        with open(args.verdicts, "w", encoding="utf-8") as f:
            for item, verdict in zip(items, verdicts, strict=True):
                row = {"id": item.get("id"), "category": item["category"], **verdict}
                if "mutation" in item:
                    row["mutation"] = item["mutation"]
                f.write(json.dumps(row, default=str) + "\n")

    print(json.dumps(report))


if __name__ == "__main__":
    main()
