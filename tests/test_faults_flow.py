"""The main flow against a server that fails 20% of requests in every way it can: the run completes and
every document, API and dialog ends accepted or rejected with a reason; the counts add up exactly."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows.toolace_pipeline import toolace_pipeline
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")

FAULTS = {"rate_limit": 0.04, "server_error": 0.04, "timeout": 0.02, "drop": 0.04, "truncated_json": 0.03,
          "schema_violation": 0.03, "latency": 0.05}


def test_flow_survives_twenty_percent_faults(llm, tmp_path: Path) -> None:
    failing = sum(v for k, v in FAULTS.items() if k != "latency")
    assert abs(failing - 0.2) < 1e-9
    llm.set_fault_rates(FAULTS, seed=3, timeout_s=2.0, latency_s=0.2)
    config = RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(tmp_path), apis=4,
                       dialogs=5, target_model=None, run_id="faulty", batch_size=4, llm_timeout_s=1.0,
                       mix_tolerance=1.0)  # faults reject some dialog types more than others
    summary = toolace_pipeline(config)
    assert summary["accepted_dialogs"] >= 1
    assert sum(llm.faults_injected[k] for k in FAULTS if k != "latency") > 10  # the faults really happened
    run = tmp_path / "runs" / "faulty"
    manifest = json.loads((run / "manifest.json").read_text())
    for name, stage in manifest["stages"].items():
        assert stage["items_in"] == stage["accepted"] + stage["rejected"], name
        assert sum(stage["rejected_by"].values()) == stage["rejected"], name
    assert manifest["stages"]["dialog_generation"]["retries"] + manifest["stages"]["mining"]["retries"] > 0
    documents = pl.read_parquet(run / "tables" / "documents.parquet")
    apis = pl.read_parquet(run / "tables" / "apis.parquet")
    dialogs = pl.read_parquet(run / "tables" / "dialogs.parquet")
    corpus_files = manifest["stages"]["mining"]["items_in"]
    assert documents.height == corpus_files
    assert apis.height == manifest["stages"]["api_synthesis"]["items_in"]
    assert dialogs.height == manifest["stages"]["dialog_generation"]["items_in"]
    for table in (documents, apis, dialogs):
        assert set(table["status"]) <= {"accepted", "rejected"}
        rejected = table.filter(pl.col("status") == "rejected")
        assert rejected["rejected_by"].null_count() == 0 and rejected["reason"].null_count() == 0
    accepted = dialogs.filter(pl.col("status") == "accepted")
    assert accepted.height == summary["accepted_dialogs"]
    assert len((run / "dataset" / "toolace.jsonl").read_text().splitlines()) == accepted.height
