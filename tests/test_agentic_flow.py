"""``agentic_multi_turn`` in a real run: the dialogs stage makes the mix's agentic share first (environments,
blueprints and trajectories executed in the sandbox), then verifies, scores and publishes them like every dialog,
in every output format, with the environment in ``meta`` and the counts in the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.stages.dialogs import MixShortfall
from flows.toolace_pipeline import toolace_pipeline
from tasks.environments.library_example import library_apis
from tests.agentic_library_script import library_rule
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")


def library_pool(tmp_path: Path) -> str:
    """The library APIs as an API pool the run starts from (their own domain: one family)."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(a.model_dump(mode="json")) + "\n" for a in library_apis()))
    return str(pool)


def config(llm: Any, tmp_path: Path, corpus: str, **more: Any) -> RunConfig:
    # the scripted library model plays every agentic role (its assistant answers the library goals only), so the
    # mix is all agentic here; how the other types share a run is the planner's (tests/test_mix_quotas.py)
    return RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(tmp_path / "out"),
                     run_id="agentic", apis=2, dialogs=3, batch_size=4, target_model=None, corpus=corpus,
                     template_check_rows=0, pool=library_pool(tmp_path), dialog_mix={"agentic_multi_turn": 1.0},
                     **more)


def test_agentic_dialogs_are_made_verified_and_published_in_every_format(llm, tmp_path, mixed_corpus):
    llm.script(library_rule)
    summary = toolace_pipeline(config(llm, tmp_path, mixed_corpus))
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "dataset" / "toolace.jsonl").read_text().splitlines()]
    agentic = [r for r in rows if r["meta"]["dialog_type"] == "agentic_multi_turn"]
    assert len(agentic) == len(rows) == 3
    for row in agentic:
        meta = row["meta"]
        assert meta["env_id"] and meta["initial_state"] and meta["ground_truth_actions"]
        assert "final_state_diff" in meta
        calls = [t for t in row["conversations"] if t["from"] == "assistant" and "(" in t["value"]]
        assert calls  # the calls the environment executed are in the published conversation
    ids = {r["id"] for r in agentic}
    openai_rows = [json.loads(line) for line in (run_dir / "dataset" / "openai.jsonl").read_text().splitlines()]
    assert len(openai_rows) == 3
    manifest = json.loads((run_dir / "manifest.json").read_text())
    shard = pl.concat([pl.from_arrow(pq.read_table(run_dir / p)) for p in manifest["dataset"]["parquet"]])
    assert set(shard.filter(pl.col("dialog_type") == "agentic_multi_turn")["id"]) == ids  # trainer-ready shards
    row = shard.filter(pl.col("id") == sorted(ids)[0]).row(0, named=True)
    messages = [json.loads(m) if isinstance(m, str) else m for m in row["messages"]]
    assert any(m["role"] == "tool" for m in messages)  # the executed results, as the model will see them
    counts = manifest["agentic"]
    assert counts["trajectories_accepted"] >= 3 and counts["blueprints_executed"] >= counts["blueprints_accepted"]
    assert counts["environments_accepted"] >= 1 and counts["executions"] > 0
    assert manifest["expectations"]["success"]
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    assert dialogs.filter(pl.col("dialog_type") == "agentic_multi_turn")["status"].to_list().count("accepted") == 3


def test_an_agentic_share_the_model_cannot_make_stops_the_run_naming_it(llm, tmp_path, mixed_corpus):
    # no environment the scripted model proposes validates: the share cannot be made, said at once
    llm.script(lambda body: {"json": {"bad": True}} if "EnvironmentProposal" in json.dumps(body.get(
        "response_format") or {}) else None)
    with pytest.raises(MixShortfall, match=r"^run agentic: dialog type agentic_multi_turn cannot reach its share "
                                           r"of the mix: 0 of 3 accepted"):
        toolace_pipeline(config(llm, tmp_path, mixed_corpus))
