"""pandera (polars) models of the stage tables, checked on data, not only dtypes.

Each table written by a run is validated at its stage boundary with :func:`validate_table`. A failure
raises :class:`TableValidationError` naming the table, and for each failing cell the column, row and
check, so a bad batch stops the stage instead of landing in the dataset.
"""

from __future__ import annotations

import json
import re

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from schemas.records import DIALOG_TYPES, SEGMENT_TYPES

# A check name carries its version (dolma-style): ``required_params_v1``.
VERSIONED_CHECK = r"^[a-z][a-z0-9_]*_v[0-9]+$"
STATUSES = ["accepted", "rejected"]
MAX_LISTED_FAILURES = 10


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class TableValidationError(ValueError):
    """A stage table broke its schema: which table, column, row and check."""

    def __init__(self, table: str, failures: list[dict[str, object]]) -> None:
        self.table, self.failures = table, failures
        lines = [f"row {f['row']}, column {f['column']}: check {f['check']} failed on {_short(f['value'])}"
                 for f in failures[:MAX_LISTED_FAILURES]]
        more = len(failures) - MAX_LISTED_FAILURES
        super().__init__(f"table {table} breaks its schema ({len(failures)} failure(s)):\n  "
                         + "\n  ".join(lines) + (f"\n  ... and {more} more" if more > 0 else ""))


def _outcome_consistent(data: pa.PolarsData) -> pl.LazyFrame:
    """A rejected row names its versioned check and a reason; an accepted one names no rejecting check."""
    rejected = pl.col("status") == "rejected"
    return data.lazyframe.select(
        pl.when(rejected)
        .then(pl.col("rejected_by").str.contains(VERSIONED_CHECK).fill_null(False) & pl.col("reason").is_not_null())
        .otherwise(pl.col("rejected_by").is_null())
    )


def _json_list(column: str, non_empty_when_accepted: bool) -> pl.Expr:
    """The column holds a JSON array (non-empty on accepted rows when asked)."""

    def valid(text: str | None, accepted: bool) -> bool:
        try:
            value = json.loads(text or "")
        except json.JSONDecodeError:
            return False
        return isinstance(value, list) and (bool(value) or not (accepted and non_empty_when_accepted))

    return pl.struct(column, "status").map_elements(
        lambda row: valid(row[column], row["status"] == "accepted"), return_dtype=pl.Boolean)


class OutcomeFrame(pa.DataFrameModel):
    status: str = pa.Field(isin=STATUSES)
    rejected_by: str = pa.Field(nullable=True, str_matches=VERSIONED_CHECK)
    reason: str = pa.Field(nullable=True)
    raw_outputs: list[str] = pa.Field()

    @pa.dataframe_check
    def rejection_named(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _outcome_consistent(data)


class DocumentsFrame(OutcomeFrame):
    """tables/documents.parquet: every corpus document, read or not."""

    doc_id: str = pa.Field(str_length={"min_value": 1})
    source: str = pa.Field(str_length={"min_value": 1})
    title: str = pa.Field()
    chars: int = pa.Field(ge=0)
    heuristic_score: float = pa.Field(nullable=True, in_range={"min_value": 0.0, "max_value": 1.0})
    embedding_score: float = pa.Field(nullable=True, in_range={"min_value": -1.0001, "max_value": 1.0001})
    relevance_score: float = pa.Field(nullable=True, in_range={"min_value": -1.0001, "max_value": 1.0001})
    decided_by: str = pa.Field(nullable=True, str_matches=VERSIONED_CHECK)
    domain: str = pa.Field(nullable=True)
    subdomains: list[str] = pa.Field()
    functionalities: list[str] = pa.Field()
    reused_from: str = pa.Field(nullable=True)

    @pa.dataframe_check
    def accepted_has_domain(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("status") != "accepted") | pl.col("domain").is_not_null())

    class Config:
        strict = True


class TreeNodesFrame(pa.DataFrameModel):
    """tables/context_tree_nodes.parquet."""

    node_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    parent_id: str = pa.Field(nullable=True)
    name: str = pa.Field(str_length={"min_value": 1})
    level: int = pa.Field(ge=0)
    is_functionality: bool = pa.Field()
    doc_ids: list[str] = pa.Field()
    aliases: list[str] = pa.Field()

    @pa.dataframe_check
    def roots_have_no_parent(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("level") == 0) == pl.col("parent_id").is_null())

    @pa.dataframe_check
    def parent_exists(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ids = data.lazyframe.select("node_id").collect()["node_id"]
        return data.lazyframe.select(pl.col("parent_id").is_null() | pl.col("parent_id").is_in(ids.implode()))

    class Config:
        strict = True


class APIsFrame(OutcomeFrame):
    """tables/apis.parquet: every synthesized API, admitted or not. Schemas are JSON strings."""

    api_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    name: str = pa.Field()
    description: str = pa.Field()
    parameters: str = pa.Field()
    result_schema: str = pa.Field()
    domain: str = pa.Field()
    node_ids: list[str] = pa.Field()
    operators: list[str] = pa.Field()
    example_api_id: str = pa.Field(nullable=True)

    @pa.dataframe_check
    def accepted_is_named(cls, data: pa.PolarsData) -> pl.LazyFrame:
        named = (pl.col("name").str.len_chars() > 0) & (pl.col("description").str.len_chars() > 0)
        return data.lazyframe.select((pl.col("status") != "accepted") | named)

    @pa.dataframe_check
    def accepted_names_unique(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("status") != "accepted")
                                     | (pl.len().over("name", "status") == 1))

    @pa.dataframe_check
    def schemas_are_objects(cls, data: pa.PolarsData) -> pl.LazyFrame:
        def is_object(text: str | None) -> bool:
            try:
                return isinstance(json.loads(text or ""), dict)
            except json.JSONDecodeError:
                return False

        return data.lazyframe.select(
            pl.col("parameters").map_elements(is_object, return_dtype=pl.Boolean)
            & pl.col("result_schema").map_elements(is_object, return_dtype=pl.Boolean))

    class Config:
        strict = True


class DialogsFrame(OutcomeFrame):
    """tables/dialogs.parquet: every dialog, accepted or rejected. Tools, turns, losses and guidance
    are JSON strings."""

    dialog_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    dialog_type: str = pa.Field(isin=list(DIALOG_TYPES))
    domain: str = pa.Field()
    tools: str = pa.Field()
    turns: str = pa.Field()
    segments: list[str] = pa.Field()
    apis_used: list[str] = pa.Field()
    complexity_loss: float = pa.Field(nullable=True, ge=0.0)
    losses: str = pa.Field()
    guidance_rounds: int = pa.Field(ge=0)
    guidance: str = pa.Field(nullable=True)
    decision_samples: int = pa.Field(ge=1)

    @pa.dataframe_check
    def accepted_has_turns(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_json_list("turns", non_empty_when_accepted=True))

    @pa.dataframe_check
    def tools_are_listed(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_json_list("tools", non_empty_when_accepted=True))

    @pa.dataframe_check
    def segments_known(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("segments").list.eval(pl.element().is_in(list(SEGMENT_TYPES))).list.all())

    @pa.dataframe_check
    def rounds_match_losses(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """One loss per round: the first version plus each rewrite (when any loss was computed)."""
        def agrees(row: dict[str, object]) -> bool:
            losses = json.loads(str(row["losses"]))
            return not losses or len(losses) == int(row["guidance_rounds"]) + 1  # type: ignore[call-overload]

        return data.lazyframe.select(pl.struct("losses", "guidance_rounds").map_elements(
            agrees, return_dtype=pl.Boolean))

    class Config:
        strict = True


class VerdictsFrame(pa.DataFrameModel):
    """tables/verdicts.parquet: one row per dialog, every failure of both layers (JSON list)."""

    dialog_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    generated: bool = pa.Field()
    passed: bool = pa.Field()
    rules_passed: bool = pa.Field()
    model_judged: bool = pa.Field()
    failures: str = pa.Field()

    @pa.dataframe_check
    def passed_means_no_failure(cls, data: pa.PolarsData) -> pl.LazyFrame:
        def agrees(row: dict[str, object]) -> bool:
            failures = json.loads(str(row["failures"]))
            names_ok = all(isinstance(f, dict) and re.fullmatch(VERSIONED_CHECK, str(f.get("check", "")))
                           and f.get("reason") for f in failures)
            return names_ok and (not row["passed"] or not failures) and (row["generated"] or not row["passed"])

        return data.lazyframe.select(pl.struct("failures", "passed", "generated").map_elements(
            agrees, return_dtype=pl.Boolean))

    class Config:
        strict = True


VERDICT_SCHEMA = {"dialog_id": pl.String, "generated": pl.Boolean, "passed": pl.Boolean, "rules_passed": pl.Boolean,
                  "model_judged": pl.Boolean, "failures": pl.String}


def verdicts_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """The verdict rows with a fixed schema (failures as a JSON list), validated."""
    frame = pl.DataFrame([{**r, "failures": json.dumps(r["failures"], ensure_ascii=False)} for r in rows],
                         schema=VERDICT_SCHEMA)
    return validate_table(frame, VerdictsFrame, "verdicts")


def _failure_rows(error: SchemaErrors | SchemaError) -> list[dict[str, object]]:
    cases = getattr(error, "failure_cases", None)
    if not isinstance(cases, pl.DataFrame):
        return [{"row": None, "column": getattr(error, "column_name", None), "check": str(error), "value": None}]
    return [{"row": c.get("index"), "column": c.get("column") or "(row)", "check": c.get("check"),
             "value": c.get("failure_case")} for c in cases.to_dicts()]


def validate_table(frame: pl.DataFrame, model: type[pa.DataFrameModel], table: str) -> pl.DataFrame:
    """Validate a collected frame (data checks included); raise TableValidationError naming the
    table and, for each failure, its column, row and check."""
    try:
        return model.validate(frame, lazy=True)
    except (SchemaErrors, SchemaError) as error:
        raise TableValidationError(table, _failure_rows(error)) from None
