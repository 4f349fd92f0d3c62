"""Writing a run: stage tables, the accepted dataset in ToolACE and OpenAI formats, and the manifest."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import types
import typing
from collections.abc import Iterable
from typing import Any

import fsspec
import pandera.polars as pa
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel

from schemas.frames import validate_table
from schemas.records import Dialog
from schemas.samples import Sample
from tasks.call_format import openai_example
from tasks.dataset_formats import row_from_sample
from tasks.run_storage import put_bytes
from tasks.verification import sample_from_dialog

MANIFEST_PACKAGES = ("toolace-platform", "prefect", "openai", "torch", "transformers", "polars", "pydantic",
                     "llama_cpp_python", "pandera", "great-expectations", "s3fs")


def _meta(dialog: Dialog) -> dict[str, Any]:
    return {"domain": dialog.domain, "dialog_type": dialog.dialog_type, "segments": dialog.segments,
            "apis_used": dialog.apis_used,
            "complexity_loss": dialog.complexity_loss, "apis_offered": [t.name for t in dialog.tools]}


def published_sample(dialog: Dialog) -> Sample:
    """The dialog as a :class:`~schemas.samples.Sample` for the format writers, without result schemas (the
    published formats offer tools as a model sees them; the result schemas are in ``tables/apis.parquet``)."""
    sample = sample_from_dialog(dialog)
    for tool in sample.tools:
        tool.result_schema = None
    return sample


def _published(row: dict[str, Any], dialog: Dialog) -> dict[str, Any]:
    return {**row, "id": dialog.dialog_id, "meta": _meta(dialog)}


def toolace_row(dialog: Dialog, sample: Sample | None = None) -> dict[str, Any]:
    """ToolACE's release format (the converter's writer, :mod:`tasks.dataset_formats`), plus the ``id`` and
    ``meta`` its users asked for. ``sample``: the dialog's :func:`published_sample`, when already made."""
    return _published(row_from_sample(sample or published_sample(dialog), "toolace"), dialog)


def sharegpt_row(dialog: Dialog, sample: Sample | None = None) -> dict[str, Any]:
    """LLaMA-Factory's function-calling ShareGPT format (``human``/``gpt``/``function_call``/``observation``,
    ``tools`` as a JSON string), the converter's writer, plus ``id`` and ``meta``."""
    return _published(row_from_sample(sample or published_sample(dialog), "sharegpt"), dialog)


def openai_row(dialog: Dialog) -> dict[str, Any]:
    """One example of OpenAI's fine-tuning format (:func:`tasks.call_format.openai_example`): ``messages`` with
    ``tool_calls`` (JSON-string ``arguments``, 9-character ids) and ``tool`` replies, and ``tools``; nothing
    else, since the fine-tuning input takes no other key (the id and meta are in ``toolace.jsonl`` and the
    parquet shards, row for row in the same order)."""
    return openai_example(dialog.turns, [t.tool_definition() for t in dialog.tools], dialog.dialog_id)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.model_dump(mode="json"))


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Columns of string lists stay list columns; other nested values are JSON strings (flat tables)."""
    columns = list(rows[0]) if rows else []
    nested = {c for c in columns if any(isinstance(r[c], list | dict | BaseModel) for r in rows)}
    str_lists = {c for c in nested if all(_is_str_list(r[c]) for r in rows)}
    cells = [{k: (_json(v) if k in nested - str_lists else v) for k, v in row.items()} for row in rows]
    return pl.DataFrame(cells, schema_overrides={c: pl.List(pl.String) for c in str_lists}, infer_schema_length=None)


def records_frame(records: Iterable[BaseModel]) -> pl.DataFrame:
    """One row per record (pydantic model)."""
    return _frame([{k: getattr(r, k) for k in type(r).model_fields} for r in records])


_SCALARS: dict[Any, pl.DataType] = {str: pl.String(), int: pl.Int64(), float: pl.Float64(), bool: pl.Boolean()}


def _column_type(annotation: Any) -> pl.DataType | None:
    """Polars type of a scalar / optional scalar / list-of-str field; None for JSON-encoded fields."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _column_type(args[0])
    if origin is typing.Literal:
        return pl.String()
    if origin is list and (args == [str] or typing.get_origin(args[0]) is typing.Literal):
        return pl.List(pl.String())
    return _SCALARS.get(annotation)


def model_frame(records: Iterable[BaseModel], model: type[BaseModel]) -> pl.DataFrame:
    """Rows of one model with a schema fixed by the model, not inferred from the rows: batches written
    separately (or empty ones) always agree. Nested fields are JSON strings."""
    types_ = {name: _column_type(f.annotation) for name, f in model.model_fields.items()}
    schema = {name: t or pl.String() for name, t in types_.items()}
    rows = [{k: (getattr(r, k) if types_[k] is not None else _json(getattr(r, k))) for k in types_} for r in records]
    return pl.DataFrame(rows, schema=schema)


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


def package_versions() -> dict[str, str]:
    versions = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


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



def records_frame_dicts(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return _frame(rows)
