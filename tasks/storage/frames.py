"""Records as polars frames: a schema fixed by the record model (batches written apart always agree), nested
values as JSON strings."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from typing import Any

import polars as pl
from pydantic import BaseModel


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



def records_frame_dicts(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return _frame(rows)
