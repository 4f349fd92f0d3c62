"""Secrets stay secret: an API key and S3 credentials set to marker values appear in no log line, Prefect
artifact, manifest, table, dataset file, response-cache file or stored flow-run parameter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from flows.toolace_pipeline import cache_dir_for, toolace_pipeline
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")

API_KEY = "sk-MARKER-api-key-7f3a9c"
S3_SECRET = "MARKER-s3-secret-51d2e8"
S3_KEY_ID = "AKIAMARKERKEYID0042"


def test_no_secret_reaches_any_output(llm, s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
                                      mixed_corpus: str) -> None:
    import s3fs
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a fresh LLM response cache: every request is sent
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("secret-bucket")
    caplog.set_level(logging.DEBUG)
    config = RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out="s3://secret-bucket/toolace",
                       apis=3, dialogs=3, target_model=None, run_id="secret-run", batch_size=4,
                       s3_endpoint_url=s3_server, corpus=mixed_corpus)
    summary = toolace_pipeline(config)
    assert summary["accepted_dialogs"] == 3
    assert llm.requests  # the run really talked to the server (with the key in its Authorization header)
    markers = (API_KEY, S3_SECRET, S3_KEY_ID)

    def clean(text: str, where: str) -> None:
        for marker in markers:
            assert marker not in text, f"{marker} found in {where}"

    stored = fs.find("secret-bucket")
    assert any(p.endswith("manifest.json") for p in stored)
    for path in stored:
        clean(fs.cat(path).decode("utf-8", errors="replace"), path)
    cache = Path(cache_dir_for(config.out))  # the LLM response cache (local disk for an s3:// run)
    for path in cache.rglob("*") if cache.exists() else []:
        if path.is_file() and path.stat().st_size < 5_000_000:
            clean(path.read_text(errors="replace"), str(path))
    # every log line, debug included, is free of the API key and the S3 secret key; the access key id (an
    # identifier, not a secret: boto's own DEBUG lines print it in the signed Authorization header) is
    # absent from every line at the levels the platform logs (INFO and up)
    clean("\n".join(r.getMessage() for r in caplog.records).replace(S3_KEY_ID, ""), "log records")
    clean("\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO), "log records (INFO+)")
    out, err = capfd.readouterr()
    clean((out + err).replace(S3_KEY_ID, "") if "botocore" in out + err else out + err, "stdout/stderr")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        assert artifacts
        clean(json.dumps([a.model_dump(mode="json") for a in artifacts]), "Prefect artifacts")
        runs = client.read_flow_runs(limit=5, sort="START_TIME_DESC")
        clean(json.dumps([r.parameters for r in runs], default=str), "flow-run parameters")
        logs = client.read_logs()
        clean("\n".join(entry.message for entry in logs), "Prefect logs")
    s3fs.S3FileSystem.clear_instance_cache()
