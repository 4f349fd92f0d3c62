"""`toolace run` end to end with the embedded SmolLM2 model, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from toolace.config import SAMPLE_CORPUS

pytestmark = pytest.mark.embedded

# five documents that describe APIs and one that does not (a poem): a small corpus keeps this test short
DOCS = ["01-skycast-current-conditions-api.md", "02-coinbridge-currency-conversion.md",
        "05-aerotrack-flight-status-api.md", "10-wayfinder-geocoding-api.md", "18-lumaline-bulbs-local-api.md",
        "24-poem-the-orchard-in-october.md"]


def test_toolace_run_with_embedded_model(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in DOCS:
        shutil.copy(Path(SAMPLE_CORPUS) / name, corpus / name)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "PREFECT_API_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    toolace = Path(sys.executable).parent / "toolace"
    result = subprocess.run(
        [str(toolace), "run", "--corpus", str(corpus), "--out", str(out), "--apis", "3", "--dialogs", "3",
         "--run-id", "e2e"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded SmolLM2" in result.stderr  # the user is told the default model is for trying only
    assert "Loading weights" not in result.stderr  # no transformers bar between the run's own progress lines
    # no endpoint: the embedded model's settings fill every option not given (--apis and --dialogs are), in one line
    (note,) = [line for line in result.stderr.splitlines() if "the embedded model's settings apply" in line]
    assert "decision_samples 1" in note and "apis" not in note and "dialogs" not in note.replace("dialog_mix", "")
    run_dir = out / "runs" / "e2e"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["llm_endpoint"]["embedded"] is True
    config = manifest["config"]
    assert (config["apis"], config["dialogs"], config["decision_samples"], config["guidance_rounds"],
            config["model_checks"]) == (3, 3, 1, 0, False)
    assert manifest["stages"]["mining"]["items_in"] == len(DOCS)
    assert manifest["stages"]["mining"]["llm_requests"] > 0
    rows = [json.loads(line) for line in (run_dir / "dataset" / "toolace.jsonl").read_text().splitlines()]
    openai_rows = (run_dir / "dataset" / "openai.jsonl").read_text().splitlines()
    assert len(rows) == len(openai_rows) == manifest["dataset"]["dialogs"] >= 1
    for row in rows:
        loss = row["meta"]["complexity_loss"]
        assert isinstance(loss, float) and loss > 0  # the SmolLM2 target model scored it
    assert f"{manifest['dataset']['dialogs']} accepted dialogs" in result.stdout + result.stderr
    # the embedded server was stopped with the run: nothing listens on its port any more
    port = urlsplit(manifest["llm_endpoint"]["base_url"]).port
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
