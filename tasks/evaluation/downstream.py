"""The downstream check: does a run's dataset make a model better at calling functions?

A base model is fine-tuned on the run's published dataset with a fixed budget (:mod:`tasks.training.fine_tuning`),
then the base and the tuned model are scored on BFCL items the same way (:mod:`tasks.evaluation.bfcl_eval`). The two
figures go into the run's manifest (``downstream``) and ``downstream/`` beside the dataset; the dataset itself
is never touched. Plain functions here; ``flows/downstream_check.py`` composes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, Field, field_validator

from tasks.dialogs.complexity import DEFAULT_TARGET
from tasks.evaluation.bfcl_data import check_categories
from tasks.evaluation.bfcl_eval import CategoryScore, overall
from tasks.storage import run_storage
from toolace.errors import UserError

DOWNSTREAM_FOLDER = "downstream"
TRAINING_FIELDS = ("base", "base_source", "method", "samples_used", "call_turns", "text_turns", "examples",
                   "examples_too_long", "steps", "epochs", "lr", "lora_r", "batch_size", "seed", "device",
                   "compute_dtype", "final_train_loss", "mean_train_loss", "wall_time_s")


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
    models_dir: str | None = Field(None, description="Where tuned models are kept [~/.cache/toolace/downstream]")
    s3_endpoint_url: str | None = None

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        return check_categories(value)

    def budget(self) -> dict[str, Any]:
        return {"base": self.base, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                "lora_r": self.lora_r, "seed": self.seed, "calls_only": self.calls_only}

    def evaluation(self) -> dict[str, Any]:
        return {"categories": self.categories, "limit": self.limit, "max_new_tokens": self.max_new_tokens,
                "mode": "BFCL prompt mode, greedy"}


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
            and record.get("seed") == config.seed and record.get("calls_only") == config.calls_only)
    return record if same else None


def score_summary(scores: list[CategoryScore]) -> dict[str, Any]:
    """Accuracy per category and over all items (micro average)."""
    summary = {s.category: {"items": s.items, "correct": s.correct, "accuracy": round(s.accuracy, 4)}
               for s in scores}
    total = overall(scores)
    summary["overall"] = {"items": total.items, "correct": total.correct, "accuracy": round(total.accuracy, 4)}
    return summary


def downstream_record(config: DownstreamConfig, run_id: str, tuned_dir: Path, training: dict[str, Any],
                      reused: bool, base: list[CategoryScore], tuned: list[CategoryScore]) -> dict[str, Any]:
    """The manifest's ``downstream`` section: budget, evaluation, both scores and the training record."""
    base_summary, tuned_summary = score_summary(base), score_summary(tuned)
    return {
        "run_id": run_id,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(),
        "budget": config.budget(),
        "evaluation": config.evaluation(),
        "base": base_summary,
        "tuned": tuned_summary,
        "delta_accuracy": {name: round(tuned_summary[name]["accuracy"] - base_summary[name]["accuracy"], 4)
                           for name in base_summary},
        "tuned_model": str(tuned_dir),
        "training_reused": reused,
        "training": {k: training.get(k) for k in TRAINING_FIELDS},
        "files": {"base_answers": f"{DOWNSTREAM_FOLDER}/base-answers.jsonl",
                  "tuned_answers": f"{DOWNSTREAM_FOLDER}/tuned-answers.jsonl",
                  "report": f"{DOWNSTREAM_FOLDER}/report.json"},
    }


def _listing_entry(run_url: str, relative: str) -> dict[str, Any]:
    fs, path = fsspec.core.url_to_fs(f"{run_url}/{relative}")
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": relative, "bytes": fs.size(path), "sha256": digest.hexdigest()}


def record_in_manifest(run_url: str, record: dict[str, Any]) -> str:
    """Add ``record`` to the run's manifest as ``downstream`` (an earlier check's section is replaced) and
    list the downstream files in its ``files``; when the output root's ``latest.json`` points at this run,
    its ``manifest_sha256`` follows. Returns the new manifest's sha256."""
    manifest = run_storage.read_json(f"{run_url}/manifest.json")
    manifest["downstream"] = record
    listed = [f for f in manifest.get("files", []) if not str(f.get("path", "")).startswith(f"{DOWNSTREAM_FOLDER}/")]
    manifest["files"] = listed + [_listing_entry(run_url, path) for path in record["files"].values()]
    data = json.dumps(manifest, ensure_ascii=False, indent=2, default=str).encode()
    run_storage.put_bytes(data, f"{run_url}/manifest.json")
    sha = hashlib.sha256(data).hexdigest()
    parent, _, _ = run_url.rpartition("/")
    if parent.endswith("/runs"):
        latest = f"{parent.removesuffix('/runs')}/{run_storage.LATEST}"
        fs, path = fsspec.core.url_to_fs(latest)
        if fs.exists(path):
            pointer = run_storage.read_json(latest)
            if str(pointer.get("url", "")).rstrip("/") == run_url:
                pointer["manifest_sha256"] = sha
                run_storage.put_bytes(json.dumps(pointer, indent=2).encode(), latest)
    return sha


def report_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact: base vs tuned accuracy per category."""
    return [{"category": name, "items": record["base"][name]["items"],
             "base_accuracy": record["base"][name]["accuracy"], "tuned_accuracy": record["tuned"][name]["accuracy"],
             "delta": record["delta_accuracy"][name]} for name in record["base"]]
