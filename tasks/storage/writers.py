"""Writing a run's files to local disk or object storage: stage tables (validated, or appended batch by batch),
JSON, JSONL and bytes, and the listing of a run folder with sizes and digests."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from typing import IO, Any

import fsspec
import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.parquet as pq
from pydantic import BaseModel

from schemas.frames import TableValidationError, validate_table
from tasks.storage.frames import model_frame
from tasks.storage.run_storage import put_bytes, with_retries


def open_for_writing(url: str) -> IO[bytes]:
    """Open one file for streaming writes (a multipart upload on object stores, completed on close), creating
    its folder and retrying transient storage errors; the error raised at last names the file."""
    return with_retries(lambda: fsspec.open(url, "wb", auto_mkdir=True).open(), f"writing {url}")


class _Appender:
    """What every appending writer shares: the file is opened at the first write, or at ``close`` when nothing
    was written (so an empty file still exists), always through :func:`open_for_writing`: a failure to open it
    comes after a batch's work is done and cached, not before, and is retried the same way for every file."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._handle: IO[bytes] | None = None
        self._closed = False

    def _open(self) -> IO[bytes]:
        if self._handle is None:
            self._handle = open_for_writing(self.url)
            self._opened(self._handle)
        return self._handle

    def _opened(self, handle: IO[bytes]) -> None:
        """Called once the file is open."""

    def _finish(self) -> None:
        """Called before the file is closed."""

    def close(self) -> None:
        """Finish and close the file (an empty one when nothing was written); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        handle = self._open()
        self._finish()
        handle.close()


class JsonlAppender(_Appender):
    """Appends JSON lines to one file."""

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._open().write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))


class ParquetAppender(_Appender):
    """Appends arrow tables of one schema to one parquet file, a row group per table, holding none of the
    earlier ones."""

    def __init__(self, url: str, schema: pa_arrow.Schema) -> None:
        super().__init__(url)
        self.schema = schema
        self._writer: pq.ParquetWriter | None = None

    def _opened(self, handle: IO[bytes]) -> None:
        self._writer = pq.ParquetWriter(handle, self.schema)

    def write_table(self, table: pa_arrow.Table) -> None:
        self._open()
        assert self._writer is not None
        self._writer.write_table(table)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()


class TableWriter:
    """Appends batches of records to one stage table, each batch its own row group, holding none of the earlier
    batches once written. With a pandera model each batch is validated before it is written; ``validate_rows``
    lets batches wait until that many rows are pending and validates them in one call (pandera's cost is mostly
    per call: the dialogs table of a run validated 16 rows at a time spent about 55 ms a batch in it, while the
    LLM loop waited for the interpreter), then writes them batch by batch as before, so the file's bytes are the
    same. A failure names the row as counted in the table; the batches before the failing row are written."""

    def __init__(self, url: str, model: type[BaseModel], frame_model: type[pa.DataFrameModel] | None = None,
                 table: str = "", validate_rows: int = 0) -> None:
        self.url, self.model, self.rows = url, model, 0
        self.frame_model, self.table, self.validate_rows = frame_model, table or url, validate_rows
        self._file = ParquetAppender(url, model_frame([], model).to_arrow().schema)
        self._pending: list[pl.DataFrame] = []

    def write(self, records: list[BaseModel]) -> None:
        if records:
            self._pending.append(model_frame(records, self.model))
            if sum(frame.height for frame in self._pending) >= self.validate_rows:
                self._flush()

    def _flush(self) -> None:
        frames, self._pending = self._pending, []
        if not frames:
            return
        if self.frame_model is not None:
            try:
                validate_table(pl.concat(frames) if len(frames) > 1 else frames[0], self.frame_model, self.table)
            except TableValidationError as error:
                first_bad = min((f["row"] for f in error.failures if isinstance(f.get("row"), int)), default=0)
                offset = self.rows
                for frame in frames:  # what comes before the first failing row is kept
                    if first_bad >= frame.height:
                        self._write(frame)
                        first_bad -= frame.height
                    else:
                        break
                raise TableValidationError(error.table, [
                    {**f, "row": f["row"] + offset} if isinstance(f.get("row"), int) else f
                    for f in error.failures]) from None
        for frame in frames:
            self._write(frame)

    def _write(self, frame: pl.DataFrame) -> None:
        self._file.write_table(frame.to_arrow())
        self.rows += frame.height

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._file.close()

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
