"""How fast `toolace eval` scores a model on BFCL through the llama.cpp engine (issue 21 item 4: all 400
simple_python items in under 10 minutes on this machine).

    .venv/bin/python benchmarks/eval_speed.py [--model smollm2] [--category simple_python] [--limit N]
        [--engine llama-server|transformers] [--slots N] [--max-tokens 512] [--output answers.jsonl] [--full-answers]
        [--conversations N]

The same path as `toolace eval --model MODEL`: :func:`tasks.evaluation.model_serving.answer_source` (a Hugging Face
folder converted to GGUF first, then the embedded llama.cpp server on 127.0.0.1 with --slots instances, asked
--slots requests at a time through EndpointAnswers) and :func:`evaluate_complete`. Printed: the set-up time
(conversion and server start), the scoring time, items/s, answer tokens per item, and the accuracy with its 95%
interval. For a multi-turn category, ``--conversations`` sets how many conversations are held at once (default, as
`toolace eval`: one per slot, each kept on the instance that holds its prompt; the figures before that change held
``--slots`` x 16). The machine's load average and the CPU seconds the server and this process spent are printed too:
other work on the CPU slows every wall-clock figure, while CPU seconds / cores estimates the run on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.evaluation.bfcl_eval import load_items  # noqa: E402
from tasks.evaluation.model_serving import (  # noqa: E402
    ServingOptions,
    answer_source,
    default_slots,
    evaluate_complete,
    resolve_engine,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--category", default="simple_python")
    parser.add_argument("--limit", type=int, default=None, help="first N items (default: all)")
    parser.add_argument("--engine", default=None)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=512, help="as `toolace eval` (default 512)")
    parser.add_argument("--output", default=None, help="answers JSONL (default: a temporary file)")
    parser.add_argument("--full-answers", action="store_true",
                        help="as `toolace eval --full-answers`: no answer stopped early (the figures before the "
                             "early stop)")
    parser.add_argument("--conversations", type=int, default=None,
                        help="multi-turn: conversations held at once (default: one per slot, as toolace eval)")
    args = parser.parse_args()

    engine = resolve_engine(args.engine)
    slots = args.slots or default_slots()
    items = load_items([args.category], args.limit)
    count = sum(len(v) for v in items.values())
    load_before = os.getloadavg()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        output = args.output or str(Path(tmp) / "answers.jsonl")
        started = time.perf_counter()
        with answer_source(args.model, args.max_tokens, ServingOptions(engine=engine, slots=slots),
                           log=lambda line: print(line, file=sys.stderr)) as source:
            ready = time.perf_counter()
            last = [ready]
            if args.conversations:
                source.conversations = args.conversations  # type: ignore[attr-defined]

            def progress(category: str, done: int, total: int) -> None:
                now = time.perf_counter()
                if done and (done == total or now - last[0] > 30):
                    print(f"  {category}: {done}/{total} after {now - ready:.0f} s", file=sys.stderr)
                    last[0] = now

            scores = evaluate_complete(items, source, output, progress, early_stop=not args.full_answers)
            finished = time.perf_counter()
        rows = [json.loads(line) for line in Path(output).read_text().splitlines()]
    load_after = os.getloadavg()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the server (and converter), once they have exited
    server_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    seconds = finished - ready
    answered = [r for r in rows if r.get("answer") is not None]
    chars = sum(len(r["answer"]) for r in answered) / max(1, len(answered))
    stopped = sum(1 for r in rows if r.get("answer_stopped"))
    print(f"date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})")
    print(f"model: {args.model}; engine: {engine}; slots: {slots if engine == 'llama-server' else '-'}; "
          f"max tokens: {args.max_tokens}; source: {source.description}; multi-turn conversations at once: "
          f"{getattr(source, 'conversations', None) or source.chunk_size}")
    print(f"set-up (conversion + server start): {ready - started:.1f} s")
    print(f"{count} items of {args.category} in {seconds:.1f} s ({seconds / 60:.2f} min): "
          f"{count / seconds:.3f} items/s; {chars:.0f} answer characters per item on average; "
          f"{stopped} answers stopped early ({'off' if args.full_answers else 'on'})")
    for score in scores:
        print(f"{score.category}: {score.correct}/{score.items} correct, {score.interval().percent()}")
    cores = os.cpu_count() or 1
    print(f"CPU time: server and converter {server_cpu:.0f} s, this process {client_cpu:.0f} s; "
          f"(server + client) / {cores} cores = {(server_cpu + client_cpu) / cores / 60:.2f} min, what the run "
          f"would take with the machine to itself if the slots kept every core busy")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (other work on the CPU slows the run)")


if __name__ == "__main__":
    main()
