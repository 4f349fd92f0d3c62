"""The downstream check (issue 8): train on a published run's dataset, score base vs tuned on BFCL items the
same way, and record both figures as Prefect artifacts and as a new version beside the run (issue 20:
``<out>/downstream/<run-id>/<check-id>/`` with a manifest of its own; the published run and ``latest.json`` stay
byte for byte). A tiny random model keeps it fast; the real budget (SmolLM2, 60 steps, 100 items) is measured in
docs/benchmarks.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.dataset.rows import openai_row
from tasks.evaluation.bfcl_eval import CategoryScore
from tasks.evaluation.downstream import (
    DownstreamConfig,
    check_versions,
    downstream_record,
    publish_check,
    read_downstream,
    resolve_run,
    start_check,
)
from tasks.storage import writers
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


def snapshot(out: Path) -> dict[str, bytes]:
    """Every byte of the published runs and the output root's latest.json."""
    files = sorted((out / "runs").rglob("*")) + [out / "latest.json"]
    return {str(f.relative_to(out)): f.read_bytes() for f in files if f.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_check(run: Path, base_correct: int = 1, tuned_correct: int = 3) -> dict:
    """One check as the flow makes it, without training or a model: answers written, figures recorded."""
    check = start_check(str(run), run.name)
    for side in ("base", "tuned"):
        writers.write_jsonl([{"id": f"simple_python_{i}", "valid": True} for i in range(4)],
                            check.file(f"{side}-answers.jsonl"))
    record = downstream_record(DownstreamConfig(run=str(run)), check, run / "tuned", {"steps": 60}, False,
                               [CategoryScore("simple_python", 4, base_correct)],
                               [CategoryScore("simple_python", 4, tuned_correct)])
    publish_check(check, record)
    return record


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


def test_a_check_is_written_beside_the_published_run_which_stays_byte_for_byte(tmp_path):
    run = published_run(tmp_path)
    before = snapshot(tmp_path)
    record = fake_check(run)
    assert snapshot(tmp_path) == before  # runs/r1/ (manifest.json included) and latest.json: not one byte changed
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == \
        ["dataset/openai.jsonl", "manifest.json"]
    folder = tmp_path / "downstream" / "r1" / record["check_id"]
    assert record["results"] == str(folder)
    assert record["run_manifest_sha256"] == sha256(run / "manifest.json")
    assert record["tuned"]["overall"] == {"items": 4, "correct": 3, "accuracy": 0.75}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["run_id"] == "r1" and manifest["check_id"] == record["check_id"]
    assert manifest["run_url"] == str(run) and manifest["created_at"]
    assert manifest["run_manifest_sha256"] == json.loads((tmp_path / "latest.json").read_text())["manifest_sha256"]
    assert [(f["path"], f["sha256"], f["bytes"]) for f in manifest["files"]] == \
        [(name, sha256(folder / name), (folder / name).stat().st_size)
         for name in ("base-answers.jsonl", "report.json", "tuned-answers.jsonl")]
    assert json.loads((folder / "report.json").read_text()) == record
    pointer = json.loads((tmp_path / "downstream" / "r1" / "latest.json").read_text())
    assert pointer["check_id"] == record["check_id"]
    assert pointer["manifest_sha256"] == sha256(folder / "manifest.json")
    assert read_downstream(str(tmp_path), "r1") == record
    assert read_downstream(str(run), "r1") == record  # the run folder works as well as the output root


def test_two_checks_are_two_versions_and_none_is_written_again(tmp_path):
    run = published_run(tmp_path)
    assert read_downstream(str(tmp_path), "r1") is None and check_versions(str(tmp_path), "r1") == []
    before = snapshot(tmp_path)
    first, second = fake_check(run, tuned_correct=2), fake_check(run, tuned_correct=4)
    assert snapshot(tmp_path) == before
    assert first["check_id"] != second["check_id"]
    versions = check_versions(str(tmp_path), "r1")
    assert [v["check_id"] for v in versions] == [first["check_id"], second["check_id"]]
    first_files = {p: p.read_bytes() for p in (tmp_path / "downstream" / "r1" / first["check_id"]).iterdir()}
    assert read_downstream(str(tmp_path), "r1") == second  # the latest check
    assert read_downstream(str(tmp_path), "r1", first["check_id"]) == first  # an earlier one, still whole
    assert {p: p.read_bytes() for p in first_files} == first_files
    with pytest.raises(UserError, match="never written again"):  # the same check id: refused, not overwritten
        start_check(str(run), "r1", check_id=first["check_id"])
    again = start_check(str(run), "r1", check_id="c1")
    publish_check(again, {"run_id": "r1"})
    with pytest.raises(UserError, match="already published"):
        publish_check(again, {"run_id": "r1", "other": True})
    assert read_downstream(str(tmp_path), "r1", "c1") == {"run_id": "r1"}


def test_a_changed_report_is_refused(tmp_path):
    run = published_run(tmp_path)
    record = fake_check(run)
    (tmp_path / "downstream" / "r1" / record["check_id"] / "report.json").write_text("{}")
    with pytest.raises(UserError, match="differs from its manifest"):
        read_downstream(str(tmp_path), "r1")


@pytest.mark.integration
def test_downstream_flow_trains_scores_and_records(prefect_harness, tiny_base, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.downstream_check import downstream_check

    out = tmp_path / "out"
    run = published_run(out)
    before = snapshot(out)
    config = DownstreamConfig(run=str(tmp_path / "out"), base=str(tiny_base), steps=2, lr=1e-3, limit=2,
                              max_new_tokens=4, models_dir=str(tmp_path / "models"))
    record = downstream_check(config)
    assert record["budget"]["steps"] == 2 and not record["training_reused"]
    assert record["training"]["steps"] == 2 and record["training"]["examples"] > 0
    folder = out / "downstream" / "r1" / record["check_id"]
    for side in ("base", "tuned"):
        assert record[side]["simple_python"]["items"] == 2
        rows = (folder / f"{side}-answers.jsonl").read_text().splitlines()
        assert len(rows) == 2 and all("valid" in json.loads(r) for r in rows)
    assert snapshot(out) == before  # the published run and latest.json: untouched
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == \
        {name: sha256(folder / name) for name in ("base-answers.jsonl", "report.json", "tuned-answers.jsonl")}
    assert manifest["run_manifest_sha256"] == sha256(run / "manifest.json")
    assert read_downstream(str(out), "r1") == record
    assert (Path(record["tuned_model"]) / "config.json").is_file()
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"toolace-downstream", "toolace-downstream-summary"} <= keys
    again = downstream_check(config)  # same dataset and budget: the tuned model is reused, not trained again
    assert again["training_reused"] and again["tuned"] == record["tuned"]
    assert [v["check_id"] for v in check_versions(str(out), "r1")] == [record["check_id"], again["check_id"]]
    assert read_downstream(str(out), "r1") == again and snapshot(out) == before


def test_cli_reports_a_missing_run_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from toolace.cli import app

    result = CliRunner().invoke(app, ["downstream-check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "neither a published run folder" in result.output


# ------------------------------------------------------------------------------------ function-calling mode


def test_fc_mode_budget_and_refusals(tiny_base, tmp_path):
    from tasks.evaluation.bfcl_fc import FcModeError
    from tasks.evaluation.downstream import check_fc_base

    prompt = DownstreamConfig(run="r")
    assert "format" not in prompt.budget() and prompt.train_format == "toolace"  # prompt budgets keep their key
    fc = DownstreamConfig(run="r", mode="fc", chat_template="qwen2.5")
    assert fc.budget()["format"] == "native" and fc.budget()["chat_template"] == "qwen2.5"
    assert "function-calling" in fc.evaluation()["mode"]
    with pytest.raises(ValueError, match="--chat-template goes with --mode fc"):
        DownstreamConfig(run="r", chat_template="qwen2.5")
    with pytest.raises(FcModeError, match="does not show the offered tools"):  # SmolLM2's template: no tools
        check_fc_base(DownstreamConfig(run="r", base=str(tiny_base), mode="fc"))
    check_fc_base(DownstreamConfig(run="r", base=str(tiny_base), mode="fc", chat_template="qwen2.5"))


def test_cli_fc_mode_refuses_before_training(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from toolace.cli import app

    published_run(tmp_path / "out")
    models = tmp_path / "models"
    result = CliRunner().invoke(app, ["downstream-check", str(tmp_path / "out"), "--base", str(tiny_base),
                                      "--mode", "fc", "--models-dir", str(models)])
    assert result.exit_code == 1 and "does not show the offered tools" in result.output
    result = CliRunner().invoke(app, ["downstream-check", str(tmp_path / "out"), "--chat-template", "qwen2.5"])
    assert result.exit_code == 1 and "--chat-template goes with --mode fc" in result.output
    assert not models.exists()


@pytest.mark.integration
def test_downstream_flow_in_fc_mode_trains_native_and_scores_both_through_the_template(prefect_harness, tiny_base,
                                                                                      tmp_path):
    """--mode fc: the tuned model learns Qwen2.5's format (its template put on SmolLM2's tokenizer), the base is
    asked through the same template, both served by the embedded llama.cpp server and read as Hermes calls."""
    from flows.downstream_check import downstream_check

    out = tmp_path / "out"
    published_run(out)
    config = DownstreamConfig(run=str(out), base=str(tiny_base), steps=2, lr=1e-3, limit=2, max_new_tokens=4,
                              models_dir=str(tmp_path / "models"), mode="fc", chat_template="qwen2.5", slots=1)
    record = downstream_check(config)
    assert record["evaluation"]["mode"] == "BFCL function-calling mode, greedy"
    assert record["training"]["format"] == "native" and record["training"]["chat_template"] == "qwen2.5"
    assert record["budget"]["format"] == "native"
    folder = out / "downstream" / "r1" / record["check_id"]
    for side in ("base", "tuned"):
        rows = [json.loads(r) for r in (folder / f"{side}-answers.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all("hermes calls" in r["model"] and "llama.cpp" in r["model"] for r in rows)
    base_rows = (folder / "base-answers.jsonl").read_text()
    assert "qwen2.5 chat template" in base_rows  # the base is asked through the family's template
