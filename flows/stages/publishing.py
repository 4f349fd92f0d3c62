"""Stage 8, publish: the expectation suite, the charts, the card and the manifest (written last: it lists every
other file); then the staging folder is promoted, the ``latest`` pointer written last of all. A dataset that
fails its suite stays in staging, marked failed, and the run ends with :class:`DatasetRejected`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from flows.stages.run_context import RunContext, StageResult
from schemas.records import StageStats
from schemas.suites import SuiteBounds
from tasks.dataset import card as dataset_card
from tasks.dataset import provenance
from tasks.dataset.charts import dialog_type_chart_png, loss_histogram_png, png_data_uri
from tasks.dataset.stream import DatasetTally
from tasks.dialogs.self_guidance import LossBounds
from tasks.storage import run_storage
from tasks.storage.writers import file_listing, write_bytes, write_json
from tasks.verification.expectations import SuiteOutcome, check_records
from toolace.config import redact_url
from toolace.errors import UserError

STAGE = "publish"
STAGES = ("mining", "context_tree", "api_synthesis", "calibration", "dialog_generation", "complexity_loss",
          "verification", "publish")


class DatasetRejected(UserError):
    """The dataset failed its expectation suite: the run is kept in staging, marked failed."""


def publish_run(run: RunContext, stats: dict[str, StageStats], bounds_for_suite: SuiteBounds,
                results: dict[str, StageResult[Any]]) -> dict[str, Any]:
    """Check, describe and promote the run; ``results``: each earlier stage's result by stage module name."""
    config, endpoint, run_id, run_url = run.config, run.endpoint, run.run_id, run.run_url
    dialogs, apis, calibration = results["dialogs"].report, results["api_synthesis"].report, results["calibration"]
    tally: DatasetTally = dialogs["tally"]
    bounds: LossBounds | None = calibration.records[0] if calibration.records else None
    t0 = time.perf_counter()
    dataset_url = f"{run_url}/dataset"
    charts = _charts(run_id, run_url, config.dialog_mix, tally, bounds)
    gate = run.template_gate
    suite = check_records(tally.suite_records, tally.suite_problems,
                          {"generated": tally.generated, "accepted": tally.accepted}, bounds_for_suite,
                          f"{dataset_url}/data_docs", chat_problems=tally.chat_problems,
                          chat_rows=tally.chat_sample.sorted(), templates=gate if gate.active else None)
    write_json(suite.model_dump(mode="json"), f"{dataset_url}/expectations.json")
    stats[STAGE] = StageStats(items_in=tally.accepted, accepted=tally.accepted,
                              wall_time_s=round(time.perf_counter() - t0, 3))
    pooled, pool_counts = results["pooled"].records, apis["pool_counts"]
    manifest = {
        "run_id": run_id,
        "started_at": run.started_at,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "config": config.public_dict(),
        "llm_endpoint": {"base_url": redact_url(endpoint.base_url), "model": endpoint.model,
                         "embedded": endpoint.embedded},
        "packages": provenance.package_versions(),
        "stages": {name: stats[name].model_dump() for name in STAGES},
        "context_tree": results["context_tree"].report["shape"],
        "api_report": apis["api_report"],
        "self_guidance": {"bounds": bounds.model_dump() if bounds else None, "note": calibration.report["note"],
                          "rounds": config.guidance_rounds},
        "api_pool": {"url": config.pool, "apis_before": len(pooled), **pool_counts} if pool_counts else None,
        "verification": dialogs["verification"],
        "tools": tally.tools.report(),
        **({"agentic": dialogs["agentic"]} if dialogs.get("agentic") else {}),
        "loss": tally.loss_summary(),
        "charts": charts,
        "dataset": {"dialogs": tally.accepted, "toolace": "dataset/toolace.jsonl",
                    "openai": "dataset/openai.jsonl",
                    "parquet": [f"dataset/{p}" for p in dialogs["shards"]], "card": "dataset/README.md"},
        "expectations": {"success": suite.success, "failed": suite.failed, "acceptance_rate": suite.acceptance_rate,
                         "results": "dataset/expectations.json",
                         "data_docs": "dataset/data_docs/index.html" if suite.data_docs_index else None},
    }
    card = dataset_card.dataset_card(manifest, tally.types, tally.domains, dialogs["shards"],
                                     templates=suite.chat_templates)
    write_bytes(card.encode(), f"{dataset_url}/README.md")
    manifest["files"] = file_listing(run_url)
    manifest["status"] = "promoted" if suite.success else "failed"
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2, default=str).encode()
    write_bytes(manifest_bytes, f"{run_url}/manifest.json")
    if not suite.success:  # the dataset is not promoted: it stays in staging, marked failed
        marker = run_storage.mark_failed(run.location, {"reason": "expectation suite failed", "failed": suite.failed})
        _report_expectations(run_id, suite, run_url)
        _report(run_id, run_url, stats, tally.accepted, dialogs["verification"])
        raise DatasetRejected(f"run {run_id}: the published-dataset expectation suite failed "
                              f"({', '.join(suite.failed)}); the run stays in {run_url} ({marker}), not promoted")
    pointer = run_storage.promote(run.location, hashlib.sha256(manifest_bytes).hexdigest())
    get_run_logger().info("run %s promoted to %s; %s points at it", run_id, run.location.published,
                          run.location.latest)
    _report_expectations(run_id, suite, run.location.published)
    _report(run_id, run.location.published, stats, tally.accepted, dialogs["verification"])
    return {"run_id": run_id, "run_dir": pointer["url"], "accepted_dialogs": tally.accepted,
            "stages": {name: stats[name].model_dump() for name in STAGES}}


def _report_expectations(run_id: str, suite: SuiteOutcome, run_url: str) -> None:
    """The suite's results as a table artifact and a link to its Data Docs where the run now lives."""
    create_table_artifact(suite.table(), key="toolace-expectations",
                          description=f"Expectation suite results of run {run_id}")
    if suite.data_docs_index:
        index = f"{run_url}/dataset/data_docs/index.html"
        link = index if "://" in index else f"file://{Path(index).resolve()}"
        create_link_artifact(link, link_text="Great Expectations Data Docs", key="toolace-data-docs",
                             description=f"Data Docs of run {run_id}")


def _charts(run_id: str, run_url: str, dialog_mix: dict[str, float], tally: DatasetTally,
            bounds: LossBounds | None) -> dict[str, str]:
    """The dialog-type mix and the loss distribution as PNGs in reports/ and as Prefect image artifacts."""
    types, losses = dict(tally.types), tally.losses
    pngs = {
        "dialog_types": dialog_type_chart_png(types, dialog_mix, f"Dialog types (run {run_id})"),
        "loss": loss_histogram_png(losses, (bounds.lower, bounds.upper) if bounds else None,
                                   f"Complexity loss (run {run_id})"),
    }
    paths = {}
    for name, png in pngs.items():
        paths[name] = f"reports/{name}.png"
        write_bytes(png, f"{run_url}/{paths[name]}")
        create_image_artifact(png_data_uri(png), key=f"toolace-{name.replace('_', '-')}",
                              description=f"{name.replace('_', ' ')} of run {run_id}")
    return paths


def _report(run_id: str, run_url: str, stats: dict[str, StageStats], accepted: int,
            verification_report: dict[str, Any]) -> None:
    """Prefect artifacts for the UI: a stage table, failures per check and a short markdown summary."""
    rows = [{"stage": name, **{k: v for k, v in stats[name].model_dump().items() if k != "rejected_by"},
             "rejected_by": ", ".join(f"{c}={n}" for c, n in stats[name].rejected_by.items())}
            for name in STAGES]
    create_table_artifact(rows, key="toolace-stages", description=f"Stage counts of run {run_id}")
    failures = verification_report["failures_per_check"]
    create_table_artifact([{"check": c, **v} for c, v in failures.items()] or [{"check": "(none)", "dialogs": 0}],
                          key="toolace-verification", description=f"Verification failures per check, run {run_id}")
    lines = "\n".join(f"| `{c}` | {v['layer']} | {v['dialogs']} |" for c, v in failures.items())
    create_markdown_artifact(
        f"# ToolACE run `{run_id}`\n\n**{accepted}** accepted dialogs in `{run_url}/dataset/`.\n\n"
        f"## Verification\n\n{verification_report['dialogs_checked']} dialogs checked: "
        f"{verification_report['rules_passed']} passed the rules, {verification_report['model_judged']} were "
        f"judged by the model layer, {verification_report['passed']} passed both.\n\n"
        f"| check | layer | dialogs failing |\n|---|---|---|\n{lines}\n",
        key="toolace-summary", description="Run summary")


@flow(name="publish", validate_parameters=False, persist_result=False)
def publish_stage(run: RunContext, stats: dict[str, StageStats], bounds_for_suite: SuiteBounds,
                  results: dict[str, StageResult[Any]]) -> dict[str, Any]:
    return publish_run(run, stats, bounds_for_suite, results)
