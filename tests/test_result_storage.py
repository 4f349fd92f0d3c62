"""Resume from anywhere: Prefect's task results live under ``<out>/state/prefect-results/<run-id>/``, never in the
local Prefect storage, so a run that crashed on one machine resumes on another (another Prefect home, another
local storage, an empty LLM response cache) without redoing a finished batch; locally and on S3."""

from __future__ import annotations

import base64
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

import flows.stages.publishing as publishing
import flows.toolace_pipeline as pipeline
from flows.result_storage import result_storage_for, results_beside_run, run_result_storage
from tasks.storage.run_storage import RunLocation
from toolace.cli.run import _with_run_results
from toolace.config import RunConfig
from toolace.errors import UserError

pytestmark = pytest.mark.usefixtures("prefect_harness")
RUN_ID = "resume-anywhere"


class Crash(RuntimeError):
    """The machine went away after every batch had finished, before the run was published."""


def crash_at_publish(*_: Any, **__: Any) -> Any:
    raise Crash("killed before publish")


def config_for(llm: Any, out: str, corpus: str, **overrides: Any) -> RunConfig:
    return RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out=out, apis=3, dialogs=3,
                     target_model=None, run_id=RUN_ID, batch_size=4, corpus=corpus, reuse_mined=False,
                     **overrides)


def on_machine(tmp_path: Path, name: str) -> dict[Any, Any]:
    """Prefect settings of another machine: its own Prefect home and local result storage."""
    home = tmp_path / name / "prefect"
    return {PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def only_the_flow_failure(storage: Path) -> bool:
    """A flow called as a plain function (a deployment's run) writes its own failure, the exception, to its
    default storage (Prefect's flow engine does, outside the flow's code); no task result may be there."""
    return all(isinstance(pickle.loads(base64.b64decode(p.read_bytes())), Crash) for p in files_under(storage))


def test_storage_blocks_from_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "MARKER-never-in-a-block")
    local = result_storage_for(str(tmp_path / "out" / "r"))
    assert isinstance(local, LocalFileSystem) and local.basepath == str((tmp_path / "out" / "r").resolve())
    assert isinstance(result_storage_for(f"file://{tmp_path}/r"), LocalFileSystem)
    remote = run_result_storage("s3://bucket/toolace/", "r1", "http://127.0.0.1:9000")
    assert isinstance(remote, RemoteFileSystem)
    assert remote.basepath == "s3://bucket/toolace/state/prefect-results/r1"
    assert remote.settings == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    assert "MARKER" not in remote.model_dump_json()  # credentials stay in the environment
    assert run_result_storage("gs://bucket/x", "r1", "http://ignored").settings == {}  # the endpoint is S3's
    assert RunLocation("s3://b/t", "r1").prefect_results == "s3://b/t/state/prefect-results/r1"
    with pytest.raises(UserError, match="cannot keep Prefect results under memory:///x"):
        result_storage_for("memory:///x")
    with results_beside_run(str(tmp_path), "r1") as storage:  # outside a flow run: the storage, nothing entered
        assert isinstance(storage, LocalFileSystem)


@pytest.mark.slow
@pytest.mark.parametrize("task_runner", ["thread", "dask"])
def test_crash_then_resume_on_another_machine(llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              mixed_corpus: str, task_runner: str) -> None:
    """On Dask the batch tasks run in worker processes: their results reach the same folder."""
    out = tmp_path / "out"
    config = config_for(llm, str(out), mixed_corpus, task_runner=task_runner, dask_workers=1)
    results = out / "state" / "prefect-results" / RUN_ID
    machine_a = on_machine(tmp_path, "a")
    # as `toolace run` calls it: with a local --out the flow's own result storage is there too, so not even its
    # failure record lands in the local storage (the S3 test below runs the flow as a deployment does)
    run_flow = _with_run_results(pipeline.toolace_pipeline, config)
    with temporary_settings(updates=machine_a), monkeypatch.context() as patch:
        patch.setattr(publishing, "check_records", crash_at_publish)
        with pytest.raises(Crash):
            run_flow(config)
    first_requests = len(llm.requests)
    assert first_requests > 0
    written = files_under(results)
    assert len(written) >= 4  # mining, tree, API and dialog batches at least
    assert files_under(Path(machine_a[PREFECT_LOCAL_STORAGE_PATH])) == []  # nothing in the local storage
    assert not (out / "staging" / RUN_ID / "state").exists()  # not in the run folder that gets published

    # machine b: another Prefect home and local storage, and no LLM response cache (it stayed on machine a)
    shutil.rmtree(out / "cache")
    llm.clear_requests()
    machine_b = on_machine(tmp_path, "b")
    with temporary_settings(updates=machine_b):
        summary = run_flow(config)
    assert summary["accepted_dialogs"] == 3
    assert llm.requests == [], f"{len(llm.requests)} requests sent again: finished batches were not reused"
    assert files_under(Path(machine_b[PREFECT_LOCAL_STORAGE_PATH])) == []
    assert (out / "runs" / RUN_ID / "manifest.json").is_file()
    assert not results.exists()  # published: the results are never read again, and removed (the flow's
    # own summary is not persisted after that)
    manifest_files = (out / "runs" / RUN_ID / "manifest.json").read_text()
    assert "prefect-results" not in manifest_files


def test_crash_then_resume_from_s3(llm, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   mixed_corpus: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("resume-bucket")
    config = config_for(llm, "s3://resume-bucket/toolace", mixed_corpus, s3_endpoint_url=s3_server)
    results = f"resume-bucket/toolace/state/prefect-results/{RUN_ID}"
    machine_a = on_machine(tmp_path, "a")
    monkeypatch.setenv("HOME", str(tmp_path / "a" / "home"))  # an s3:// run caches LLM answers under ~/.cache
    run_flow = pipeline.toolace_pipeline
    with temporary_settings(updates=machine_a), monkeypatch.context() as patch:
        patch.setattr(publishing, "check_records", crash_at_publish)
        with pytest.raises(Crash):
            run_flow(config)
    assert llm.requests
    assert len(fs.find(results)) >= 4
    assert only_the_flow_failure(Path(machine_a[PREFECT_LOCAL_STORAGE_PATH]))
    assert not any("prefect-results" in p for p in fs.find("resume-bucket/toolace/staging"))

    llm.clear_requests()
    monkeypatch.setenv("HOME", str(tmp_path / "b" / "home"))  # machine b: an empty LLM response cache
    with temporary_settings(updates=on_machine(tmp_path, "b")):
        summary = run_flow(config)
    assert summary["run_dir"] == f"s3://resume-bucket/toolace/runs/{RUN_ID}"
    assert llm.requests == [], f"{len(llm.requests)} requests sent again: finished batches were not reused"
    fs.invalidate_cache()
    assert fs.find(results) == []
    assert os.environ["HOME"] == str(tmp_path / "b" / "home")


def test_promote_removes_the_runs_results_only(tmp_path: Path) -> None:
    from tasks.storage.run_storage import promote

    location = RunLocation(str(tmp_path), "r1")
    staging, mine, other = Path(location.staging), Path(location.prefect_results), Path(
        RunLocation(str(tmp_path), "r2").prefect_results)
    for folder in (staging, mine, other):
        folder.mkdir(parents=True)
    (staging / "manifest.json").write_text("{}")
    (mine / "abc123").write_bytes(b"result")
    (other / "def456").write_bytes(b"result of a run still going")
    pointer = promote(location, "0" * 64)
    assert pointer["url"] == location.published and (Path(location.published) / "manifest.json").is_file()
    assert not mine.exists() and not staging.exists()
    assert (other / "def456").is_file()
    assert not (Path(location.published) / "state").exists()
