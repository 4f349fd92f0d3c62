"""The restructure changes no output, proved: a fixed-seed run against the scripted server publishes exactly the
files stored under ``tests/data/golden/`` (the dataset in every format, its shards and the stage tables): the text
files byte for byte, the parquet files by what they hold (schema, row groups, rows, in order), since their bytes also
carry the name and version of the library that wrote them (polars 2.1.0 and 2.2.0 write the same tables with
different bytes, only in that field).

A change that alters outputs on purpose (the scheduler, the dialog-mix quotas) regenerates them in its own commit
and says why: ``TOOLACE_UPDATE_GOLDEN=1 pytest tests/test_golden_run.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.toolace_pipeline import toolace_pipeline
from toolace.config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = Path(__file__).parent / "data" / "golden"
# the published files whose bytes are compared; the manifest, the card and the reports carry timestamps, paths
# and package versions, so they are compared through the facts they derive from (the files below)
TEXT_FILES = ("dataset/toolace.jsonl", "dataset/openai.jsonl", "dataset/sharegpt.jsonl", "context_tree.json")
HASHED_PREFIXES = ("dataset/data/", "tables/")
# the documents table names each document by the absolute path it was read from: compared row by row, with that
# path relative to the corpus folder
DOCUMENTS = "tables/documents.parquet"


def golden_config(llm_url: str, out: Path, corpus: str) -> RunConfig:
    return RunConfig(llm_base_url=llm_url, llm_model="scripted-model", out=str(out), run_id="golden", seed=11,
                     apis=8, dialogs=12, batch_size=4, target_model=None, corpus=corpus,
                     template_families=[], template_check_rows=0, mix_tolerance=1.0)


def parquet_content(path: Path) -> bytes:
    """What a parquet file holds, as canonical bytes: its arrow schema (with metadata), the rows of each row group
    and their order; not the writer's name and version, nor its encodings."""
    file = pq.ParquetFile(path)
    schema = file.schema_arrow  # as data, not as pyarrow prints it
    fields = [[f.name, str(f.type), f.nullable, {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}]
              for f in schema]
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    parts = [json.dumps([fields, metadata], sort_keys=True).encode("utf-8")]
    for group in range(file.metadata.num_row_groups):
        rows = file.read_row_group(group).to_pylist()
        parts.append(json.dumps(rows, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8"))
    return b"\n".join(parts)


def published_files(run_dir: Path) -> dict[str, str]:
    """sha256 of each compared file of a published run: of its bytes, or of its content for a parquet file."""
    files = {}
    for path in sorted(run_dir.rglob("*")):
        name = path.relative_to(run_dir).as_posix()
        if path.is_file() and name != DOCUMENTS and (name in TEXT_FILES or name.startswith(HASHED_PREFIXES)):
            data = parquet_content(path) if path.suffix == ".parquet" else path.read_bytes()
            files[name] = hashlib.sha256(data).hexdigest()
    return files


def documents_rows(run_dir: Path, corpus: Path) -> str:
    frame = pl.read_parquet(run_dir / DOCUMENTS)
    rows = [{**row, "source": row["source"].replace(str(corpus.resolve()), "corpus")} for row in frame.to_dicts()]
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def test_a_fixed_seed_run_publishes_the_golden_files(llm, tmp_path, mixed_corpus, monkeypatch):
    # documents are named by the path they were read from: the same relative path in every checkout
    shutil.copytree(mixed_corpus, tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    toolace_pipeline(golden_config(llm.base_url, tmp_path / "out", "corpus"))
    run_dir = tmp_path / "out" / "runs" / "golden"
    hashes = published_files(run_dir)
    documents = documents_rows(run_dir, tmp_path / "corpus")
    if os.environ.get("TOOLACE_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        GOLDEN.mkdir(parents=True)
        for name in TEXT_FILES:
            (GOLDEN / name.replace("/", "__")).write_bytes((run_dir / name).read_bytes())
        (GOLDEN / "tables__documents.jsonl").write_text(documents)
        (GOLDEN / "sha256.json").write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    stored = json.loads((GOLDEN / "sha256.json").read_text())
    for name in TEXT_FILES:  # a readable diff first, for the files that are text
        assert (run_dir / name).read_text() == (GOLDEN / name.replace("/", "__")).read_text(), name
    assert documents == (GOLDEN / "tables__documents.jsonl").read_text()
    assert hashes == stored
