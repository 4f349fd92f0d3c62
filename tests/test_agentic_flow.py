"""``agentic_multi_turn`` in a real run: the dialogs stage makes the mix's agentic share first (environments,
blueprints and trajectories executed in the sandbox), then scores them with a target model, steers their loss
(replacement blueprints proposed with guidance, here under fixed bounds no dialog meets), verifies and publishes them
like every dialog, in every output format, with the environment in ``meta`` and the counts in the manifest. One run
(a module fixture) serves both the publishing and the steering test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.stages.dialogs import MixShortfall
from flows.toolace_pipeline import toolace_pipeline
from tasks.dialogs.self_guidance import OUT_OF_BAND_CHECK
from tasks.environments.agentic_guidance import GUIDANCE_REPEAT_CHECK
from tasks.environments.library_example import library_apis
from tests.agentic_library_script import SIMPLER_TASKS, TASKS, guided_library_rule, library_rule
from tests.scripted_llm_server import last_user_text, schema_name
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
    values: dict[str, Any] = {"apis": 2, "dialogs": 3, "batch_size": 4, "target_model": None, "template_check_rows": 0,
                              "dialog_mix": {"agentic_multi_turn": 1.0}, **more}
    return RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(tmp_path / "out"),
                     run_id="agentic", corpus=corpus, pool=library_pool(tmp_path), **values)


@pytest.fixture(scope="module")
def steered_run(prefect_harness, scripted_server, tmp_path_factory, mixed_corpus, tiny_base) -> dict[str, Any]:
    """One run of three agentic dialogs, scored by the tiny target model under bounds no dialog meets (every one
    too hard), with one guidance round: the scripted blueprint writer answers the guided prompts with a simpler task
    for the checkout and the return task and with the same task for the lookup (rejected as a repeat). Its run
    folder and the requests the server received."""
    from tests.conftest import judges_pass

    scripted_server.reset()
    for rule in (judges_pass, library_rule, guided_library_rule):  # the last added is tried first
        scripted_server.script(rule)
    try:
        summary = toolace_pipeline(config(scripted_server, tmp_path_factory.mktemp("steered"), mixed_corpus,
                                          target_model=str(tiny_base), loss_bounds=(0.0, 0.001), guidance_rounds=1))
        return {"run_dir": Path(summary["run_dir"]), "requests": scripted_server.requests}
    finally:
        scripted_server.reset()


def test_agentic_dialogs_are_made_verified_and_published_in_every_format(steered_run):
    run_dir = steered_run["run_dir"]
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


def test_an_out_of_band_agentic_dialog_is_replaced_by_a_guided_blueprint_and_the_rounds_are_recorded(steered_run):
    run_dir, requests = steered_run["run_dir"], steered_run["requests"]
    guided = [last_user_text(r) for r in requests if schema_name(r) == "BlueprintProposal"
              and "too hard for the target model" in last_user_text(r)]
    assert len(guided) == 3  # one replacement asked for per dialog, each naming the task it replaces
    assert all("Write a simpler task instead" in text and "a single action" in text for text in guided)
    assert {g for g in (t[0]["user_goal"] for t in TASKS.values()) if any(g in text for text in guided)} == \
        {t[0]["user_goal"] for t in TASKS.values()}

    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    accepted = dialogs.filter(pl.col("status") == "accepted")
    published = [json.loads(line) for line in (run_dir / "dataset" / "toolace.jsonl").read_text().splitlines()]
    assert sorted(r["meta"]["user_goal"] for r in published) == sorted(
        [t["user_goal"] for t in SIMPLER_TASKS.values() if t is not None] + [TASKS[2][0]["user_goal"]])
    assert sorted(r["id"] for r in published) == sorted(accepted["dialog_id"])
    for row in accepted.to_dicts():  # every kept version: its first version's loss and the round's, recorded
        guidance = json.loads(row["guidance"])
        assert [r["round"] for r in guidance["rounds"]] == [0, 1] and guidance["final_verdict"] == "too_hard"
        assert guidance["rounds"][1]["change"].startswith("The last task for this environment was: ")
        assert row["guidance_rounds"] == 1 and len(json.loads(row["losses"])) == 2
    replaced = dialogs.filter(pl.col("status") == "rejected")
    assert replaced.height == 2 and set(replaced["rejected_by"]) == {OUT_OF_BAND_CHECK}
    assert all(" too_hard (bounds 0.000-0.001): replaced by guided dialog " in r for r in replaced["reason"])
    repeated = [json.loads(r["guidance"]) for r in accepted.to_dicts()
                if "rejected" in json.loads(r["guidance"])["rounds"][1]["verdict"]]
    assert [g["rounds"][1]["verdict"] for g in repeated] == [
        f"rejected ({GUIDANCE_REPEAT_CHECK}): previous version kept"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    figures = manifest["agentic"]["guidance"]
    assert figures["rounds"] == [{"round": 1, "out_of_band": 3, "too_easy": 0, "too_hard": 3, "replaced": 2,
                                  "moved_into_band": 0, "failed": 1, "failed_by": {GUIDANCE_REPEAT_CHECK: 1}}]
    assert figures["first_verdicts"] == figures["final_verdicts"] == {"too_hard": 3}
    assert (figures["replaced"], figures["rewrites"], figures["rejected_out_of_band"]) == (2, 3, 0)
    counts = manifest["agentic"]  # the guided round's work joins the counts
    assert (counts["blueprints_proposed"], counts["blueprints_executed"], counts["trajectories_accepted"]) == (6, 5, 5)
    assert counts["rejected_by"] == {GUIDANCE_REPEAT_CHECK: 1}
    assert manifest["stages"]["complexity_loss"]["items_in"] == 5  # 3 first versions + 2 replacements scored
    assert manifest["stages"]["dialog_generation"]["items_in"] == 5


def test_an_agentic_share_the_model_cannot_make_stops_the_run_naming_it(llm, tmp_path, mixed_corpus):
    # no environment the scripted model proposes validates: the share cannot be made, said at once
    llm.script(lambda body: {"json": {"bad": True}} if "EnvironmentProposal" in json.dumps(body.get(
        "response_format") or {}) else None)
    with pytest.raises(MixShortfall, match=r"^run agentic: dialog type agentic_multi_turn cannot reach its share "
                                           r"of the mix: 0 of 3 accepted"):
        toolace_pipeline(config(llm, tmp_path, mixed_corpus))
