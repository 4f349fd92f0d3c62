"""The main flow end to end under the Prefect harness, against the scripted server over real HTTP."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.toolace_pipeline import STAGES, DatasetRejected, toolace_pipeline
from tasks.verification.published_format import chat_convention_problems, openai_finetune_problems
from toolace.config import SAMPLE_CORPUS, RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")
_CORPUS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _flows_mine_a_mixed_corpus(mixed_corpus: str) -> None:
    """The flows below mine the conftest's 15-document mix; the first test mines the whole bundled corpus."""
    _CORPUS["small"] = mixed_corpus


def run_flow(llm: Any, out: Path | str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"apis": 4, "dialogs": 6, "target_model": None, "run_id": "run-a",
                                "batch_size": 4, "corpus": _CORPUS["small"], **overrides}
    config = RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=str(out), **settings)
    return toolace_pipeline(config)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def process_state() -> dict[str, Any]:
    """What a run may change only while it lasts (its run context owns it): the collector's settings, the switch
    interval, fsspec's configuration and the LLM loop's thread."""
    import copy
    import gc
    import sys
    import threading

    import fsspec

    return {"gc": (gc.get_threshold(), gc.get_freeze_count()), "switch": sys.getswitchinterval(),
            "fsspec": copy.deepcopy(fsspec.config.conf),
            "loops": sum(t.name == "toolace-llm-loop" and t.is_alive() for t in threading.enumerate())}


def test_flow_publishes_dataset_tables_and_manifest(llm, tmp_path):
    before = process_state()
    summary = run_flow(llm, tmp_path, corpus=SAMPLE_CORPUS, s3_endpoint_url="http://127.0.0.1:9")
    assert process_state() == before  # no ambient state: the run context's settings end with the run
    run_dir = tmp_path / "runs" / "run-a"
    assert summary["run_dir"].endswith("runs/run-a")
    assert summary["accepted_dialogs"] == 6

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"]) == list(STAGES)
    for name, stage in manifest["stages"].items():
        assert stage["accepted"] + stage["rejected"] == stage["items_in"], name
    assert manifest["context_tree"]["domains"] >= 1 and manifest["context_tree"]["leaves"] >= 1
    assert manifest["stages"]["mining"]["items_in"] >= 50  # the whole bundled corpus
    assert manifest["stages"]["mining"]["llm_requests"] > 0
    assert manifest["stages"]["mining"]["tokens_in"] > 0 and manifest["stages"]["mining"]["tokens_out"] > 0
    assert manifest["config"]["apis"] == 4 and manifest["packages"]["prefect"]
    listed = {f["path"] for f in manifest["files"]}
    assert {"dataset/toolace.jsonl", "dataset/openai.jsonl", "tables/documents.parquet", "tables/apis.parquet",
            "tables/dialogs.parquet", "tables/verdicts.parquet", "context_tree.json"} <= listed
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"])
    # each stage ran as a subflow of the run's flow: its own state and logs in the Prefect UI
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        (parent,) = client.read_flow_runs(limit=1, sort="START_TIME_DESC",
                                          flow_run_filter=FlowRunFilter(parent_task_run_id={"is_null_": True}))
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])), sort="START_TIME_ASC")
        names = [client.read_flow(r.flow_id).name for r in children]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[children[0].id])))
    assert names == ["mining", "context-tree", "api-synthesis", "calibration", "dialogs", "publish"]
    assert all(r.state and r.state.is_completed() for r in children)
    assert any(log.flow_run_id == children[0].id and "mining:" in log.message for log in logs)

    toolace = read_jsonl(run_dir / "dataset" / "toolace.jsonl")
    openai_rows = read_jsonl(run_dir / "dataset" / "openai.jsonl")
    assert len(toolace) == len(openai_rows) == 6
    assert all(openai_finetune_problems(r) == [] for r in openai_rows)  # OpenAI's format: no id/meta keys
    assert [r["messages"][0] for r in openai_rows] == [{"role": "user", "content": r["conversations"][0]["value"]}
                                                       for r in toolace]  # row for row
    for row in toolace:
        assert set(row["meta"]) >= {"domain", "dialog_type", "apis_used", "complexity_loss"}
        assert row["meta"]["complexity_loss"] is None  # --target-model none
        tools = json.loads(row["system"].split("you can invoke:\n", 1)[1])
        assert all(t["parameters"]["type"] == "dict" for t in tools)
        for turn in row["conversations"]:
            if turn["from"] == "assistant" and turn["value"].startswith("["):
                tree = ast.parse(turn["value"], mode="eval")  # ToolACE call syntax parses as Python
                assert isinstance(tree.body, ast.List)
    for row in openai_rows:
        assert row["tools"][0]["type"] == "function"
        calls = [c for m in row["messages"] if m["role"] == "assistant" for c in (m.get("tool_calls") or [])]
        for call in calls:
            json.loads(call["function"]["arguments"])

    documents = pl.read_parquet(run_dir / "tables" / "documents.parquet")
    assert documents.height == manifest["stages"]["mining"]["items_in"]
    rejected = documents.filter(pl.col("status") == "rejected")
    assert rejected.height > 0 and rejected["rejected_by"].null_count() == 0 and rejected["reason"].null_count() == 0
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    assert set(dialogs["status"].unique()) <= {"accepted", "rejected"}
    assert dialogs.filter(pl.col("status") == "accepted").height == 6


def test_rerun_with_same_run_id_sends_no_request_again(llm, tmp_path):
    run_flow(llm, tmp_path)
    first = len(llm.requests)
    assert first > 0
    llm.clear_requests()
    summary = run_flow(llm, tmp_path)
    assert llm.requests == []
    assert summary["accepted_dialogs"] == 6


def test_every_item_ends_accepted_or_rejected_with_reason_and_raw_output(llm, tmp_path):
    # the tool agent always answers off-schema: every dialog that calls a tool must end rejected, not lost
    llm.on_schema("ToolResult", lambda body: "not json")
    llm.script(lambda body: {"content": "{}"} if "Functionalities the API must provide" in str(body["messages"]) and
               body.get("seed") == 1 else None)
    # only non-tool dialogs survive: the published-dataset suite fails (dialog mix, acceptance rate), so the
    # run is not promoted and stays in staging, marked failed, with every table, the Data Docs and manifest
    with pytest.raises(DatasetRejected, match="expectation suite failed") as info:
        run_flow(llm, tmp_path, mix_shortfall="warn")  # warned of, made all the same: the suite judges
    assert "gx_acceptance_rate_v1" in str(info.value)
    run_dir = tmp_path / "staging" / "run-a"
    assert not (tmp_path / "runs" / "run-a").exists() and not (tmp_path / "latest.json").exists()
    assert json.loads((run_dir / "FAILED.json").read_text())["failed"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not manifest["expectations"]["success"]
    assert (run_dir / "dataset" / "data_docs" / "index.html").exists()
    summary = {"stages": manifest["stages"]}
    for table in ("apis", "dialogs"):
        frame = pl.read_parquet(run_dir / "tables" / f"{table}.parquet")
        rejected = frame.filter(pl.col("status") == "rejected")
        assert rejected.height > 0, table
        assert rejected["rejected_by"].null_count() == 0
        assert all(r for r in rejected["raw_outputs"].to_list()), table
    stages = summary["stages"]
    assert stages["dialog_generation"]["rejected_by"]["structured_output_v1"] > 0
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    calling = dialogs.filter(pl.col("dialog_type") != "non_tool")
    assert calling.height > 0 and set(calling["status"]) == {"rejected"}
    assert stages["dialog_generation"]["accepted"] + stages["dialog_generation"]["rejected"] == \
        stages["dialog_generation"]["items_in"]


def test_run_starts_from_an_api_pool_and_grows_it(llm, tmp_path):
    from tasks.apis.importing import merge_into_pool, read_api_file, read_pool

    pool = str(tmp_path / "pool.jsonl")
    imported = read_api_file(str(Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"))[:5]
    merge_into_pool(pool, imported)
    summary = run_flow(llm, tmp_path / "out", pool=pool)
    grown = read_pool(pool)
    assert len(grown) == 5 + summary["stages"]["api_synthesis"]["accepted"] == 9
    synthesis_prompts = [str(r["messages"]) for r in llm.requests
                         if "Functionalities the API must provide" in str(r["messages"])]
    assert any(api.name in p for p in synthesis_prompts for api in imported)  # pool APIs serve as examples
    manifest = json.loads((tmp_path / "out" / "runs" / "run-a" / "manifest.json").read_text())
    assert manifest["api_pool"]["apis_before"] == 5 and manifest["api_pool"]["added"] == 4
    offered = {name for row in read_jsonl(tmp_path / "out" / "runs" / "run-a" / "dataset" / "toolace.jsonl")
               for name in row["meta"]["apis_offered"]}
    assert offered & {api.name for api in imported}  # dialogs draw tools from the pool too


def test_model_layer_rejections_are_stored_and_reported(llm, tmp_path):
    """A judge that fails dialogs rejects them after the rules passed them; the verdicts keep every failure
    with its layer, the dialogs keep the judge's raw output, the manifest counts failures per check."""
    from tests.scripted_llm_server import schema_name

    llm.script(lambda body: {"json": {"reason": "The answer ignores the tool result.", "passed": False}}
               if schema_name(body) == "ConsistencyAnswer" else None)
    with pytest.raises(DatasetRejected, match="gx_row_count_v1"):  # nothing accepted: nothing promoted
        run_flow(llm, tmp_path, dialogs=2, mix_shortfall="warn")
    run_dir = tmp_path / "staging" / "run-a"
    dialogs = pl.read_parquet(run_dir / "tables" / "dialogs.parquet")
    judged = dialogs.filter(pl.col("rejected_by") == "llm_consistency_v1")
    assert judged.height > 0
    assert all("ignores the tool result" in r for r in judged["reason"])
    assert all(any("ignores the tool result" in raw for raw in raws) for raws in judged["raw_outputs"])
    verdicts = pl.read_parquet(run_dir / "tables" / "verdicts.parquet")
    model_failures = [f for fs in verdicts["failures"] for f in json.loads(fs) if f["layer"] == "model"]
    assert model_failures and {f["check"] for f in model_failures} == {"llm_consistency_v1"}
    report = json.loads((run_dir / "manifest.json").read_text())["verification"]
    assert report["failures_per_check"]["llm_consistency_v1"]["layer"] == "model"
    assert report["failures_per_check"]["llm_consistency_v1"]["dialogs"] == judged.height
    assert report["model_judged"] >= judged.height and report["passed"] == 0
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["verification"]["llm_requests"] > 0


def test_model_layer_can_be_switched_off(llm, tmp_path):
    from tests.conftest import JUDGE_SCHEMAS
    from tests.scripted_llm_server import schema_name

    summary = run_flow(llm, tmp_path, model_checks=False)
    assert summary["accepted_dialogs"] == 6
    assert not [r for r in llm.requests if schema_name(r) in JUDGE_SCHEMAS]
    report = json.loads((tmp_path / "runs" / "run-a" / "manifest.json").read_text())["verification"]
    assert report["model_judged"] == 0


def test_run_on_s3_is_staged_then_promoted(llm, s3_server):
    """Every path a URL: the run writes to s3://.../staging/<id>/, is copied to runs/<id>/ and latest.json
    is written last; the manifest lists every file with its size and checksum."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("flow-bucket")
    summary = run_flow(llm, "s3://flow-bucket/toolace", s3_endpoint_url=s3_server, dialogs=2)
    assert summary["run_dir"] == "s3://flow-bucket/toolace/runs/run-a"
    assert not fs.exists("flow-bucket/toolace/staging/run-a")
    pointer = json.loads(fs.cat("flow-bucket/toolace/latest.json"))
    assert pointer["run_id"] == "run-a"
    manifest_bytes = fs.cat("flow-bucket/toolace/runs/run-a/manifest.json")
    import hashlib

    assert pointer["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    assert manifest["status"] == "promoted"
    for entry in manifest["files"]:
        assert fs.size(f"flow-bucket/toolace/runs/run-a/{entry['path']}") == entry["bytes"]
    again = run_flow(llm, "s3://flow-bucket/toolace", s3_endpoint_url=s3_server, dialogs=2)
    assert again["already_published"] is True


def test_published_dataset_loads_with_datasets_and_has_a_card(llm, tmp_path):
    import datasets

    summary = run_flow(llm, tmp_path)
    dataset_dir = tmp_path / "runs" / "run-a" / "dataset"
    loaded = datasets.load_dataset("parquet", data_files=str(dataset_dir / "data" / "train-*.parquet"),
                                   cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert loaded.num_rows == summary["accepted_dialogs"] == 6
    toolace = read_jsonl(dataset_dir / "toolace.jsonl")
    assert loaded["id"] == [r["id"] for r in toolace]
    assert loaded[0]["toolace_conversations"] == toolace[0]["conversations"]
    first = loaded[0]["messages"]
    assert first[0]["role"] == "user" and loaded[0]["tools"][0]["type"] == "function"
    calls = [c for row in loaded for m in row["messages"] for c in m.get("tool_calls", [])]
    assert calls and all(isinstance(c["function"]["arguments"], dict) for c in calls)  # objects, as templates want
    assert all(chat_convention_problems(row) == [] for row in loaded)
    card = (dataset_dir / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0")
    manifest = json.loads((tmp_path / "runs" / "run-a" / "manifest.json").read_text())
    for fragment in ("scripted-model", "## Counts", "## Acceptance per stage and check", "## Chat templates",
                     "| qwen3 |", "## Complexity",
                     "## License and provenance", manifest["packages"]["prefect"]):
        assert fragment in card
    for row in loaded:
        assert f"| {row['dialog_type']} |" in card
    for chart in ("reports/dialog_types.png", "reports/loss.png"):
        assert (tmp_path / "runs" / "run-a" / chart).read_bytes().startswith(b"\x89PNG")
    assert {"dataset/README.md", "dataset/data/train-00000-of-00001.parquet"} <= {f["path"] for f in manifest["files"]}


@pytest.mark.slow
def test_dask_task_runner_gives_the_same_dataset(llm, tmp_path):
    """The batch tasks on a real local Dask cluster (worker processes) make the same accepted dataset."""
    threads = run_flow(llm, tmp_path / "threads", dialogs=3)
    on_dask = run_flow(llm, tmp_path / "dask", dialogs=3, task_runner="dask", dask_workers=1)
    assert threads["accepted_dialogs"] == on_dask["accepted_dialogs"] == 3
    rows_threads = read_jsonl(tmp_path / "threads" / "runs" / "run-a" / "dataset" / "toolace.jsonl")
    rows_dask = read_jsonl(tmp_path / "dask" / "runs" / "run-a" / "dataset" / "toolace.jsonl")
    assert rows_threads == rows_dask
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:  # each stage is a subflow of its own, with its batch tasks
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["mining"])),
                                     sort="START_TIME_DESC", limit=1)
        assert runs and runs[0].state and runs[0].state.is_completed()
        tasks = client.read_task_runs()
    assert any(t.flow_run_id == runs[0].id and t.name.startswith("mine-documents") for t in tasks)


def test_failed_run_resumes_from_its_finished_batches(llm, tmp_path):
    """A run that fails after the API stage (here: a target model that does not exist, found when the
    calibration probes are scored) leaves its finished batches persisted; the rerun with the same run id
    takes the API batches from Prefect's result store (Cached) and the mining decisions from the mining
    ledger, so neither is computed again, and nothing was promoted in between."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    with pytest.raises(Exception, match="does not exist|not found|No such"):
        run_flow(llm, tmp_path, target_model=str(tmp_path / "missing-model"))
    assert not (tmp_path / "runs" / "run-a").exists() and not (tmp_path / "latest.json").exists()
    assert (tmp_path / "staging" / "run-a").exists()
    llm.clear_requests()
    summary = run_flow(llm, tmp_path)
    assert summary["accepted_dialogs"] == 6
    with get_client(sync_client=True) as client:  # the rerun's stage subflows and their tasks
        stages = [client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])), limit=1,
                                        sort="START_TIME_DESC")[0] for name in ("mining", "api-synthesis")]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in stages])))
    synthesis = [t for t in tasks if t.name.startswith("synthesize-apis")]
    assert synthesis and all(t.state_name == "Cached" for t in synthesis)
    assert not [t for t in tasks if t.name.startswith("mine-documents")]
    manifest = json.loads((tmp_path / "runs" / "run-a" / "manifest.json").read_text())
    assert manifest["stages"]["mining"]["reused"] == manifest["stages"]["mining"]["items_in"] > 0
    assert not [r for r in llm.requests if "Functionalities the API must provide" in json.dumps(r["messages"])]
