"""Agreement of our BFCL multi-turn scoring (tasks/evaluation/bfcl_multi_turn.py) with bfcl-eval's own checker.

    benchmarks/bfcl_env/setup.sh                       # once: bfcl-eval in its own venv
    .venv/bin/python benchmarks/bfcl_multi_turn_agreement.py [--categories multi_turn_base,...] [--limit N]
        [--no-variants] [--no-scripted] [--seed 0] [--report report.json]

The "model answers" are transcripts: per turn, the answer text of each step, as the inference loop records them.
They come from two sources:

- ``variants``: for every entry, transcripts derived from its ground truth, one per rule: the ground truth
  (keyword calls; the original strings with their positional arguments; one call per step; in a code fence),
  and wrong or odd ones (a call dropped, a string value changed, a wrong type, calls reversed, a duplicated
  or extra call, an unknown or dotted or refused function name, a nested call, an empty dict argument, a turn
  skipped, a turn's calls delayed to the next turn or done a turn early, calls made in the turn whose ground
  truth is empty, prose around the calls, a conversation forced to stop after 21 steps, mid-way or at the
  last turn);
- ``scripted``: the transcripts our own inference loop (:func:`tasks.evaluation.bfcl_multi_turn.run_entries`,
  sandboxed environments) recorded from two scripted models: one that answers each turn with its ground
  truth, and one that does the same but changes one string value of one call;
- ``fc``: the same loop in function-calling mode (:func:`fc_transcripts`): scripted models that answer with
  structured calls (an endpoint's ``tool_calls``; right, and one value changed) or with the text Qwen2.5's real
  template writes for the calls (right, and with a call's JSON broken). BFCL decodes each step as its FC
  handlers do: ``convert_to_function_call`` for structured calls (the OpenAI FC handler), ``QwenFCHandler``'s
  ``decode_execute`` for the text.

Each transcript is judged twice: by ``score_transcript`` here (in our sandbox worker), and, in a subprocess
running in ``benchmarks/bfcl_env/.venv``, by BFCL: the eval runner's ``_evaluate_single_multi_turn_entry`` steps
(force-termination check, ``default_decode_execute_prompting`` of each step, failed and empty decodes skipped;
reproduced because importing the runner needs pandas) and then bfcl-eval's ``multi_turn_checker`` itself, which
executes the calls with its own ``eval``. The worker also builds each entry's first-turn chat with BFCL's
``load_dataset_entry`` and ``system_prompt_pre_processing_chat_model`` and the miss_func notes, compared with ours.

Printed: agreement of the ``valid`` verdicts per source and category, and per variant; agreement of the error
types where both say wrong; every disagreement. ``--report`` writes it all as JSON. Exit status 1 below 99%.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BFCL_PYTHON = ROOT / "benchmarks" / "bfcl_env" / ".venv" / "bin" / "python"
DEFAULT_CATEGORIES = "multi_turn_base,multi_turn_miss_func,multi_turn_miss_param,multi_turn_long_context"
REFUSAL = "I cannot do that with the functions I have."
DONE = "Done."


# ------------------------------------------------------------------------------ BFCL side (its own venv)


def bfcl_worker(in_path: str, out_path: str) -> None:
    """Runs in benchmarks/bfcl_env/.venv: BFCL's verdict on every transcript, BFCL's first-turn chats."""
    import copy

    started = time.perf_counter()
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import is_empty_execute_response
    from bfcl_eval.model_handler.local_inference.qwen_fc import QwenFCHandler
    from bfcl_eval.model_handler.utils import (
        convert_to_function_call,
        default_decode_execute_prompting,
        system_prompt_pre_processing_chat_model,
    )
    from bfcl_eval.utils import load_dataset_entry

    qwen = object.__new__(QwenFCHandler)  # its decode_execute reads <tool_call> blocks and needs no model
    decoders = {None: default_decode_execute_prompting,  # prompt mode
                "openai": convert_to_function_call,  # an FC endpoint's structured calls (the OpenAI FC handler)
                "hermes": lambda text: qwen.decode_execute(text, has_tool_call_tag=False)}  # Qwen's FC handler

    import_s = time.perf_counter() - started
    with open(in_path, encoding="utf-8") as f:
        payload = json.load(f)
    bfcl_entries = {}
    for category in payload["categories"]:
        for entry in load_dataset_entry(category, include_prereq=False):
            bfcl_entries[entry["id"]] = entry
    verdicts = []
    started = time.perf_counter()
    for number, case in enumerate(payload["cases"]):
        entry = bfcl_entries[case["id"]]
        ground_truth = payload["ground_truth"][case["id"]]
        transcript = case["transcript"]
        decode = decoders[case.get("fc")]
        if len(transcript) != len(ground_truth):  # the eval runner's force-termination check
            verdicts.append({"valid": False, "error_type": "multi_turn:force_terminated"})
            continue
        decoded_turns = []
        for turn in transcript:  # the eval runner's decoding loop
            decoded_turn = []
            for text in turn:
                try:
                    decoded = decode(text)
                    if is_empty_execute_response(decoded):
                        continue
                    decoded_turn.append(decoded)
                except Exception:
                    continue
            decoded_turns.append(decoded_turn)
        prompt_entry = {k: v for k, v in copy.deepcopy(entry).items() if k != "function"}
        try:
            result = multi_turn_checker(decoded_turns, ground_truth, prompt_entry, case["id"].rsplit("_", 1)[0],
                                        f"agreement_{number}")
            verdicts.append({"valid": bool(result["valid"]), "error_type": result.get("error_type")})
        except Exception as exc:  # BFCL's checker asserting or crashing on odd input
            verdicts.append({"valid": False, "error_type": "checker_error", "error": f"{type(exc).__name__}: {exc}"})
        for name in [k for k in vars(multi_turn_utils) if k.endswith("_instance")]:
            delattr(multi_turn_utils, name)  # BFCL keeps instances in the module's globals: start each case fresh
    check_s = time.perf_counter() - started
    chats = {}
    for entry_id in payload["ground_truth"]:
        entry = copy.deepcopy(bfcl_entries[entry_id])
        first = system_prompt_pre_processing_chat_model(entry["question"][0], entry["function"], entry_id)
        notes = {turn: DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING.format(functions=functions)
                 for turn, functions in entry.get("missed_function", {}).items()}
        chats[entry_id] = {"first": first, "notes": notes}
    from importlib.metadata import version

    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"verdicts": verdicts, "chats": chats, "bfcl_eval_version": version("bfcl-eval"),
                   "import_s": round(import_s, 3), "check_s": round(check_s, 3)}, f)


# ------------------------------------------------------------------------------------------ variants


def _keyword_calls(entry, turn):
    """The ground truth of a turn as (name, {param: value}) with positional arguments named from the docs."""
    from tasks.evaluation.bfcl_multi_turn import parse_ground_truth

    docs = {d["name"]: d for d in [*entry.functions, *(d for ds in entry.missed_functions.values() for d in ds)]}
    out = []
    for text in entry.ground_truth[turn]:
        call = parse_ground_truth(text)
        names = list(docs.get(call.name, {}).get("parameters", {}).get("properties", {}))
        out.append((call.name, {**dict(zip(names, call.args, strict=False)), **call.kwargs}))
    return out


def _render(calls):
    return "[" + ", ".join(f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})" for name, args in calls) + "]"


def _steps(calls):
    return [_render(calls), DONE] if calls else [REFUSAL]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[0]] if value else ["x"]
    return "x"


def entry_variants(entry, rng):
    """(variant name, transcript) pairs for one entry."""
    turns = [_keyword_calls(entry, t) for t in range(len(entry.ground_truth))]
    busy = [t for t, calls in enumerate(turns) if calls]
    empty = [t for t, calls in enumerate(turns) if not calls]

    out = [("ground_truth", [_steps(calls) for calls in turns]),
           ("ground_truth_original_strings",
            [["[" + ", ".join(entry.ground_truth[t]) + "]", DONE] if calls else [REFUSAL]
             for t, calls in enumerate(turns)]),
           ("one_call_per_step", [[_render([c]) for c in calls] + [DONE] if calls else [REFUSAL] for calls in turns]),
           ("fenced", [[f"```python\n{_render(calls)}\n```", DONE] if calls else [REFUSAL] for calls in turns]),
           ("no_brackets", [[_render(calls)[1:-1], DONE] if calls else [REFUSAL] for calls in turns])]
    if not busy:
        return out
    target = rng.choice(busy)
    calls = turns[target]

    def at_target(new_steps):
        return [new_steps if t == target else _steps(c) for t, c in enumerate(turns)]

    out.append(("prose_around_calls", at_target([f"Sure, I will do that: {_render(calls)}", DONE])))
    out.append(("drop_last_call", at_target(_steps(calls[:-1]))))
    out.append(("drop_first_call", at_target(_steps(calls[1:]))))
    out.append(("reversed_calls", at_target(_steps(list(reversed(calls))))))
    out.append(("duplicated_first_call", at_target(_steps([calls[0], *calls]))))
    out.append(("skip_turn", at_target([REFUSAL])))
    out.append(("unknown_function", at_target(_steps([*calls, ("nonexistent_tool", {"a": 1})]))))
    out.append(("refused_name", at_target(_steps([*calls, ("exit", {})]))))
    out.append(("dotted_name", at_target([_render([(f"{entry.involved_classes[0]}.{calls[0][0]}", calls[0][1]),
                                                    *calls[1:]]), DONE])))
    out.append(("empty_dict_argument", at_target(_steps([(calls[0][0], {**calls[0][1], "zz": {}}), *calls[1:]]))))
    out.append(("nested_call_argument", at_target([_render(calls)[:-1] + ", " + calls[0][0] + "(zz=pwd(a=1))]",
                                                   DONE])))
    out.append(("json_true_false", at_target([_render(calls).replace("True", "true").replace("False", "false"),
                                              DONE])))
    with_args = [(i, c) for i, c in enumerate(calls) if c[1]]
    if with_args:
        i, (name, args) = rng.choice(with_args)
        key = rng.choice(sorted(args))
        changed = [*calls[:i], (name, {**args, key: _changed(args[key])}), *calls[i + 1:]]
        out.append(("wrong_value", at_target(_steps(changed))))
        typed = [*calls[:i], (name, {**args, key: str(args[key]) if not isinstance(args[key], str) else [args[key]]}),
                 *calls[i + 1:]]
        out.append(("wrong_type", at_target(_steps(typed))))
        out.append(("extra_argument", at_target(_steps([*calls[:i], (name, {**args, "zz_extra": 1}), *calls[i + 1:]]))))
    if target + 1 < len(turns):
        later = turns[target + 1]
        out.append(("delay_turn", [[REFUSAL] if t == target else _steps(calls + later) if t == target + 1
                                   else _steps(c) for t, c in enumerate(turns)]))
        out.append(("early_calls", [_steps(calls + later) if t == target else _steps(c)
                                    for t, c in enumerate(turns)]))
    for t in empty:
        following = next((turns[u] for u in range(t + 1, len(turns)) if turns[u]), None)
        if following:
            out.append(("calls_in_empty_turn", [_steps(following) if u == t else _steps(c)
                                                for u, c in enumerate(turns)]))
            break
    read_call = _render([calls[0]])
    forced = [_steps(c) for c in turns[:target]] + [[read_call] * 21]
    out.append(("force_quit_mid_way" if target < len(turns) - 1 else "force_quit_last_turn", forced))
    last = busy[-1]
    if last == len(turns) - 1 and target != last:
        out.append(("force_quit_last_turn", [_steps(c) for c in turns[:last]] + [[_render([turns[last][0]])] * 21]))
    return out


def scripted_transcripts(entries_by_category, limit_s=None):
    """Transcripts recorded by our inference loop from two scripted models, with our verdicts."""
    from tasks.evaluation.bfcl_multi_turn import GroundTruthAnswers, run_entries

    def wrong_value(entry, turn, text):
        return text.replace("='", "='zz", 1)

    out = []
    for entries in entries_by_category.values():
        for name, answer_for in (("scripted_ground_truth", None), ("scripted_wrong_value", wrong_value)):
            source = GroundTruthAnswers(entries, chunk_size=16, answer_for=answer_for)
            for result in run_entries(entries, source):
                out.append((result.entry, name, result.transcript, result.verdict))
    return out


def fc_transcripts(entries_by_category):
    """Transcripts recorded by our inference loop in function-calling mode (``run_entries`` with FC sources), with
    our verdicts and, per turn and step, what BFCL's FC handlers record: an endpoint's structured calls
    (``[{name: arguments JSON}]``, the OpenAI FC handler) or the raw text (Qwen's FC handler reads its
    ``<tool_call>`` blocks). Four scripted models: the ground truth as structured calls, the same with one string
    value changed, the ground truth as the text Qwen2.5's real template writes for it (read as Hermes), and that
    text with the JSON of the second turn's first call broken."""
    import json as json_module

    from tasks.evaluation.bfcl_multi_turn import GroundTruthFcAnswers, run_entries
    from tasks.formats.chat_templates import load_family, render
    from tasks.formats.tool_call_formats import rendered_assistant_turn
    from toolace.chat_template_files import DEFAULT_FAMILIES, templates_dir

    qwen = load_family("qwen2.5", templates_dir(None, DEFAULT_FAMILIES))

    def qwen_text(calls):
        messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call{k:05d}", "type": "function", "function": {"name": n, "arguments": a}}
            for k, (n, a) in enumerate(calls)]}]
        return rendered_assistant_turn(lambda m, g: render(qwen, m, None, g), messages).removesuffix("<|im_end|>\n")

    def wrong_value(entry, turn, calls):
        for k, (name, arguments) in enumerate(calls):
            for key, value in arguments.items():
                if isinstance(value, str):
                    changed = list(calls)
                    changed[k] = (name, {**arguments, key: "zz" + value})
                    return changed
        return calls

    def broken_second_turn(entry, turn, calls):
        return [(n, {"__broken__": True, **a}) for n, a in calls] if turn == 1 else calls

    def qwen_text_broken(calls):
        text = qwen_text([(n, {k: v for k, v in a.items() if k != "__broken__"}) for n, a in calls])
        if any("__broken__" in a for _, a in calls):
            return text.replace('"arguments": {', '"arguments": {{', 1)
        return text

    models = (("fc_ground_truth", "openai", {}),
              ("fc_wrong_value", "openai", {"answer_for": wrong_value}),
              ("fc_hermes_ground_truth", "hermes", {"write": qwen_text, "tool_format": "hermes"}),
              ("fc_hermes_broken_call", "hermes", {"write": qwen_text_broken, "tool_format": "hermes",
                                                   "answer_for": broken_second_turn}))
    out = []
    for entries in entries_by_category.values():
        for name, fc, options in models:
            for result in run_entries(entries, GroundTruthFcAnswers(entries, chunk_size=16, **options)):
                responses = [[[{c["function"]["name"]: json_module.dumps(c["function"]["arguments"])}
                               for c in step["tool_calls"]] if fc == "openai" and "tool_calls" in step
                              else step.get("answer") or "" for step in turn] for turn in result.steps]
                out.append((result.entry, name, fc, responses, result.verdict))
    return out


# ------------------------------------------------------------------------------------------------ main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", default=DEFAULT_CATEGORIES)
    parser.add_argument("--limit", type=int, help="only the first N entries of each category")
    parser.add_argument("--no-variants", action="store_true")
    parser.add_argument("--no-scripted", action="store_true")
    parser.add_argument("--no-fc", action="store_true", help="leave out the function-calling-mode transcripts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", help="write the whole report here as JSON")
    parser.add_argument("--bfcl-python", default=str(BFCL_PYTHON), help="python of the BFCL environment")
    parser.add_argument("--bfcl-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bfcl_worker:
        bfcl_worker(*args.bfcl_worker)
        return 0

    sys.path.insert(0, str(ROOT))
    from tasks.environments.bfcl_classes import BfclSandbox
    from tasks.evaluation.bfcl_data import MULTI_TURN_CATEGORIES, load_multi_turn_category
    from tasks.evaluation.bfcl_multi_turn import (
        ADDITIONAL_FUNCTION_PROMPT,
        first_turn_messages,
        score_transcript,
    )

    if not Path(args.bfcl_python).exists():
        raise SystemExit(f"{args.bfcl_python} does not exist: run benchmarks/bfcl_env/setup.sh first")
    categories = [c for c in args.categories.split(",") if c]
    for category in categories:
        if category not in MULTI_TURN_CATEGORIES:
            raise SystemExit(f"unknown multi-turn category {category!r}: choose from "
                             f"{', '.join(MULTI_TURN_CATEGORIES)}")
    entries_by_category = {c: load_multi_turn_category(c, args.limit) for c in categories}
    entries = {e.id: e for es in entries_by_category.values() for e in es}

    # (source, entry, variant, transcript, our verdict or None)
    cases = []
    started = time.perf_counter()
    if not args.no_scripted:
        for entry, name, transcript, verdict in scripted_transcripts(entries_by_category):
            cases.append({"source": "scripted", "entry": entry, "variant": name, "transcript": transcript,
                          "ours": verdict})
    if not args.no_fc:
        for entry, name, fc, responses, verdict in fc_transcripts(entries_by_category):
            cases.append({"source": "fc", "entry": entry, "variant": name, "transcript": responses, "fc": fc,
                          "ours": verdict})
    scripted_s = time.perf_counter() - started
    if not args.no_variants:
        for entry in entries.values():
            rng = random.Random(f"{args.seed}:{entry.id}")
            for name, transcript in entry_variants(entry, rng):
                cases.append({"source": "variants", "entry": entry, "variant": name, "transcript": transcript,
                              "ours": None})
    if not cases:
        raise SystemExit("nothing to judge: leave the variants or the scripted models on")

    started = time.perf_counter()
    by_entry = defaultdict(list)
    for case in cases:
        if case["ours"] is None:
            by_entry[case["entry"].id].append(case)
    for entry_id, entry_cases in by_entry.items():  # one sandbox worker per entry, fresh environments per case
        with BfclSandbox(label=f"BFCL environment of {entry_id}") as sandbox:
            for number, case in enumerate(entry_cases):
                case["ours"] = score_transcript(case["entry"], case["transcript"], sandbox, prefix=f"case{number}")
    ours_s = time.perf_counter() - started + scripted_s

    with tempfile.TemporaryDirectory(prefix="bfcl-mt-agreement-") as tmp:
        in_path, out_path = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(in_path, "w", encoding="utf-8") as f:
            json.dump({"categories": categories,
                       "ground_truth": {e.id: e.ground_truth for e in entries.values()},
                       "cases": [{"id": c["entry"].id, "transcript": c["transcript"], "fc": c.get("fc")}
                                 for c in cases]}, f)
        started = time.perf_counter()
        subprocess.run([args.bfcl_python, str(Path(__file__).resolve()), "--bfcl-worker", in_path, out_path],
                       check=True)
        bfcl_wall = time.perf_counter() - started
        with open(out_path, encoding="utf-8") as f:
            bfcl = json.load(f)

    chats_same = notes_same = notes_total = 0
    for entry in entries.values():
        theirs = bfcl["chats"][entry.id]
        chats_same += first_turn_messages(entry) == theirs["first"]
        for turn, functions in entry.missed_functions.items():
            notes_total += 1
            notes_same += ADDITIONAL_FUNCTION_PROMPT.format(functions=functions) == theirs["notes"].get(str(turn))

    by_source = defaultdict(Counter)
    by_variant = defaultdict(Counter)
    disagreements = []
    for case, theirs in zip(cases, bfcl["verdicts"], strict=True):
        mine = case["ours"]
        agree = mine.valid == theirs["valid"]
        for counter in (by_source[(case["source"], case["entry"].category)], by_variant[case["variant"]]):
            counter["cases"] += 1
            counter["agree"] += agree
            counter["ours_valid"] += mine.valid
            counter["bfcl_valid"] += theirs["valid"]
            both_invalid = not mine.valid and not theirs["valid"]
            counter["both_invalid"] += both_invalid
            counter["error_type_agree"] += both_invalid and mine.error_type == theirs["error_type"]
        if not agree:
            disagreements.append({"source": case["source"], "id": case["entry"].id, "variant": case["variant"],
                                  "transcript": case["transcript"],
                                  "ours": {"valid": mine.valid, "error_type": mine.error_type, "error": mine.error},
                                  "bfcl": theirs})

    def pct(a, b):
        return f"{100 * a / b:.2f}%" if b else "-"

    print(f"bfcl-eval {bfcl['bfcl_eval_version']}; {len(cases)} transcripts on {len(entries)} entries; BFCL side "
          f"{bfcl_wall:.1f} s (import {bfcl['import_s']} s, checks {bfcl['check_s']} s), ours {ours_s:.1f} s "
          f"(sandboxed, inference of the scripted models included)")
    print(f"first-turn chats identical to BFCL's: {chats_same}/{len(entries)}; miss_func notes: "
          f"{notes_same}/{notes_total}")
    print(f"{'source':<10} {'category':<26} {'cases':>6} {'agree':>6} {'agree%':>8} {'ours ok':>8} {'bfcl ok':>8} "
          f"{'err type':>8}")
    total = Counter()
    for (source, category), c in sorted(by_source.items()):
        total.update(c)
        print(f"{source:<10} {category:<26} {c['cases']:>6} {c['agree']:>6} {pct(c['agree'], c['cases']):>8} "
              f"{c['ours_valid']:>8} {c['bfcl_valid']:>8} {pct(c['error_type_agree'], c['both_invalid']):>8}")
    print(f"{'all':<10} {'':<26} {total['cases']:>6} {total['agree']:>6} {pct(total['agree'], total['cases']):>8} "
          f"{total['ours_valid']:>8} {total['bfcl_valid']:>8} "
          f"{pct(total['error_type_agree'], total['both_invalid']):>8}")
    print()
    print(f"{'variant':<32} {'cases':>6} {'agree%':>8} {'ours ok':>8} {'bfcl ok':>8} {'err type':>8}")
    for variant, c in sorted(by_variant.items()):
        print(f"{variant:<32} {c['cases']:>6} {pct(c['agree'], c['cases']):>8} {c['ours_valid']:>8} "
              f"{c['bfcl_valid']:>8} {pct(c['error_type_agree'], c['both_invalid']):>8}")
    print()
    print(f"{len(disagreements)} disagreements")
    for d in disagreements[:50]:
        print(json.dumps(d, ensure_ascii=False, default=str)[:1500])
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"bfcl_eval_version": bfcl["bfcl_eval_version"], "cases": len(cases), "entries": len(entries),
                       "chats_identical": chats_same, "notes_identical": notes_same,
                       "per_source_category": [{"source": s, "category": c, **v} for (s, c), v in by_source.items()],
                       "per_variant": {k: dict(v) for k, v in by_variant.items()},
                       "disagreements": disagreements}, f, indent=1, default=str)
    return 0 if total["agree"] >= 0.99 * total["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
