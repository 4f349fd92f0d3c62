"""Writing a run's files to local disk or object storage: stage tables (validated, or appended batch by batch),
JSON, JSONL and bytes, and the listing of a run folder with sizes and digests."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

import fsspec
import pandera.polars as pa
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel

from schemas.frames import validate_table
from tasks.storage.frames import model_frame
from tasks.storage.run_storage import put_bytes


class TableWriter:
    """Appends batches of records to one parquet file, holding none of the earlier batches."""

    def __init__(self, url: str, model: type[BaseModel], frame_model: type[pa.DataFrameModel] | None = None,
                 table: str = "") -> None:
        self.url, self.model, self.rows = url, model, 0
        self.frame_model, self.table = frame_model, table or url
        self._handle = fsspec.open(url, "wb").open()
        self._writer = pq.ParquetWriter(self._handle, model_frame([], model).to_arrow().schema)

    def write(self, records: list[BaseModel]) -> None:
        if records:
            frame = model_frame(records, self.model)
            if self.frame_model is not None:
                validate_table(frame, self.frame_model, self.table)
            self._writer.write_table(frame.to_arrow())
            self.rows += len(records)

    def close(self) -> None:
        self._writer.close()
        self._handle.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_validated(records: list[BaseModel], model: type[BaseModel], frame_model: type[pa.DataFrameModel],
                    url: str, table: str) -> pl.DataFrame:
    """Write one stage table after checking it against its pandera model (nothing written on failure)."""
    frame = validate_table(model_frame(records, model), frame_model, table)
    write_table(frame, url)
    return frame


def write_table(frame: pl.DataFrame, url: str) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    put_bytes(buffer.getvalue(), url)


def write_jsonl(rows: Iterable[dict[str, Any]], url: str) -> int:
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    put_bytes("".join(lines).encode("utf-8"), url)
    return len(lines)


def write_bytes(data: bytes, url: str) -> None:
    put_bytes(data, url)


def write_json(value: Any, url: str) -> None:
    put_bytes(json.dumps(value, ensure_ascii=False, indent=2, default=str).encode("utf-8"), url)


def file_listing(root: str) -> list[dict[str, Any]]:
    """Every file under a run folder with its size and sha256 (the manifest is written after)."""
    fs, path = fsspec.core.url_to_fs(root)
    listing = []
    for file in sorted(fs.find(path)):
        digest = hashlib.sha256()
        with fs.open(file, "rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(chunk)
        listing.append({"path": file[len(path):].lstrip("/"), "bytes": fs.size(file), "sha256": digest.hexdigest()})
    return listing
