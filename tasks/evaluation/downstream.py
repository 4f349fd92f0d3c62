"""The downstream check: does a run's dataset make a model better at calling functions?

A base model is fine-tuned on the run's published dataset with a fixed budget (:mod:`tasks.training.fine_tuning`),
then the base and the tuned model are scored on BFCL items the same way (:mod:`tasks.evaluation.bfcl_eval`).

A published run is never written again, so each check is a new version beside it, never in it::

    <out>/runs/<run-id>/                         the published run: not touched (nor <out>/latest.json)
    <out>/downstream/<run-id>/<check-id>/        one check: base-answers.jsonl, tuned-answers.jsonl (with
                                                 --seeds N > 1: tuned-seed<S>-answers.jsonl for each seed),
                                                 report.json (the figures), manifest.json (written last)
    <out>/downstream/<run-id>/latest.json        the run's latest check (written after its manifest)

The check's ``manifest.json`` lists its files with size and sha256 and names the run it evaluated with the
sha256 of that run's ``manifest.json``. A check id is new for every check and a check folder is never
written again. :func:`read_downstream` and :func:`check_versions` read them back. Plain functions here;
``flows/downstream_check.py`` composes them.

Models are scored through :mod:`tasks.evaluation.model_serving` (:func:`score_model`): by default the embedded
llama.cpp server (the tuned folder converted to GGUF), else ``transformers``. ``mode`` ``prompt`` (the default)
trains on ToolACE's call lists and scores in BFCL's prompt mode; ``fc`` trains in the base's own chat template
(``toolace train --format native``, or ``chat_template``'s family's) and scores in BFCL's function-calling mode,
the base through the same template.

Seeds (``seeds`` > 1): training is repeated with seeds ``seed``, ``seed + 1``, ... (one tuned model each, kept
like any other budget), each tuned model is scored on the same items, and the report adds ``seeds``
(:func:`seed_report`): each seed's figures and paired comparison with the base, and per category the mean
accuracy and difference across seeds with their spread (standard deviation, range) and a 95% interval of the
mean difference that resamples both seeds and items. The report's top-level ``tuned``, ``paired``,
``tuned_model`` and ``training`` are the first seed's, so a one-seed check (the default) is what it always was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.dialogs.complexity import DEFAULT_TARGET
from tasks.evaluation.bfcl_data import BfclItem, check_categories
from tasks.evaluation.bfcl_eval import CategoryScore, overall
from tasks.evaluation.statistics import BOOTSTRAP_SAMPLES, LEVEL, paired_difference, unseen_rate_bound
from tasks.storage import run_storage, writers
from toolace.errors import UserError

DOWNSTREAM_FOLDER = run_storage.DOWNSTREAM
ANSWERS = {"base": "base-answers.jsonl", "tuned": "tuned-answers.jsonl"}
REPORT = "report.json"
CHECK_MANIFEST = "manifest.json"
TRAINING_FIELDS = ("base", "base_source", "method", "samples_used", "call_turns", "text_turns", "examples",
                   "examples_too_long", "steps", "epochs", "lr", "lora_r", "batch_size", "seed", "device",
                   "compute_dtype", "final_train_loss", "mean_train_loss", "wall_time_s", "format", "chat_template",
                   "examples_unrendered")


class DownstreamConfig(BaseModel):
    """What a downstream check trains and scores. The defaults are the budget ``docs/benchmarks.md`` uses:
    60 steps, batch 1, lr 5e-5, the first 100 simple_python items."""

    run: str = Field(description="A published run folder (.../runs/<run-id>), or an output root: its latest run")
    base: str = Field(DEFAULT_TARGET, description="Base model: smollm2, a Hugging Face id or a local folder")
    steps: int = Field(60, ge=1)
    lr: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(1, ge=1)
    lora_r: int | None = Field(None, ge=1)
    seed: int = 0
    calls_only: bool = Field(False, description="Train on assistant turns with calls only")
    categories: list[str] = Field(default_factory=lambda: ["simple_python"])
    limit: int | None = Field(100, ge=1, description="First N items of each category (None: all)")
    max_new_tokens: int = Field(128, ge=1, description="Answer length cap (a right answer is a short call list)")
    eval_batch_size: int = Field(8, ge=1)
    engine: str | None = Field(None, description="How models answer: llama-server or transformers [llama-server "
                                                 "when llama-cpp-python is installed]")
    slots: int | None = Field(None, ge=1, description="llama-server: parallel slots [the CPU count]")
    seeds: int = Field(1, ge=1, description="Training runs, with seeds seed, seed+1, ...: each tuned model is scored")
    models_dir: str | None = Field(None, description="Where tuned models are kept [~/.cache/toolace/downstream]")
    s3_endpoint_url: str | None = None
    mode: Literal["prompt", "fc"] = Field("prompt", description="prompt: trained on ToolACE's call lists, scored in "
                                                               "BFCL's prompt mode; fc: trained in the base's own "
                                                               "chat template (native), scored in FC mode")
    chat_template: str | None = Field(None, description="fc: a family's real template in place of a base's own "
                                                        "that renders no tools (trained and asked through it)")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str | None) -> str | None:
        from tasks.evaluation.model_serving import ENGINES

        if value is not None and value not in ENGINES:
            raise ValueError(f"unknown engine {value!r}: choose {' or '.join(ENGINES)}")
        return value

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        return check_categories(value)

    @model_validator(mode="after")
    def _template_with_fc(self) -> DownstreamConfig:
        if self.chat_template is not None and self.mode != "fc":
            raise ValueError("--chat-template goes with --mode fc")
        return self

    @property
    def train_format(self) -> str:
        """How the tuned model is trained: ``toolace`` (prompt mode) or ``native`` (FC mode)."""
        return "native" if self.mode == "fc" else "toolace"

    def budget(self) -> dict[str, Any]:
        budget = {"base": self.base, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                  "lora_r": self.lora_r, "seed": self.seed, "calls_only": self.calls_only}
        if self.mode == "fc":  # a prompt-mode budget keeps its key (and its tuned models) as it was
            budget.update(format=self.train_format, chat_template=self.chat_template)
        return budget

    def evaluation(self) -> dict[str, Any]:
        from tasks.evaluation.model_serving import resolve_engine

        mode = "BFCL function-calling mode, greedy" if self.mode == "fc" else "BFCL prompt mode, greedy"
        return {"categories": self.categories, "limit": self.limit, "max_new_tokens": self.max_new_tokens,
                "mode": mode, "engine": resolve_engine(self.engine)}

    def seed_list(self) -> list[int]:
        """The training seeds: ``seed``, ``seed + 1``, ... (``seeds`` of them)."""
        return [self.seed + i for i in range(self.seeds)]

    def for_seed(self, seed: int) -> DownstreamConfig:
        """This check's budget with one seed (its tuned model folder is :func:`tuned_model_dir` of it)."""
        return self.model_copy(update={"seed": seed, "seeds": 1})


def resolve_run(run: str) -> tuple[str, dict[str, Any]]:
    """(run folder, its manifest): ``run`` is a run folder with a manifest, or an output root whose
    ``latest.json`` names one. A missing, failed or unpublished run is a ``UserError`` naming it."""
    root = run.rstrip("/")
    fs, path = fsspec.core.url_to_fs(f"{root}/manifest.json")
    if fs.exists(path):
        manifest = run_storage.read_json(f"{root}/manifest.json")
        if manifest.get("status") == "failed":
            raise UserError(f"run {root} failed its expectation suite: it has no published dataset to train on")
        return root, manifest
    fs, path = fsspec.core.url_to_fs(f"{root}/{run_storage.LATEST}")
    if fs.exists(path):
        pointer = run_storage.read_json(f"{root}/{run_storage.LATEST}")
        return str(pointer["url"]).rstrip("/"), run_storage.read_json(f"{pointer['url']}/manifest.json")
    raise UserError(f"{run} is neither a published run folder (no manifest.json) nor an output root with a "
                    f"{run_storage.LATEST}: pass a .../runs/<run-id> folder")


def dataset_url(run_url: str, manifest: dict[str, Any]) -> str:
    """The run's dataset in OpenAI chat format (what ``toolace train`` reads)."""
    dataset = manifest.get("dataset") or {}
    if not dataset.get("dialogs"):
        raise UserError(f"run {run_url} published no dialogs: nothing to train on")
    return f"{run_url}/{dataset.get('openai', 'dataset/openai.jsonl')}"


def tuned_model_dir(config: DownstreamConfig, run_id: str) -> Path:
    """Where the tuned model of this run and budget is kept: one folder per (run, budget), so a rerun with the
    same budget reuses it and another budget does not overwrite it."""
    key = hashlib.sha256(json.dumps(config.budget(), sort_keys=True).encode()).hexdigest()[:10]
    root = Path(config.models_dir).expanduser() if config.models_dir else \
        Path.home() / ".cache" / "toolace" / "downstream"
    return root / f"{run_id}-{key}"


def reusable_training(folder: Path, config: DownstreamConfig, dataset: str) -> dict[str, Any] | None:
    """The training record of an earlier downstream check of the same dataset and budget, when its model
    folder is complete (the record is written last); None otherwise."""
    from tasks.training.fine_tuning import RECORD_NAME

    record_path = folder / RECORD_NAME
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    same = (record.get("dataset") == dataset and record.get("base") == config.base
            and record.get("steps") == config.steps and record.get("lr") == config.lr
            and record.get("batch_size") == config.batch_size and record.get("lora_r") == config.lora_r
            and record.get("seed") == config.seed and record.get("calls_only") == config.calls_only
            and record.get("format", "toolace") == config.train_format
            and record.get("chat_template") == config.chat_template)
    return record if same else None


def check_fc_base(config: DownstreamConfig) -> None:
    """FC mode: the base must be askable through its template (its own, or ``chat_template``'s fitted to it),
    checked from its tokenizer before anything is trained; a :class:`tasks.evaluation.bfcl_fc.FcModeError`
    naming the model and what to do otherwise. Nothing to check in prompt mode."""
    if config.mode != "fc":
        return
    from tasks.evaluation.bfcl_fc import fc_template, template_tool_format

    template_tool_format(fc_template(config.base, config.chat_template), config.base)


def score_summary(scores: list[CategoryScore]) -> dict[str, Any]:
    """Accuracy per category and over all items (micro average)."""
    summary = {s.category: {"items": s.items, "correct": s.correct, "accuracy": round(s.accuracy, 4)}
               for s in scores}
    total = overall(scores)
    summary["overall"] = {"items": total.items, "correct": total.correct, "accuracy": round(total.accuracy, 4)}
    return summary


def intervals(scores: list[CategoryScore]) -> dict[str, list[float]]:
    """Each category's and the overall accuracy's 95% bootstrap interval over items, as [low, high]."""
    return {s.category: [round(i.low, 4), round(i.high, 4)]
            for s in [*scores, overall(scores)] for i in [s.interval()]}


def paired_comparison(base: list[CategoryScore], tuned: list[CategoryScore]) -> dict[str, Any]:
    """Tuned against base on the same items, per category and overall: the difference with its 95% paired
    bootstrap interval and the one-sided bootstrap p-value (categories whose per-item verdicts are not both
    known are left out)."""
    out: dict[str, Any] = {}
    by_name = {s.category: s for s in tuned}
    for name, a, b in [(s.category, s, by_name.get(s.category)) for s in base] + \
            [("overall", overall(base), overall(tuned))]:
        if b is None or not a.outcomes or len(a.outcomes) != len(b.outcomes):
            continue
        paired = paired_difference(a.outcomes, b.outcomes)
        out[name] = {"difference": round(paired.difference.estimate, 4),
                     "ci95": [round(paired.difference.low, 4), round(paired.difference.high, 4)],
                     "p_not_better": round(paired.p_not_better, 4), "items": paired.items,
                     "tuned_only": paired.tuned_only, "base_only": paired.base_only, "line": paired.line()}
    return out


def downstream_record(config: DownstreamConfig, check: CheckLocation, tuned_dir: Path, training: dict[str, Any],
                      reused: bool, base: list[CategoryScore], tuned: list[CategoryScore]) -> dict[str, Any]:
    """The check's ``report.json``: the run it evaluated, budget, evaluation, both scores and the training
    record; ``files`` are relative to the check's folder."""
    base_summary, tuned_summary = score_summary(base), score_summary(tuned)
    return {
        "run_id": check.run_id,
        "check_id": check.check_id,
        "run_url": check.run_url,
        "run_manifest_sha256": check.run_manifest_sha256,
        "results": check.folder,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(),
        "budget": config.budget(),
        "evaluation": config.evaluation(),
        "base": base_summary,
        "tuned": tuned_summary,
        "delta_accuracy": {name: round(tuned_summary[name]["accuracy"] - base_summary[name]["accuracy"], 4)
                           for name in base_summary},
        "ci95": {"base": intervals(base), "tuned": intervals(tuned)},
        "paired": paired_comparison(base, tuned),
        "tuned_model": str(tuned_dir),
        "training_reused": reused,
        "training": {k: training.get(k) for k in TRAINING_FIELDS},
        "files": {"base_answers": ANSWERS["base"], "tuned_answers": ANSWERS["tuned"], "report": REPORT},
    }


def tuned_answers_name(seed: int, seeds: int) -> str:
    """The tuned model's answers file: ``tuned-answers.jsonl`` for a one-seed check, else one per seed."""
    return ANSWERS["tuned"] if seeds == 1 else f"tuned-seed{seed}-answers.jsonl"


def gguf_cache(config: DownstreamConfig) -> str | None:
    """Where converted GGUFs of tuned models are kept: ``<models_dir>/gguf`` (default: model_serving's cache)."""
    return str(Path(config.models_dir).expanduser() / "gguf") if config.models_dir else None


def score_model(config: DownstreamConfig, model: str, items: dict[str, list[BfclItem]], output: str,
                log: Callable[[str], None] | None = None, is_base: bool = False) -> list[CategoryScore]:
    """``model`` scored on ``items`` through the configured engine (:mod:`tasks.evaluation.model_serving`), in the
    configured mode (FC: the base through ``chat_template`` when given; a tuned model carries the template it was
    trained in); the answers go to ``output``, renamed into place only once every item is answered."""
    from tasks.evaluation.model_serving import ServingOptions, answer_source, evaluate_complete, fc_answer_source

    options = ServingOptions(engine=config.engine, slots=config.slots, batch_size=config.eval_batch_size,
                             cache_dir=gguf_cache(config))
    if config.mode == "fc":
        template = config.chat_template if is_base else None
        with fc_answer_source(model, config.max_new_tokens, options, template, log=log) as source:
            return evaluate_complete(items, source, output)
    with answer_source(model, config.max_new_tokens, options, log=log) as source:
        return evaluate_complete(items, source, output)


@dataclass(frozen=True)
class SeedRun:
    """One seed of a check: its tuned model, training record and scores."""

    seed: int
    tuned_model: str
    training: dict[str, Any]
    reused: bool
    scores: list[CategoryScore]
    answers: str  # the answers file, relative to the check's folder


def _spread(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": round(float(array.mean()), 4), "sd": round(float(array.std(ddof=1)) if array.size > 1 else 0.0, 4),
            "min": round(float(array.min()), 4), "max": round(float(array.max()), 4)}


def seeds_difference(base: Sequence[bool], tuned: Sequence[Sequence[bool]], samples: int = BOOTSTRAP_SAMPLES,
                     level: float = LEVEL, seed: int = 0) -> tuple[float, float, float, float]:
    """(mean difference tuned - base over seeds, its 95% interval, one-sided p of "not better") by a two-level
    bootstrap: each resample draws the seeds with replacement and the items with replacement (the same items for
    every seed, as they are paired), so the interval carries both the training-seed and the item variance. No item
    differing under any seed: plus or minus the exact bound on a rate never seen in that many items (as
    :func:`tasks.evaluation.statistics.paired_difference` does for one seed)."""
    a = np.asarray(base, dtype=float)
    diffs = np.asarray(tuned, dtype=float) - a[None, :]  # seeds x items
    n_seeds, n_items = diffs.shape
    if n_items == 0 or n_seeds == 0:
        return 0.0, 0.0, 0.0, 1.0
    if not diffs.any():
        bound = unseen_rate_bound(n_items, level)
        return 0.0, -bound, bound, 1.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_items, size=(samples, n_items))
    per_seed = np.stack([row[picks].mean(axis=1) for row in diffs])  # seeds x samples
    seed_picks = rng.integers(0, n_seeds, size=(samples, n_seeds))
    means = per_seed[seed_picks, np.arange(samples)[:, None]].mean(axis=1)
    tail = (1 - level) / 2
    return (float(diffs.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)),
            float((means <= 0).mean()))


def seed_report(base: list[CategoryScore], runs: list[SeedRun]) -> dict[str, Any]:
    """The ``seeds`` part of a check's report: each seed's figures and paired comparison with the base, and per
    category (and overall) the tuned accuracy and the difference across seeds: mean, standard deviation, range,
    and the two-level bootstrap interval of the mean difference (:func:`seeds_difference`)."""
    base_summary = score_summary(base)
    per_seed = []
    for run in runs:
        summary = score_summary(run.scores)
        per_seed.append({
            "seed": run.seed, "tuned": summary, "ci95": intervals(run.scores),
            "delta_accuracy": {name: round(summary[name]["accuracy"] - base_summary[name]["accuracy"], 4)
                               for name in base_summary},
            "paired": paired_comparison(base, run.scores), "tuned_model": run.tuned_model,
            "training_reused": run.reused, "training": {k: run.training.get(k) for k in TRAINING_FIELDS},
            "answers": run.answers})
    across: dict[str, Any] = {}
    base_by_name = {s.category: s for s in [*base, overall(base)]}
    for name, base_score in base_by_name.items():
        tuned = [{s.category: s for s in [*run.scores, overall(run.scores)]}.get(name) for run in runs]
        if any(t is None for t in tuned):
            continue
        accuracy = _spread([t.accuracy for t in tuned if t is not None])
        delta = _spread([t.accuracy - base_score.accuracy for t in tuned if t is not None])
        entry: dict[str, Any] = {"items": base_score.items, "base_accuracy": round(base_score.accuracy, 4),
                                 "tuned_accuracy": accuracy, "delta": delta}
        outcomes = [t.outcomes for t in tuned if t is not None]
        if base_score.outcomes and all(len(o) == len(base_score.outcomes) for o in outcomes):
            estimate, low, high, p = seeds_difference(base_score.outcomes, outcomes)
            entry.update({"ci95": [round(low, 4), round(high, 4)], "p_not_better": round(p, 4)})
            entry["line"] = (f"tuned - base over {len(runs)} seeds: {100 * estimate:+.1f} points "
                             f"[{100 * low:+.1f}, {100 * high:+.1f}] (95% bootstrap over seeds and "
                             f"{base_score.items} items; per seed sd {100 * delta['sd']:.1f} points, range "
                             f"{100 * delta['min']:+.1f} to {100 * delta['max']:+.1f}; p(not better) = {p:.3f})")
        across[name] = entry
    return {"seeds": [run.seed for run in runs], "per_seed": per_seed, "across_seeds": across}


def with_seeds(record: dict[str, Any], base: list[CategoryScore], runs: list[SeedRun]) -> dict[str, Any]:
    """``record`` (:func:`downstream_record` of the first seed) with the ``seeds`` report of several seeds and each
    seed's answers file listed; unchanged for one seed."""
    if len(runs) <= 1:
        return record
    return {**record, "seeds": seed_report(base, runs),
            "files": {**record["files"], "tuned_answers": runs[0].answers,
                      "tuned_answers_by_seed": {str(run.seed): run.answers for run in runs}}}


def sha256_of(url: str) -> str:
    fs, path = fsspec.core.url_to_fs(url)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))


def output_root(run_url: str) -> str:
    """The output root of a run folder: ``<out>`` for ``<out>/runs/<run-id>``; for a run folder elsewhere, the
    folder that holds it (its checks then go beside it all the same)."""
    run_url = run_url.rstrip("/")
    parent = run_url.rpartition("/")[0] if "/" in run_url else "."
    if parent == "runs" or parent.endswith("/runs"):
        parent = parent.removesuffix("runs") or "."
    return parent.rstrip("/") or "/"


@dataclass(frozen=True)
class CheckLocation:
    """One downstream check of a published run: ``<out>/downstream/<run-id>/<check-id>/``."""

    out: str
    run_id: str
    check_id: str
    run_url: str
    run_manifest_sha256: str

    @property
    def root(self) -> str:
        """Every check of the run, and its ``latest.json``."""
        return run_storage.RunLocation(self.out, self.run_id).downstream

    @property
    def folder(self) -> str:
        return f"{self.root}/{self.check_id}"

    @property
    def manifest(self) -> str:
        return f"{self.folder}/{CHECK_MANIFEST}"

    @property
    def latest(self) -> str:
        return f"{self.root}/{run_storage.LATEST}"

    def file(self, name: str) -> str:
        return f"{self.folder}/{name}"


def new_check_id() -> str:
    """Like a run id: time first (so ids sort by start), then random (so two checks never share one)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def start_check(run_url: str, run_id: str, check_id: str | None = None) -> CheckLocation:
    """A new version for a check of the published run at ``run_url``: its folder beside the run, and the
    sha256 of the run manifest it evaluates. A check id already used is refused: a check is never rewritten."""
    run_url = run_url.rstrip("/")
    check = CheckLocation(output_root(run_url), run_id, check_id or new_check_id(), run_url,
                          sha256_of(f"{run_url}/manifest.json"))
    if _exists(check.folder):
        raise UserError(f"downstream check {check.check_id} of run {run_id} already exists at {check.folder}: "
                        f"a check is never written again, start a new one")
    return check


def publish_check(check: CheckLocation, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``report.json``, then the check's ``manifest.json`` (every file of the check with size and sha256,
    the run and the sha256 of the run manifest evaluated), then, last, the run's downstream ``latest.json``.
    Nothing of the published run is written. Returns the check's manifest."""
    if _exists(check.manifest):
        raise UserError(f"downstream check {check.check_id} of run {check.run_id} is already published at "
                        f"{check.folder}: a check is never written again")
    if sha256_of(f"{check.run_url}/manifest.json") != check.run_manifest_sha256:
        raise UserError(f"the manifest of run {check.run_id} changed during the check: a published run must not "
                        f"be written again")
    writers.write_json(record, check.file(REPORT))
    manifest = {"check_id": check.check_id, "run_id": check.run_id, "run_url": check.run_url,
                "run_manifest_sha256": check.run_manifest_sha256,
                "created_at": dt.datetime.now(dt.UTC).isoformat(),
                "files": writers.file_listing(check.folder)}
    data = json.dumps(manifest, ensure_ascii=False, indent=2, default=str).encode()
    writers.write_bytes(data, check.manifest)
    pointer = {"run_id": check.run_id, "check_id": check.check_id, "url": check.folder,
               "manifest_sha256": hashlib.sha256(data).hexdigest(), "created_at": manifest["created_at"]}
    writers.write_json(pointer, check.latest)  # one object, last: whoever follows it finds a whole check
    return manifest


def check_versions(out: str, run_id: str) -> list[dict[str, Any]]:
    """The manifests of every published check of a run under the output root ``out``, oldest first (a check
    that stopped before its manifest is not one)."""
    root = run_storage.RunLocation(out, run_id).downstream
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        return []
    found = fs.glob(f"{path}/*/{CHECK_MANIFEST}")
    manifests = [run_storage.read_json(f"{root}/{found_path[len(path):].strip('/')}") for found_path in found]
    return sorted(manifests, key=lambda m: (str(m.get("created_at", "")), str(m.get("check_id", ""))))


def read_downstream(out: str, run_id: str, check_id: str | None = None) -> dict[str, Any] | None:
    """The figures (``report.json``) of a run's latest downstream check, or of ``check_id``; None when the run
    was never checked. ``out`` is the output root (or the run folder ``<out>/runs/<run-id>``). The report is
    checked against its check's manifest: a difference is a ``UserError``."""
    out = out.rstrip("/")
    if out.endswith(f"/runs/{run_id}"):
        out = output_root(out)
    root = run_storage.RunLocation(out, run_id).downstream
    if check_id is None:
        if not _exists(f"{root}/{run_storage.LATEST}"):
            return None
        folder = f"{root}/{run_storage.read_json(f'{root}/{run_storage.LATEST}')['check_id']}"
    else:
        folder = f"{root}/{check_id}"
        if not _exists(f"{folder}/{CHECK_MANIFEST}"):
            return None
    manifest = run_storage.read_json(f"{folder}/{CHECK_MANIFEST}")
    listed = {f["path"]: f["sha256"] for f in manifest.get("files", [])}
    if listed.get(REPORT) != sha256_of(f"{folder}/{REPORT}"):
        raise UserError(f"{folder}/{REPORT} differs from its manifest: the check's files were changed")
    return run_storage.read_json(f"{folder}/{REPORT}")


def report_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact: base vs tuned accuracy per category (with several seeds, the tuned
    accuracy and the delta are the means across seeds, with their standard deviation)."""
    across = (record.get("seeds") or {}).get("across_seeds") or {}
    rows = []
    for name in record["base"]:
        row = {"category": name, "items": record["base"][name]["items"],
               "base_accuracy": record["base"][name]["accuracy"], "tuned_accuracy": record["tuned"][name]["accuracy"],
               "delta": record["delta_accuracy"][name]}
        if name in across:
            tuned, delta = across[name]["tuned_accuracy"], across[name]["delta"]
            row.update({"tuned_accuracy": tuned["mean"], "delta": delta["mean"], "tuned_sd": tuned["sd"],
                        "seeds": len(record["seeds"]["seeds"])})
        rows.append(row)
    return rows
