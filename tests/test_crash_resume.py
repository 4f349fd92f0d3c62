"""Crash and resume: `toolace run` is killed with SIGKILL in the middle of dialog generation and rerun with
the same --run-id. The final dataset has no duplicate and no missing sample, and no LLM request whose answer
had been received (kept in the response cache) is sent again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.scripted_llm_server import ScriptedLLMServer
from tests.test_deployment_e2e import DOCS, mining_answers
from toolace.config import SAMPLE_CORPUS
from toolace.llm.response_cache import request_key

DIALOGS = 8


def is_dialog_request(body: dict[str, Any]) -> bool:
    text = json.dumps(body.get("messages", []))
    return body.get("tool_choice") == "required" or "You simulate an API server" in text


def command(corpus: Path, out: Path, base_url: str) -> list[str]:
    return [str(Path(sys.executable).parent / "toolace"), "run", "--corpus", str(corpus), "--out", str(out),
            "--apis", "3", "--dialogs", str(DIALOGS), "--run-id", "crash", "--llm-base-url", base_url,
            "--llm-model", "scripted-model", "--target-model", "none", "--concurrency", "2"]


def environment(tmp_path: Path) -> dict[str, str]:
    """The runs report to the session's Prefect server (a temporary one per run would add ~15 s each)."""
    from prefect.settings import get_current_settings

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["HOME"] = str(tmp_path / "home")
    api_url = get_current_settings().api.url
    assert api_url, "the session's Prefect harness is not running"
    env["PREFECT_API_URL"] = str(api_url)
    return env


def cached_keys(out: Path) -> set[str]:
    return {p.stem for p in (out / "cache" / "llm").rglob("*.json")}


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_sigkill_during_dialogs_then_resume(llm: ScriptedLLMServer, tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    for name in DOCS:
        shutil.copy(Path(SAMPLE_CORPUS) / name, corpus / name)
    llm.script(mining_answers)
    llm.set_fault_rates({"latency": 1.0}, latency_s=0.25)  # slow enough to be caught mid-stage
    env = environment(tmp_path)
    first = subprocess.Popen(command(corpus, out, llm.base_url), env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while sum(is_dialog_request(b) for b in llm.requests) < 6:
            assert first.poll() is None, first.stderr.read().decode()[-2000:] if first.stderr else ""
            assert time.monotonic() < deadline, "dialog generation never started"
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    answered = cached_keys(out)  # every answer the killed run had received
    first_requests = llm.requests
    assert any(is_dialog_request(b) and request_key(b) in answered for b in first_requests)
    assert not (out / "runs" / "crash").exists()  # nothing half-written was promoted
    llm.clear_requests()
    llm.set_fault_rates(None)  # the rerun is not to be caught: no need to slow it down
    second = subprocess.run(command(corpus, out, llm.base_url), env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    resent = [b for b in llm.requests if request_key(b) in answered]
    assert resent == [], f"{len(resent)} requests answered before the crash were sent again"
    run = out / "runs" / "crash"
    rows = [json.loads(line) for line in (run / "dataset" / "toolace.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == DIALOGS
    dialogs = pl.read_parquet(run / "tables" / "dialogs.parquet")
    assert dialogs["dialog_id"].is_unique().all()
    assert set(ids) == set(dialogs.filter(pl.col("status") == "accepted")["dialog_id"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["mining"]["reused"] == len(DOCS)  # the mining ledger kept the first run's work
