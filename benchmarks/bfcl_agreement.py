"""Agreement of our BFCL checker (tasks/evaluation/bfcl_checker.py) with bfcl-eval's own code, on the same answers.

    benchmarks/bfcl_env/setup.sh                       # once: bfcl-eval in its own venv
    .venv/bin/python benchmarks/bfcl_agreement.py [--answers eval1.jsonl ...] [--no-variants]
        [--categories simple_python,multiple,parallel,...] [--seed 0] [--report report.json]

By default every single-turn category is judged: the five non-live ones and the six live ones.

Answers come from two kinds of source:

- ``--answers FILE...``: JSONL written by ``toolace eval --output`` (``id``, ``category``, ``answer``); each
  file is one source;
- ``variants`` (unless ``--no-variants``): for every item of the categories, answers derived from its possible
  answers, one per rule: correct ones (first acceptable values, every optional parameter given, optional ones
  dropped), a needed parameter dropped, a wrong value, int for float and float for int, string case,
  punctuation and quote variants, strings in lists upper-cased, wrong types (string for number, tuple for
  array, ``true`` for ``True``...), an extra parameter, no arguments, positional arguments, a variable name,
  arithmetic, a unary plus, a wrong function, parallel calls reversed, dropped or duplicated, and answer
  texts without brackets, in a code fence, with prose, empty or a refusal.

Each answer is judged twice: by ``tasks.evaluation.bfcl_checker.judge_answer`` here, and in a subprocess running in
``benchmarks/bfcl_env/.venv`` by BFCL itself, as its eval runner does for a prompting model:
``default_decode_ast_prompting``, ``is_function_calling_format_output``, ``ast_checker`` (Language.PYTHON),
and for (ir)relevance ``is_empty_output``. The worker also builds each item's chat with BFCL's
``system_prompt_pre_processing_chat_model`` (functions with BFCL's Python hint), compared with ours.

Printed: agreement of the ``valid`` verdicts per source and category, and per variant; agreement of error
types (on the answers both judge wrong: BFCL gives even a valid call an error type) and of the decoded calls
(their ``repr``); how many prompts are identical; every disagreement (item id,
variant, answer, both verdicts). ``--report`` writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import copy
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
# every single-turn category: the non-live ones, irrelevance and the live ones (relevance and irrelevance included);
# the multi-turn categories have their own benchmark (benchmarks/bfcl_multi_turn_agreement.py)
DEFAULT_CATEGORIES = ("simple_python,multiple,parallel,parallel_multiple,irrelevance,live_simple,live_multiple,"
                      "live_parallel,live_parallel_multiple,live_irrelevance,live_relevance")
# BFCL's checker looks the model up for one setting only (underscore_to_dot: dotted function names rewritten
# for FC models). Prompt-mode models keep the dots; this model's config says so.
BFCL_MODEL_NAME = "gorilla-openfunctions-v2"


# ------------------------------------------------------------------------------ BFCL side (its own venv)


def bfcl_worker(in_path: str, out_path: str) -> None:
    """Runs in benchmarks/bfcl_env/.venv: BFCL's verdict for every answer, BFCL's chat for every item."""
    started = time.perf_counter()
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting, system_prompt_pre_processing_chat_model
    from bfcl_eval.utils import (
        _func_doc_language_specific_pre_processing,
        is_empty_output,
        is_function_calling_format_output,
    )

    import_s = time.perf_counter() - started
    with open(in_path, encoding="utf-8") as f:
        payload = json.load(f)
    items = payload["items"]
    verdicts = []
    started = time.perf_counter()
    for case in payload["cases"]:
        item = items[case["item"]]
        category, text = item["category"], case["answer"]
        try:
            decoded = default_decode_ast_prompting(text, ReturnFormat.PYTHON, False)
            decode_error = None
        except Exception as exc:  # BFCL: any decoding exception means "no call"
            decoded, decode_error = None, f"{type(exc).__name__}: {exc}"
        verdict = {"decoded": repr(decoded)}
        if "irrelevance" in category or "relevance" in category:
            has_call = decoded is not None and not is_empty_output(decoded)
            success = not has_call if "irrelevance" in category else has_call
            verdict.update(valid=success, error_type=None if success else (
                "irrelevance_error:decoder_success" if "irrelevance" in category else "relevance_error:decoder_failed"))
        elif decoded is None:
            verdict.update(valid=False, error_type="ast_decoder:decoder_failed", error=decode_error)
        elif not is_function_calling_format_output(decoded):
            verdict.update(valid=False, error_type="ast_decoder:decoder_wrong_output_format")
        else:
            try:
                result = ast_checker(item["functions"], decoded, item["possible_answer"], Language.PYTHON, category,
                                     BFCL_MODEL_NAME)
                verdict.update(valid=bool(result["valid"]), error_type=result.get("error_type"))
            except Exception as exc:
                verdict.update(valid=False, error_type="checker_error", error=f"{type(exc).__name__}: {exc}")
        verdicts.append(verdict)
    check_s = time.perf_counter() - started
    chats = []
    for item in items:
        functions = _func_doc_language_specific_pre_processing(copy.deepcopy(item["functions"]), item["category"])
        chats.append(system_prompt_pre_processing_chat_model(copy.deepcopy(item["question"][0]), functions,
                                                             item["id"]))
    from importlib.metadata import version

    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"verdicts": verdicts, "chats": chats, "bfcl_eval_version": version("bfcl-eval"),
                   "import_s": round(import_s, 3), "check_s": round(check_s, 3)}, f)


# ------------------------------------------------------------------------------------------ variants


def _render_value(value):
    return repr(value)


def render_calls(calls, brackets=True):
    """Python call-list text for [(name, {param: value})]."""
    def arguments(args):  # an empty key: a positional argument
        return ", ".join(f"{k}={_render_value(v)}" if k else _render_value(v) for k, v in args.items())

    body = ", ".join(f"{name}({arguments(args)})" for name, args in calls)
    return f"[{body}]" if brackets else body


def _pick(options, how):
    """A value from a parameter's acceptable values, or None to leave the parameter out."""
    non_empty = [o for o in options if o != ""]
    if how == "first":
        return None if not options or options[0] == "" else (options[0],)
    if how == "last":
        return (non_empty[-1],) if non_empty else None
    if how == "minimal":
        return None if "" in options or not non_empty else (non_empty[0],)
    raise ValueError(how)


def _dict_value(option):
    """BFCL lists dict values as {key: [acceptable values]}: the first acceptable value of each key."""
    if not isinstance(option, dict):
        return option
    out = {}
    for key, values in option.items():
        if isinstance(values, list) and values:
            if values[0] != "":
                out[key] = values[0]
        else:
            out[key] = values
    return out


def _list_value(option):
    if isinstance(option, list) and option and all(isinstance(o, dict) for o in option):
        return [_dict_value(o) for o in option]
    return option


def build_call(answer, how):
    name, params = next(iter(answer.items()))
    args = {}
    for param, options in params.items():
        picked = _pick(options, how)
        if picked is not None:
            args[param] = _list_value(_dict_value(picked[0]))
    return name, args


def _types(functions, name):
    for f in functions:
        if f["name"] == name:
            return {p: d.get("type") for p, d in f["parameters"]["properties"].items()}, f
    return {}, None


def _wrong(value, rng):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([1, 7, -3])
    if isinstance(value, float):
        return round(value * 1.7 + 0.3, 3)
    if isinstance(value, str):
        return "zzq " + value if value else "zzq"
    if isinstance(value, list):
        return value + [value[0]] if value else ["zzq"]
    if isinstance(value, dict):
        if not value:
            return {"zzq": 1}
        key = next(iter(value))
        return {**value, key: _wrong(value[key], rng)}
    return "zzq"


def _punctuate(text):
    return text.replace(" ", "-").upper() + "." if text else ",."


def _wrong_type(value, type_name):
    if type_name in ("integer", "float"):
        return str(value)
    if type_name == "boolean":
        return "True" if value else "False"
    if type_name == "string" or type_name == "any":
        return [value]
    if type_name in ("array", "tuple"):
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if type_name == "dict":
        return json.dumps(value)
    return None


class Raw:
    """A value rendered as given source text (a variable, an expression, ``true``)."""

    def __init__(self, source):
        self.source = source

    def __repr__(self):
        return self.source


# Values that exercise the decoder's rules (what BFCL's resolve_ast_by_type makes of each).
DECODER_VALUES = {
    "decoder_nested_call": "other.func(z=1)", "decoder_call_no_keywords": "sqrt(4)", "decoder_subscript": "x[0]",
    "decoder_lambda": "lambda: 1", "decoder_attribute": "math.pi", "decoder_power": "2 ** 3",
    "decoder_division": "1 / 4", "decoder_string_concat": "'ab' + 'cd'", "decoder_list_concat": "[1] + [2]",
    "decoder_none": "None", "decoder_ellipsis": "...", "decoder_complex": "1j", "decoder_not_true": "not True",
    "decoder_negative_string": "-'x'", "decoder_bytes": "b'x'", "decoder_set": "{1, 2}", "decoder_compare": "1 < 2",
    "decoder_fstring": "f'{1}'", "decoder_dict_duplicate_key": "{'a': 1, 'a': 2}", "decoder_zero_division": "1 / 0",
    "decoder_nested_tuple": "((1, 2), [3])", "decoder_negative_float": "-0.5", "decoder_name_true": "true",
}


def item_variants(item, rng):
    """(variant name, answer text) pairs for one item."""
    kind, functions = item["kind"], item["functions"]
    if kind in ("irrelevance", "relevance"):
        out = [("no_call_empty_list", "[]"), ("refusal", "None of the given functions can be used for this."),
               ("prose_with_call_inside", "I would call it like this: [f(x=1)]")]
        for number, function in enumerate(functions[:2], start=1):
            props = function["parameters"]["properties"]
            sample = {"string": "x", "integer": 1, "float": 1.5, "boolean": True, "array": ["a"], "dict": {"a": 1},
                      "tuple": ("a",), "any": "x"}
            args = {p: sample.get(d.get("type"), "x") for p, d in props.items()
                    if p in function["parameters"].get("required", [])}
            out.append((f"call_function_{number}", render_calls([(function["name"], args)])))
            out.append((f"call_function_{number}_no_args", f"{function['name']}()"))
            out.append((f"call_function_{number}_fenced", f"```\n{render_calls([(function['name'], args)])}\n```"))
        return out

    answers = item["possible_answer"]
    base = [build_call(a, "first") for a in answers]
    out = [("correct_first", render_calls(base)),
           ("correct_all_optional", render_calls([build_call(a, "last") for a in answers])),
           ("correct_minimal", render_calls([build_call(a, "minimal") for a in answers])),
           ("text_no_brackets", render_calls(base, brackets=False)),
           ("text_fenced", f"```python\n{render_calls(base)}\n```"),
           ("text_prose", f"Sure, here you go: {render_calls(base)}"),
           ("text_trailing_prose", f"{render_calls(base)} I hope this helps."),
           ("text_empty_list", "[]"),
           ("text_refusal", "I cannot help with that."),
           ("no_arguments", render_calls([(name, {}) for name, _ in base])),
           ("extra_param", render_calls([(base[0][0], {**base[0][1], "zz_extra": 1}), *base[1:]]))]
    target = rng.randrange(len(base))
    name, args = base[target]
    types, function = _types(functions, name)
    answer_params = next(iter(answers[target].values()))

    def with_args(new_args, suffix=""):
        calls = list(base)
        calls[target] = (name + suffix, new_args)
        return render_calls(calls)

    needed = [p for p, options in answer_params.items() if "" not in options and p in args]
    if needed:
        p = rng.choice(needed)
        out.append(("drop_needed_param", with_args({k: v for k, v in args.items() if k != p})))
    if args:
        p = rng.choice(sorted(args))
        out.append(("wrong_value", with_args({**args, p: _wrong(args[p], rng)})))
        wrong = _wrong_type(args[p], types.get(p))
        if wrong is not None:
            out.append(("wrong_type", with_args({**args, p: wrong})))
        first = sorted(args)[0]  # passed positionally: BFCL ignores positional arguments
        out.append(("positional_first_arg", with_args(
            {**{"": Raw(_render_value(args[first]))}, **{k: v for k, v in args.items() if k != first}})))
        out.append(("variable_name", with_args({**args, p: Raw("some_variable")})))
        for variant, source in DECODER_VALUES.items():
            out.append((variant, with_args({**args, p: Raw(source)})))
        out.append(("decoder_kwargs_unpack", with_args({**args, "": Raw('**{"zz": 1}')})))
        out.append(("decoder_quoted_text", "'" + render_calls(base) + "'"))
    for p, v in args.items():
        t = types.get(p)
        if t == "float" and isinstance(v, float) and v.is_integer():
            out.append(("int_for_float", with_args({**args, p: int(v)})))
        elif t == "float" and isinstance(v, int | float) and not isinstance(v, bool):
            out.append(("float_written_int", with_args({**args, p: int(v)})))
        if t == "integer" and isinstance(v, int) and not isinstance(v, bool):
            out.append(("float_for_int", with_args({**args, p: float(v)})))
            out.append(("int_as_arithmetic", with_args({**args, p: Raw(f"{v} - 1 + 1")})))
            out.append(("unary_plus", with_args({**args, p: Raw(f"+{v}")})))
        if t == "boolean" and isinstance(v, bool):
            out.append(("json_true_false", with_args({**args, p: Raw("true" if v else "false")})))
        if t in ("string", "any") and isinstance(v, str):
            out.append(("string_upper", with_args({**args, p: v.upper()})))
            out.append(("string_punctuation", with_args({**args, p: _punctuate(v)})))
            out.append(("string_single_quote", with_args({**args, p: v + "'s"})))
            out.append(("string_spaces", with_args({**args, p: " " + v + "  "})))
        if t == "array" and isinstance(v, list):
            out.append(("array_as_tuple", with_args({**args, p: tuple(v)})))
            if v and all(isinstance(e, str) for e in v):
                out.append(("array_strings_upper", with_args({**args, p: [e.upper() for e in v]})))
            if len(v) > 1:
                out.append(("array_reversed", with_args({**args, p: list(reversed(v))})))
        if t == "tuple" and isinstance(v, list):
            out.append(("tuple_as_tuple", with_args({**args, p: tuple(v)})))
        if t == "dict" and isinstance(v, dict) and v:
            key = next(iter(v))
            if isinstance(v[key], str):
                out.append(("dict_value_upper", with_args({**args, p: {**v, key: v[key].upper()}})))
            out.append(("dict_extra_key", with_args({**args, p: {**v, "zz_key": 1}})))
            out.append(("dict_missing_key", with_args({**args, p: {k: x for k, x in v.items() if k != key}})))
    others = [f["name"] for f in functions if f["name"] != name]
    out.append(("wrong_function", with_args(args, suffix="_v2") if not others else
                render_calls([(rng.choice(others) if i == target else n, a) for i, (n, a) in enumerate(base)])))
    if len(base) > 1:
        out.append(("parallel_reversed", render_calls(list(reversed(base)))))
        out.append(("parallel_drop_one", render_calls(base[:-1])))
        shuffled = list(base)
        rng.shuffle(shuffled)
        out.append(("parallel_shuffled", render_calls(shuffled)))
    out.append(("duplicated_call", render_calls([*base, base[0]])))
    return out


# ------------------------------------------------------------------------------------------------ main


def load_answer_file(path, items_by_id):
    cases = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("answer") is None:
                continue  # no answer (e.g. the prompt did not fit): nothing to judge
            if row["id"] not in items_by_id:
                raise SystemExit(f"{path}:{number}: item {row['id']} is not in the loaded categories")
            cases.append({"item": items_by_id[row["id"]], "variant": "model", "answer": row["answer"]})
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", nargs="*", default=[], help="JSONL files written by `toolace eval --output`")
    parser.add_argument("--categories", default=DEFAULT_CATEGORIES)
    parser.add_argument("--no-variants", action="store_true", help="only the --answers files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", help="write the whole report here as JSON")
    parser.add_argument("--bfcl-python", default=str(BFCL_PYTHON), help="python of the BFCL environment")
    parser.add_argument("--bfcl-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bfcl_worker:
        bfcl_worker(*args.bfcl_worker)
        return 0

    sys.path.insert(0, str(ROOT))
    from tasks.evaluation.bfcl_checker import judge_answer
    from tasks.evaluation.bfcl_data import CATEGORIES, check_categories, load_category
    from tasks.evaluation.bfcl_eval import build_messages

    if not Path(args.bfcl_python).exists():
        raise SystemExit(f"{args.bfcl_python} does not exist: run benchmarks/bfcl_env/setup.sh first")
    categories = check_categories([c for c in args.categories.split(",") if c])
    for path in args.answers:  # the categories of the answer files are loaded too
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    category = json.loads(line)["category"]
                    if category not in categories:
                        categories += check_categories([category])
    loaded = [item for category in categories for item in load_category(category)]
    items = [{"id": it.id, "category": it.category, "kind": CATEGORIES[it.category], "functions": it.functions,
              "possible_answer": it.possible_answer, "question": it.question} for it in loaded]
    items_by_id = {item["id"]: i for i, item in enumerate(items)}

    sources = {}
    if not args.no_variants:
        cases = []
        for i, item in enumerate(items):
            rng = random.Random(f"{args.seed}:{item['id']}")
            cases += [{"item": i, "variant": name, "answer": text} for name, text in item_variants(item, rng)]
        sources["variants"] = cases
    for path in args.answers:
        sources[f"answers:{Path(path).name}"] = load_answer_file(path, items_by_id)
    all_cases = [dict(case, source=source) for source, cases in sources.items() for case in cases]
    if not all_cases:
        raise SystemExit("nothing to judge: give --answers or leave the variants on")

    with tempfile.TemporaryDirectory(prefix="bfcl-agreement-") as tmp:
        in_path, out_path = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(in_path, "w", encoding="utf-8") as f:
            json.dump({"items": items, "cases": [{"item": c["item"], "answer": c["answer"]} for c in all_cases]}, f)
        started = time.perf_counter()
        subprocess.run([args.bfcl_python, str(Path(__file__).resolve()), "--bfcl-worker", in_path, out_path],
                       check=True)
        bfcl_wall = time.perf_counter() - started
        with open(out_path, encoding="utf-8") as f:
            bfcl = json.load(f)

    started = time.perf_counter()
    ours = []
    for case in all_cases:
        item = items[case["item"]]
        verdict = judge_answer(item["kind"], item["functions"], case["answer"], item["possible_answer"])
        ours.append({"valid": verdict.valid, "error_type": verdict.error_type, "decoded": repr(verdict.decoded)})
    ours_s = time.perf_counter() - started
    prompts_same = sum(build_messages(it) == chat for it, chat in zip(loaded, bfcl["chats"], strict=True))

    by_source = defaultdict(Counter)
    by_variant = defaultdict(Counter)
    disagreements = []
    for case, mine, theirs in zip(all_cases, ours, bfcl["verdicts"], strict=True):
        item = items[case["item"]]
        agree = mine["valid"] == theirs["valid"]
        for counter in (by_source[(case["source"], item["category"])], by_variant[case["variant"]]):
            counter["items"] += 1
            counter["agree"] += agree
            counter["ours_valid"] += mine["valid"]
            counter["bfcl_valid"] += theirs["valid"]
            both_invalid = not mine["valid"] and not theirs["valid"]
            counter["both_invalid"] += both_invalid
            counter["error_type_agree"] += both_invalid and mine["error_type"] == theirs["error_type"]
            counter["decoded_agree"] += mine["decoded"] == theirs["decoded"]
        if not agree:
            disagreements.append({"source": case["source"], "id": item["id"], "variant": case["variant"],
                                  "answer": case["answer"], "ours": mine, "bfcl": theirs})

    def pct(a, b):
        return f"{100 * a / b:.2f}%" if b else "-"

    print(f"bfcl-eval {bfcl['bfcl_eval_version']}; {len(all_cases)} answers on {len(items)} items; BFCL side "
          f"{bfcl_wall:.1f} s (import {bfcl['import_s']} s, checks {bfcl['check_s']} s), ours {ours_s:.1f} s")
    print(f"prompts identical to BFCL's: {prompts_same}/{len(items)}")
    header = f"{'source':<28} {'category':<24} {'items':>6} {'agree':>6} {'agree%':>8} {'ours ok':>8} " \
             f"{'bfcl ok':>8} {'err type':>8} {'decoded':>8}"
    print(header)
    total = Counter()
    for (source, category), c in sorted(by_source.items()):
        total.update(c)
        print(f"{source:<28} {category:<24} {c['items']:>6} {c['agree']:>6} {pct(c['agree'], c['items']):>8} "
              f"{c['ours_valid']:>8} {c['bfcl_valid']:>8} {pct(c['error_type_agree'], c['both_invalid']):>8} "
              f"{pct(c['decoded_agree'], c['items']):>8}")
    print(f"{'all':<28} {'':<24} {total['items']:>6} {total['agree']:>6} {pct(total['agree'], total['items']):>8} "
          f"{total['ours_valid']:>8} {total['bfcl_valid']:>8} "
          f"{pct(total['error_type_agree'], total['both_invalid']):>8} "
          f"{pct(total['decoded_agree'], total['items']):>8}")
    print()
    print(f"{'variant':<40} {'items':>6} {'agree%':>8} {'ours ok':>8} {'bfcl ok':>8}")
    for variant, c in sorted(by_variant.items()):
        print(f"{variant:<40} {c['items']:>6} {pct(c['agree'], c['items']):>8} {c['ours_valid']:>8} "
              f"{c['bfcl_valid']:>8}")
    print()
    print(f"{len(disagreements)} disagreements")
    for d in disagreements:
        print(json.dumps(d, ensure_ascii=False, default=str))
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"bfcl_eval_version": bfcl["bfcl_eval_version"], "answers": len(all_cases),
                       "prompts_identical": prompts_same, "items": len(items),
                       "per_source_category": [{"source": s, "category": c, **v} for (s, c), v in by_source.items()],
                       "per_variant": {k: dict(v) for k, v in by_variant.items()},
                       "disagreements": disagreements}, f, indent=1, default=str)
    return 0 if total["agree"] >= 0.99 * total["items"] else 1


if __name__ == "__main__":
    sys.exit(main())
