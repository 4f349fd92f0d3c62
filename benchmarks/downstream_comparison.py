"""Base model against models tuned on different datasets, on the same BFCL items, with error bars (issue 21 item 6).

    .venv/bin/python benchmarks/downstream_comparison.py --model base=smollm2 --model shared=/tmp/tuned-a \
        [--model NAME=FOLDER ...] [--category simple_python --category irrelevance] [--limit N] \
        [--max-tokens 128] [--out DIR] [--mode fc [--chat-template FAMILY]] [--engine transformers] [--slots N] \
        [--full-answers]

Each model is scored as `toolace eval --model` scores it (the embedded llama.cpp server, a tuned folder converted to
GGUF, or ``--engine transformers``; prompt mode: answers stopped once they cannot decode; ``--mode fc``: the tools
through the model's chat template, or ``--chat-template``'s family's, calls read in its family's format; multi-turn
categories in either mode, each entry asked no more turns once one fails unless ``--full-answers``), its answers
kept in ``DIR/<name>.jsonl``; an item already answered there is not asked again (so a comparison grows one model,
or a few more items, at a time: the new answers go to ``DIR/<name>.more.jsonl.partial`` as each item is settled and
join the file only once all of them are in; a run stopped half way leaves that file, and the same command keeps its
answers and asks the rest). Printed per
category: each model's accuracy with its 95% bootstrap interval, and each tuned model against the first one (the
base) with a paired bootstrap on the same items: the difference, its interval, and whether the interval excludes 0.
Training is separate (`toolace train`, the budget stated where the figures are recorded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.evaluation.bfcl_eval import evaluate, load_items  # noqa: E402
from tasks.evaluation.model_serving import (  # noqa: E402
    ServingOptions,
    answer_source,
    fc_answer_source,
)
from tasks.evaluation.statistics import (  # noqa: E402
    PairedDifference,
    accuracy_interval,
    paired_difference,
)


def outcomes(path: Path) -> dict[str, dict[str, bool]]:
    """Per category, each item's verdict (by id) in an answers file."""
    table: dict[str, dict[str, bool]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        table.setdefault(row["category"], {})[row["id"]] = bool(row["valid"])
    return table


def difference(paired: PairedDifference) -> str:
    """``+2.5 points [-0.8, +6.0] (not distinguishable from 0)``: real when the interval leaves out 0."""
    d = paired.difference
    real = "real" if d.low > 0 or d.high < 0 else "not distinguishable from 0"
    return f"{100 * d.estimate:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}] ({real})"


def unanswered(items: dict[str, list], answers: Path) -> dict[str, list]:
    """The items (per category) ``answers`` holds no answer for: all of them when the file is not there."""
    done = outcomes(answers) if answers.exists() else {}
    left = {category: [item for item in entries if item.id not in done.get(category, {})]
            for category, entries in items.items()}
    return {category: entries for category, entries in left.items() if entries}


def join_answers(answers: Path, more: Path) -> None:
    """``more``'s answers appended to ``answers`` (written beside it and renamed: never half joined)."""
    joined = answers.with_name(answers.name + ".joining")
    old = answers.read_text() if answers.exists() else ""
    joined.write_text(old + ("" if not old or old.endswith("\n") else "\n") + more.read_text())
    joined.replace(answers)
    more.unlink()


def stopped_run(more: Path) -> Path:
    """Where a run writes its answers as they come (``<name>.more.jsonl.partial``): what a stopped run leaves."""
    return more.with_name(more.name + ".partial")


def answered_by_the_model(row: dict) -> bool:
    """Whether a row's verdict is on what the model did: not one where no answer came for a reason other than the
    prompt's length (a server stopped before the run that asked it, when both are killed at a session's end)."""
    if str(row.get("error_type") or "").endswith("inference_error"):
        return "context_length" in str(row.get("error") or "")
    error = row.get("answer_error")
    return not error or str(error).startswith("context_length")


def keep_stopped_answers(answers: Path, more: Path) -> int:
    """The answers a stopped run left (its process stopped or killed, a session's end) join ``answers``, so the
    same command asks only the rest. Each row there is one item's whole verdict, written once the item was
    settled; a row cut off mid-write, one for an item ``answers`` already holds, or one without a model's answer
    (:func:`answered_by_the_model`) is dropped, and its item asked again. Returns the rows kept."""
    partial = stopped_run(more)
    if not partial.exists():
        return 0
    done = outcomes(answers) if answers.exists() else {}
    kept = []
    for line in partial.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (isinstance(row, dict) and {"id", "category", "valid"} <= row.keys() and answered_by_the_model(row)
                and row["id"] not in done.get(row["category"], {})):
            done.setdefault(row["category"], {})[row["id"]] = bool(row["valid"])
            kept.append(line + "\n")
    if kept:
        more.write_text("".join(kept))
        join_answers(answers, more)
    partial.unlink()
    return len(kept)


def answer_into(answers: Path, more: Path, asked: dict[str, list], source: object, early_stop: bool) -> None:
    """Ask ``source`` the ``asked`` items, each answer written as it is settled; all of them join ``answers`` once
    every one is in. A run stopped half way keeps what it wrote (:func:`stopped_run`, never named like a whole
    answers file) for :func:`keep_stopped_answers` to take up: a comparison of long multi-turn categories can
    run over several sittings."""
    partial = stopped_run(more)
    try:
        evaluate(asked, source, str(partial), early_stop=early_stop)
    except BaseException:
        if partial.exists():
            print(f"stopped: the answers so far stay in {partial}; the same command goes on from them",
                  file=sys.stderr)
        raise
    partial.replace(more)
    join_answers(answers, more)


def fc_template_for(model: str, chat_template: str | None) -> str | None:
    """``chat_template`` only for a model whose own template renders no tools (a tuned model carries its own)."""
    from tasks.evaluation.bfcl_fc import FcModeError, fc_template, template_tool_format

    try:
        template_tool_format(fc_template(model), model)
        return None
    except FcModeError:
        if not chat_template:
            raise
        return chat_template


def fitting_entries(entries: list, room: int | None, context: int, per_group: int | None) -> list:
    """The multi-turn entries whose first prompt (chat template applied, SmolLM2's tokenizer) leaves ``room``
    tokens of ``context``; at most ``per_group`` of each group that shares a system prompt, in BFCL's order."""
    from transformers import AutoTokenizer

    from tasks.dialogs.complexity import model_source
    from tasks.evaluation.bfcl_multi_turn import first_turn_messages

    tokenizer = AutoTokenizer.from_pretrained(model_source("smollm2", role="model"))
    kept, taken = [], {}
    for entry in entries:
        messages = first_turn_messages(entry)
        if room is not None:
            tokens = len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False))["input_ids"])
            if tokens + room > context:
                continue
        group = messages[0]["content"]
        if per_group is not None and taken.get(group, 0) >= per_group:
            continue
        taken[group] = taken.get(group, 0) + 1
        kept.append(entry)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=MODEL; the first is the base")
    parser.add_argument("--category", action="append", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    parser.add_argument("--mode", choices=("prompt", "fc"), default="prompt")
    parser.add_argument("--context-room", type=int, default=None,
                        help="multi-turn: keep the entries whose first prompt leaves at least this many tokens of "
                             "--context (SmolLM2's tokenizer; BFCL's class docs fill most of a small model's context)")
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--per-group", type=int, default=None,
                        help="multi-turn: the first N kept entries of each group sharing a system prompt")
    parser.add_argument("--engine", default=None, help="llama-server (default when installed) or transformers")
    parser.add_argument("--slots", type=int, default=None,
                        help="llama.cpp slots (default: the CPU count; multi-turn: 1 evaluates each "
                             "group's long prompt once, with every core)")
    parser.add_argument("--full-answers", action="store_true",
                        help="as `toolace eval --full-answers`: every answer to its end, every multi-turn turn asked")
    parser.add_argument("--chat-template", default=None,
                        help="--mode fc: a family's template for models without a tool template of their own (a "
                             "model trained with `toolace train --chat-template` carries it already)")
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    models = [tuple(spec.split("=", 1)) for spec in args.model]
    if any(len(m) != 2 for m in models):
        parser.error("--model takes NAME=MODEL")
    categories = args.category or ["simple_python", "irrelevance"]
    items = load_items(categories, args.limit)
    for category in [c for c in items if c.startswith("multi_turn_")]:
        items[category] = fitting_entries(items[category], args.context_room, args.context, args.per_group)
        print(f"{category}: {len(items[category])} entries kept", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, model in models:
        output = args.out / f"{name}.jsonl"
        more = args.out / f"{name}.more.jsonl"
        if kept := keep_stopped_answers(output, more):
            print(f"{name}: {kept} answers of a stopped run kept in {output}", file=sys.stderr)
        asked = unanswered(items, output)
        if not asked:
            print(f"{name}: every item already answered in {output}", file=sys.stderr)
            continue
        started = time.perf_counter()
        options = ServingOptions(engine=args.engine, slots=args.slots)
        if args.mode == "fc":
            with fc_answer_source(model, args.max_tokens, options, fc_template_for(model, args.chat_template),
                                  log=log) as source:
                answer_into(output, more, asked, source, early_stop=not args.full_answers)
        else:
            with answer_source(model, args.max_tokens, options, log=log) as source:
                answer_into(output, more, asked, source, early_stop=not args.full_answers)
        print(f"{name}: {sum(len(v) for v in asked.values())} items in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)

    print(f"date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs); max tokens {args.max_tokens}; {args.mode} mode"
          + (f", {args.chat_template} chat template where a model has no tool template" if args.chat_template else "")
          + ("; full answers" if args.full_answers else ""))
    results = {name: outcomes(args.out / f"{name}.jsonl") for name, _ in models}
    base = models[0][0]
    for category in categories:
        ids = [item.id for item in items[category]]
        print(f"\n{category} ({len(ids)} items)")
        for name, model in models:
            verdicts = [results[name][category][i] for i in ids]
            line = f"  {name:<12} {accuracy_interval(verdicts).percent():<24}"
            if name != base:
                paired = paired_difference([results[base][category][i] for i in ids], verdicts)
                line += (f" vs {base}: {difference(paired)}; {paired.tuned_only} right only after tuning, "
                         f"{paired.base_only} only before")
            print(line + f"  [{model}]")
        others = [n for n, _ in models[1:]]
        for i, first in enumerate(others):
            for second in others[i + 1:]:
                paired = paired_difference([results[first][category][k] for k in ids],
                                           [results[second][category][k] for k in ids])
                print(f"  {second} - {first}: {difference(paired)}")


if __name__ == "__main__":
    main()
