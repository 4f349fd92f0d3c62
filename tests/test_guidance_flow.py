"""Self-guided dialog generation through the real flow: a target model's loss (a tiny random Llama with
SmolLM2's tokenizer, so the flow's logic is tested in seconds; the real SmolLM2 target is run by the
embedded end-to-end test and the complexity tests), calibrated and fixed bounds, rewrite rounds recorded per
dialog, every dialog type in the mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.toolace_pipeline import toolace_pipeline
from toolace.config import SAMPLE_CORPUS, RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for path in sorted(Path(SAMPLE_CORPUS).iterdir())[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def run_flow(llm: Any, tmp_path: Path, run_id: str, **overrides: Any) -> tuple[dict[str, Any], Path]:
    # the tiny target model has SmolLM2's template, which renders no tools: a target chosen by the user must
    # render them (tests/test_chat_templates.py), so the template check is off for these loss tests
    values: dict[str, Any] = {"apis": 4, "dialogs": 4, "batch_size": 4, "template_check_rows": 0, **overrides}
    config = RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(tmp_path / "out"),
                       corpus=str(corpus(tmp_path)), run_id=run_id, **values)
    summary = toolace_pipeline(config)
    return summary, tmp_path / "out" / "runs" / run_id


def test_fixed_bounds_drive_rewrites_recorded_per_round(llm, tmp_path, tiny_base):
    # bounds no dialog can meet: every dialog is "too hard" and rewritten for the two allowed rounds
    summary, run_dir = run_flow(llm, tmp_path, "fixed", target_model=str(tiny_base), loss_bounds=(0.0, 0.001),
                                guidance_rounds=2,
                                dialog_mix={"single": 1.0})
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["self_guidance"]["bounds"]["source"] == "fixed"
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet").filter(pl.col("status") == "accepted")
    assert dialogs.height == summary["accepted_dialogs"] == 4
    for row in dialogs.to_dicts():
        guidance = json.loads(row["guidance"])
        assert [r["round"] for r in guidance["rounds"]] == [0, 1, 2]
        assert guidance["rounds"][1]["change"] and "simpl" in guidance["rounds"][1]["change"].lower()
        assert guidance["final_verdict"] == "too_hard"
        losses = json.loads(row["losses"])
        assert len(losses) == 3 and all(isinstance(v, float) and v > 0 for v in losses)
        assert row["guidance_rounds"] == 2 and row["complexity_loss"] == losses[-1]
    rewrites = [r for r in llm.requests if "Also: " in str(r["messages"])]
    assert rewrites  # the user agent received the guidance instruction
    assert manifest["stages"]["complexity_loss"]["items_in"] >= 12  # 4 dialogs x 3 rounds scored


def test_out_of_band_dialogs_can_be_rejected(llm, tmp_path, tiny_base):
    from flows.toolace_pipeline import DatasetRejected

    with pytest.raises(DatasetRejected, match="gx_row_count_v1"):  # nothing left to publish: not promoted
        run_flow(llm, tmp_path, "strict", target_model=str(tiny_base), loss_bounds=(0.0, 0.001), guidance_rounds=1,
                 dialog_mix={"single": 1.0}, keep_out_of_band=False, dialogs=2, mix_shortfall="warn")
    run_dir = tmp_path / "out" / "staging" / "strict"
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    assert dialogs.filter(pl.col("status") == "accepted").height == 0
    assert (dialogs.filter(pl.col("status") == "rejected")["rejected_by"] == "complexity_bounds_v1").any()


def test_calibrated_bounds_from_a_probe_set(llm, tmp_path, tiny_base):
    summary, run_dir = run_flow(llm, tmp_path, "calibrated", target_model=str(tiny_base), probe_size=4,
                                guidance_rounds=1, mix_tolerance=1.0,  # (the scripted model makes no parallel call)
                                dialog_mix={"single": 1.0, "parallel": 1.0, "non_tool": 1.0})
    manifest = json.loads((run_dir / "manifest.json").read_text())
    guidance = manifest["self_guidance"]
    assert guidance["bounds"] is not None, guidance["note"]
    assert guidance["bounds"]["source"] == "calibrated" and guidance["bounds"]["probe_size"] == 4
    probes = pl.read_parquet(run_dir / "tables" / "probes.parquet")
    assert probes.height == 4 and set(probes.columns) >= {"loss", "answer", "correct", "error_type", "category"}
    assert manifest["stages"]["calibration"]["items_in"] == 4
    assert summary["accepted_dialogs"] == 4


def test_every_dialog_type_in_the_mix(llm, tmp_path):
    mix = {"single": 1, "parallel": 1, "dependent": 1, "non_tool": 1, "clarification": 1, "multi_turn": 1}
    # (the fallbacks below make "single" more frequent than asked: the mix check is loosened here)
    summary, run_dir = run_flow(llm, tmp_path, "mix", target_model=None, dialogs=12, apis=6, dialog_mix=mix,
                                batch_size=12, decision_samples=2, mix_tolerance=1.0)
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    generated = set(dialogs["dialog_type"].to_list())
    # (a clarification or dependent plan falls back to a single call when no API allows it)
    assert {"single", "parallel", "non_tool", "multi_turn"} <= generated and len(generated) >= 4
    for row in dialogs.to_dicts():
        assert row["status"] in ("accepted", "rejected")
        assert row["status"] == "accepted" or row["rejected_by"]
        assert row["decision_samples"] == 2
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["self_guidance"]["note"].startswith("off")
