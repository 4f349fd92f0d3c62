"""Storage errors during a run: transient ones are retried; a persistent one fails the run with nothing
half-written promoted, and the rerun resumes from the finished batches. The storage is an fsspec
filesystem that fails the writes it is told to (the same code path as s3fs, minus the network)."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from flows.toolace_pipeline import toolace_pipeline
from tasks.storage import run_storage
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")


class FlakyFileSystem(MemoryFileSystem):
    """In-memory storage whose writes to paths containing a key fail while that key has failures left
    (-1: always)."""

    protocol = "flaky"
    store: dict[str, Any] = {}  # its own store, apart from memory://
    pseudo_dirs = [""]
    failures: dict[str, int] = {}
    failed: list[str] = []

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode or "a" in mode:
            for key, left in self.failures.items():
                if key in path and left != 0:
                    self.failures[key] = left - 1 if left > 0 else left
                    self.failed.append(path)
                    raise ConnectionError(f"injected storage fault writing {path}")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


@pytest.fixture(autouse=True)
def fresh_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    FlakyFileSystem.store.clear()
    FlakyFileSystem.pseudo_dirs[:] = [""]
    FlakyFileSystem.failures.clear()
    FlakyFileSystem.failed.clear()
    monkeypatch.setattr(run_storage, "STORAGE_BACKOFF_S", 0.01)


def run(llm: Any, run_id: str, corpus: str) -> dict[str, Any]:
    return toolace_pipeline(RunConfig(llm_base_url=llm.base_url, llm_model="scripted-model", out="flaky://bucket/out",
                                      apis=3, dialogs=3, target_model=None, run_id=run_id, batch_size=4,
                                      corpus=corpus))


def read(path: str) -> Any:
    with fsspec.open(f"flaky://{path}", "r") as handle:
        return json.loads(handle.read())


def test_transient_storage_errors_are_retried(llm, mixed_corpus: str) -> None:
    FlakyFileSystem.failures.update({"dataset/toolace.jsonl": 2, "latest.json": 1, "tables/apis.parquet": 3})
    summary = run(llm, "transient", mixed_corpus)
    assert summary["accepted_dialogs"] == 3
    assert len(FlakyFileSystem.failed) == 6
    assert read("bucket/out/latest.json")["run_id"] == "transient"
    manifest = read("bucket/out/runs/transient/manifest.json")
    assert manifest["status"] == "promoted"


def test_persistent_storage_error_fails_the_run_unpromoted_then_resumes(llm, mixed_corpus: str) -> None:
    FlakyFileSystem.failures.update({"dataset/openai.jsonl": -1})
    with pytest.raises(OSError, match="openai.jsonl failed after 4 attempts"):
        run(llm, "persistent", mixed_corpus)
    fs = FlakyFileSystem()
    assert not fs.exists("flaky://bucket/out/latest.json") and not fs.exists("flaky://bucket/out/runs/persistent")
    assert fs.exists("flaky://bucket/out/staging/persistent/tables/dialogs.parquet")  # finished work is kept
    FlakyFileSystem.failures.clear()
    llm.clear_requests()
    summary = run(llm, "persistent", mixed_corpus)
    assert summary["accepted_dialogs"] == 3
    assert llm.requests == []  # every batch came back from the result store or the caches
    assert read("bucket/out/latest.json")["run_id"] == "persistent"


def test_every_streamed_file_of_the_dialog_stage_retries_its_open() -> None:
    """The stage tables, the verdicts, the JSONL formats and the shards all open through one retrying opener
    (tasks.storage.writers.open_for_writing): one transient fault on each file costs nothing."""
    from tasks.dataset.stream import DialogStream
    from tests.test_dataset_expectations import BOUNDS, dialog

    names = ("dialogs.parquet", "verdicts.parquet", "toolace.jsonl", "openai.jsonl", "sharegpt.jsonl", "train-0")
    FlakyFileSystem.failures.update({name: 1 for name in names})
    verdict = {"dialog_id": "d0", "generated": True, "passed": True, "rules_passed": True, "model_judged": False,
               "failures": []}
    with DialogStream("flaky://bucket/run", BOUNDS, rows_per_shard=10) as stream:
        stream.write([dialog("d0")], [verdict])
    assert sorted({name for name in names for path in FlakyFileSystem.failed if name in path}) == sorted(names)
    with fsspec.open("flaky://bucket/run/dataset/toolace.jsonl", "r") as handle:
        assert [json.loads(line)["id"] for line in handle.read().splitlines()] == ["d0"]
    assert stream.shards == ["data/train-00000-of-00001.parquet"]
