"""The downstream check (issue 8): train on a published run's dataset, score base vs tuned on BFCL items the
same way, and record both figures in the run's manifest and as Prefect artifacts. A tiny random model keeps
it fast; the real budget (SmolLM2, 60 steps, 100 items) is measured in docs/benchmarks.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.dataset.rows import openai_row
from tasks.evaluation.bfcl_eval import CategoryScore
from tasks.evaluation.downstream import DownstreamConfig, record_in_manifest, resolve_run, score_summary
from tests.test_dataset_expectations import dialog
from toolace.errors import UserError


def published_run(root: Path, run_id: str = "r1", dialogs: int = 3, status: str = "promoted") -> Path:
    run = root / "runs" / run_id
    (run / "dataset").mkdir(parents=True)
    rows = [openai_row(dialog(f"d{i}", "parallel" if i % 2 else "single")) for i in range(dialogs)]
    (run / "dataset" / "openai.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"run_id": run_id, "status": status, "files": [{"path": "dataset/openai.jsonl", "bytes": 1,
                                                                "sha256": "x"}],
                "dataset": {"dialogs": dialogs, "openai": "dataset/openai.jsonl"}}
    data = json.dumps(manifest).encode()
    (run / "manifest.json").write_bytes(data)
    (root / "latest.json").write_text(json.dumps({"run_id": run_id, "url": str(run),
                                                  "manifest_sha256": hashlib.sha256(data).hexdigest()}))
    return run


def test_run_is_found_from_its_folder_or_the_output_root(tmp_path):
    run = published_run(tmp_path)
    assert resolve_run(str(run))[0] == str(run)
    assert resolve_run(str(tmp_path))[0] == str(run)  # the output root: its latest run
    with pytest.raises(UserError, match="neither a published run folder"):
        resolve_run(str(tmp_path / "nothing"))


def test_a_failed_run_is_refused(tmp_path):
    run = published_run(tmp_path, status="failed")
    with pytest.raises(UserError, match="failed its expectation suite"):
        resolve_run(str(run))


def test_unknown_category_is_refused_with_the_valid_ones():
    with pytest.raises(UserError, match="unknown BFCL category 'simple_rust'.*simple_python"):
        DownstreamConfig(run="x", categories=["simple_rust"])


def test_manifest_gains_the_section_and_the_pointer_follows(tmp_path):
    run = published_run(tmp_path)
    (run / "downstream").mkdir()
    for name in ("base-answers.jsonl", "tuned-answers.jsonl", "report.json"):
        (run / "downstream" / name).write_text("{}\n")
    record = {"base": score_summary([CategoryScore("simple_python", 4, 1)]),
              "files": {"base_answers": "downstream/base-answers.jsonl",
                        "tuned_answers": "downstream/tuned-answers.jsonl", "report": "downstream/report.json"}}
    sha = record_in_manifest(str(run), record)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["downstream"]["base"]["overall"] == {"items": 4, "correct": 1, "accuracy": 0.25}
    assert [f["path"] for f in manifest["files"]] == ["dataset/openai.jsonl", "downstream/base-answers.jsonl",
                                                      "downstream/tuned-answers.jsonl", "downstream/report.json"]
    assert hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest() == sha
    assert json.loads((tmp_path / "latest.json").read_text())["manifest_sha256"] == sha
    record_in_manifest(str(run), record)  # a second check replaces the section, not adds to it
    assert len(json.loads((run / "manifest.json").read_text())["files"]) == 4


@pytest.mark.integration
def test_downstream_flow_trains_scores_and_records(prefect_harness, tiny_base, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.downstream_check import downstream_check

    run = published_run(tmp_path / "out")
    config = DownstreamConfig(run=str(tmp_path / "out"), base=str(tiny_base), steps=2, lr=1e-3, limit=2,
                              max_new_tokens=4, models_dir=str(tmp_path / "models"))
    record = downstream_check(config)
    assert record["budget"]["steps"] == 2 and not record["training_reused"]
    assert record["training"]["steps"] == 2 and record["training"]["examples"] > 0
    for side in ("base", "tuned"):
        assert record[side]["simple_python"]["items"] == 2
        rows = (run / "downstream" / f"{side}-answers.jsonl").read_text().splitlines()
        assert len(rows) == 2 and all("valid" in json.loads(r) for r in rows)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["downstream"]["tuned"] == record["tuned"]
    assert json.loads((run / "downstream" / "report.json").read_text())["base"] == record["base"]
    assert (Path(record["tuned_model"]) / "config.json").is_file()
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"toolace-downstream", "toolace-downstream-summary"} <= keys
    again = downstream_check(config)  # same dataset and budget: the tuned model is reused, not trained again
    assert again["training_reused"] and again["tuned"] == record["tuned"]


def test_cli_reports_a_missing_run_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from toolace.cli import app

    result = CliRunner().invoke(app, ["downstream-check", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "neither a published run folder" in result.output
