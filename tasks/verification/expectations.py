"""Great Expectations checks on a published dataset, before it is promoted; Data Docs written next to it.

:func:`check_published` takes the rows as published in ToolACE format (``tasks.dataset.rows.toolace_row``: ``id``,
``system``, ``conversations``, ``meta``; another format can be named with ``fmt``: every derived column comes
from the format-neutral :class:`schemas.samples.Sample` the row is read into) and validates two pandas frames
with the suites of :mod:`schemas.suites`:

- ``samples``, one row per sample: ``id``, ``dialog_type`` (from ``meta``), ``n_tools`` (tools offered),
  ``n_turns`` (the Sample's turns: each tool result counts as one, as the rule layer counts them),
  ``max_assistant_chars`` (longest assistant *text* answer; call turns are not counted, as in the rule
  layer's ``response_length_v1``), ``empty_turns`` (user/assistant turns with blank text and no call, tool
  turns with blank content), ``calls_valid``, ``chat_format_ok`` (the row's chat ``messages``/``tools`` follow
  the Hugging Face chat convention, :func:`tasks.verification.published_format.chat_convention_problems`, checked by the
  writer on every shard row) and ``chat_templates_ok`` (the row, if sampled, renders through the real chat
  templates of the listed families and the target model: :class:`tasks.formats.chat_templates.TemplateGate`, run by
  :func:`check_records`; the failing family, row and error are in the ``details`` of ``gx_chat_templates_v1``,
  the per-family report, with the rows a family cannot take at all, in ``SuiteOutcome.chat_templates``).
- ``summary``, one row: ``generated``, ``accepted``, ``rows``, ``acceptance_rate`` (accepted / generated; 0 when
  nothing was generated) and ``share_<type>`` for every dialog type.

``calls_valid`` re-runs the rule layer (``sample_from_row`` then ``score_sample``) on the published row and
keeps only the function-call executability checks (:data:`CALL_CHECKS`: the five of the paper's "executable
call" group plus ``argument_length_v1``), and the read problems that leave the calls uncheckable
(:data:`UNREADABLE_CHECKS`). Other rule failures (length, empty turns, type shape ...) are covered by their
own expectations or belong to the verification stage; requiring "no rule failure at all" would also fail rows
on what the ToolACE format cannot carry (result schemas, text next to calls). The failing checks and reasons
of each sample are reported in the ``details`` of ``gx_calls_valid_v1``.

Data Docs: GX's HTML site (index, the two suites, the two validation results) is built in a temporary folder
and copied with fsspec to ``docs_dir`` (a local path or any fsspec URL, e.g. ``s3://bucket/run/dataset/
data_docs``); an earlier site there (one with an ``index.html``) is removed first. A failure to build or copy
the docs is reported in ``data_docs_error`` and never changes ``success``.

Great Expectations is imported inside :func:`check_published` (the import takes ~5 s). One check runs at a
time per process (a lock): GX keeps a process-wide "current" Data Context.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import fsspec
from pydantic import BaseModel, Field

from schemas.samples import FormatName, Sample, SampleTurn
from schemas.suites import (
    CALLS_VALID,
    CHAT_FORMAT,
    CHAT_TEMPLATES,
    SAMPLE_COLUMNS,
    SAMPLES_SUITE,
    SUMMARY_BASE_COLUMNS,
    SUMMARY_SUITE,
    SuiteBounds,
    published_dataset_suites,
    share_column,
)
from tasks.formats.dataset_formats import sample_from_row
from tasks.verification.rules import RuleLimits, score_sample
from tasks.verification.template_gate import TemplateGate, TemplateReport

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)
# GX narrates its temporary folders at INFO; its warnings and errors still come through.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

CALL_CHECKS = frozenset({"call_syntax_v1", "tool_name_exists_v1", "required_params_v1", "unknown_params_v1",
                         "argument_values_v1", "argument_length_v1"})
UNREADABLE_CHECKS = frozenset({"sample_json_v1", "sample_fields_v1", "format_detect_v1", "tools_present_v1",
                               "tools_json_v1"})
SITE_NAME = "toolace_dataset"
MISSING_TYPE = "(missing)"  # a row without meta.dialog_type: a value (GX skips nulls) that no type set holds
DETAIL_LIMIT = 20  # ids / values listed per failing expectation
_GX_LOCK = threading.Lock()


class ExpectationOutcome(BaseModel):
    """One expectation's result, under its versioned name."""

    expectation: str = Field(description="Versioned name, e.g. gx_unique_ids_v1")
    suite: str
    success: bool
    observed: Any = Field(None, description="Observed value: the figure itself (row count, share, rate) or, for "
                                            "a per-sample expectation, how many samples failed it")
    details: dict[str, Any] = Field(default_factory=dict,
                                    description="Bounds checked, failing ids and values (at most 20), exception")


class SuiteOutcome(BaseModel):
    success: bool = Field(description="Every expectation of both suites passed")
    results: list[ExpectationOutcome]
    rows: int
    acceptance_rate: float
    data_docs_index: str | None = Field(None, description="Path or URL of the Data Docs index.html")
    data_docs_error: str | None = None
    wall_time_s: float = 0.0
    chat_templates: TemplateReport | None = Field(None, description="The chat-template check, per family")

    @property
    def failed(self) -> list[str]:
        return [r.expectation for r in self.results if not r.success]

    def result(self, expectation: str) -> ExpectationOutcome:
        return next(r for r in self.results if r.expectation == expectation)

    def table(self) -> list[dict[str, Any]]:
        """Flat rows for a Prefect table artifact."""
        return [{"expectation": r.expectation, "suite": r.suite, "success": r.success, "observed": str(r.observed),
                 "details": str(r.details)[:300]} for r in self.results]


# ------------------------------------------------------------------------------------------ derived columns


def _is_empty(turn: SampleTurn) -> bool:
    if turn.role == "tool":
        return not (turn.content or "").strip()
    return not turn.tool_calls and not turn.call_error and not (turn.content or "").strip()


def _call_problems(sample: Sample, limits: RuleLimits) -> list[str]:
    seen: list[str] = []
    for problem in score_sample(sample, limits):
        text = f"{problem.check}: {problem.reason}"
        if (problem.check in CALL_CHECKS or problem.check in UNREADABLE_CHECKS) and text not in seen:
            seen.append(text)
    return seen


def sample_records(rows: list[dict[str, Any]], bounds: SuiteBounds,
                   fmt: FormatName = "toolace") -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    """One record per row with the :data:`schemas.suites.SAMPLE_COLUMNS`, and the call problems of each row
    (by position) that has any."""
    limits = RuleLimits(max_assistant_chars=bounds.max_assistant_chars, max_turns=bounds.max_turns)
    records: list[dict[str, Any]] = []
    problems: dict[int, list[str]] = {}
    for index, row in enumerate(rows):
        sample = sample_from_row(row, fmt, index)
        raw_id = row.get("id") if isinstance(row, dict) else None
        dialog_type = sample.dialog_type or sample.meta.get("dialog_type")
        found = _call_problems(sample, limits)
        if found:
            problems[index] = found
        records.append({
            "id": str(raw_id) if raw_id is not None and str(raw_id).strip() else None,
            "dialog_type": dialog_type if isinstance(dialog_type, str) else MISSING_TYPE,
            "n_tools": len(sample.tools),
            "n_turns": len(sample.turns),
            "max_assistant_chars": max((len(t.content or "") for t in sample.turns if t.role == "assistant"),
                                       default=0),
            "empty_turns": sum(_is_empty(t) for t in sample.turns),
            "calls_valid": not found,
            "chat_format_ok": True,  # set by the writer of the chat rows (tasks.dataset.stream)
            "chat_templates_ok": True,  # set by check_records' template check
        })
    return records, problems


def summary_record(records: list[dict[str, Any]], acceptance: Mapping[str, int],
                   bounds: SuiteBounds) -> dict[str, Any]:
    """The one-row summary: counts, acceptance rate and each dialog type's share of the rows."""
    generated, accepted = int(acceptance.get("generated", 0)), int(acceptance.get("accepted", 0))
    rows = len(records)
    counts = Counter(r["dialog_type"] for r in records)
    summary: dict[str, Any] = {"generated": generated, "accepted": accepted, "rows": rows,
                               "acceptance_rate": accepted / generated if generated > 0 else 0.0}
    for dialog_type in bounds.dialog_types():
        summary[share_column(dialog_type)] = counts.get(dialog_type, 0) / rows if rows else 0.0
    return summary


def _frames(records: list[dict[str, Any]], summary: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    samples = pd.DataFrame({column: pd.Series([r[column] for r in records], dtype=dtype)
                            for column, dtype in SAMPLE_COLUMNS.items()})
    columns = list(SUMMARY_BASE_COLUMNS) + [c for c in summary if c not in SUMMARY_BASE_COLUMNS]
    return samples, pd.DataFrame([{c: summary[c] for c in columns}])


# ------------------------------------------------------------------------------------------------- results


def _plain(value: Any) -> Any:
    """numpy scalars and nested containers as plain JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


_BOUND_KEYS = ("min_value", "max_value", "value_set")


def _exception_message(info: Any) -> str | None:
    """GX's exception_info is one ``{"raised_exception", "exception_message"}`` or a dict of them by metric."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    messages = [m for m in (_exception_message(v) for v in info.values()) if m]
    return "; ".join(messages) or None


def _outcome(result: Any, suite: str, summary: dict[str, Any], problems: dict[int, list[str]],
             ids: list[str | None], chat: dict[str, dict[int, list[str]]] | None = None) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    name = (config.meta or {}).get("name") or config.type
    body: dict[str, Any] = dict(result.result or {})
    details: dict[str, Any] = {k: _plain(kwargs[k]) for k in _BOUND_KEYS if k in kwargs}
    column = kwargs.get("column")
    if suite == SUMMARY_SUITE and column in summary:
        observed: Any = summary[column]
    elif "observed_value" in body:
        observed = _plain(body["observed_value"])
    else:
        observed = _plain(body.get("unexpected_count", 0))
    index_list = body.get("partial_unexpected_index_list")
    if not result.success and suite == SAMPLES_SUITE and index_list:
        details["unexpected_ids"] = [_plain(i.get("id") if isinstance(i, dict) else i) for i in index_list]
    if not result.success and body.get("partial_unexpected_list") and suite == SAMPLES_SUITE:
        details["unexpected_values"] = _plain(body["partial_unexpected_list"])
    if name == CALLS_VALID and problems:
        details["call_problems"] = {str(ids[i] if ids[i] is not None else f"#{i}"): reasons
                                    for i, reasons in list(problems.items())[:DETAIL_LIMIT]}
    for expectation, key in ((CHAT_FORMAT, "chat_format_problems"), (CHAT_TEMPLATES, "template_problems")):
        found = (chat or {}).get(expectation)
        if name == expectation and found:
            details[key] = {str(ids[i] if ids[i] is not None else f"#{i}"): reasons
                            for i, reasons in list(found.items())[:DETAIL_LIMIT]}
    message = _exception_message(result.exception_info)
    if message:
        details["exception"] = message
    return ExpectationOutcome(expectation=name, suite=suite, success=bool(result.success), observed=_plain(observed),
                              details=details)


# --------------------------------------------------------------------------------------------------- GX run


def prefetch_great_expectations() -> threading.Thread:
    """Imports Great Expectations in a background thread (about 4 s of CPU here): a run starts it when its
    dialogs start, which mostly wait on the LLM, so the suite at publish does not wait for the import.
    A failed import is only logged: the suite's own import then raises it where it is needed."""

    def load() -> None:
        try:
            import great_expectations  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - reported again, with its traceback, by the suite's import
            logger.debug("prefetching great_expectations failed: %s", exc)

    thread = threading.Thread(target=load, name="toolace-prefetch-gx", daemon=True)
    thread.start()
    return thread


PREFETCH_JOIN_S = 120.0  # the longest a run waits, at its end, for the prefetch thread's import


@contextlib.contextmanager
def great_expectations_prefetched(join_timeout_s: float = PREFETCH_JOIN_S) -> Iterator[threading.Thread]:
    """:func:`prefetch_great_expectations` for a span of a run: when the span ends the import thread is waited for
    (at most ``join_timeout_s``), so no import outlives the run. Two threads importing at once can each meet a
    module the other has half imported (Python breaks the circular wait that way), which fails an import with
    "cannot import name"; a run starts it once its CPU-bound first stages (and their imports) are done."""
    thread = prefetch_great_expectations()
    try:
        yield thread
    finally:
        thread.join(timeout=join_timeout_s)


def _site_config(base_directory: str) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": base_directory},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _validate(samples: pd.DataFrame, summary: pd.DataFrame, bounds: SuiteBounds,
              docs_build_dir: str | None) -> tuple[dict[str, Any], str | None]:
    """Run both suites in a fresh ephemeral context; build the Data Docs into ``docs_build_dir``.
    Returns the validation results by suite name and the docs error (None when built or not asked)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars on the CLI's stderr
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)  # the ephemeral context's default temp site: never built
    source = context.data_sources.add_pandas("published_dataset")
    suites = published_dataset_suites(bounds, rows=len(samples))
    formats: dict[str, dict[str, Any]] = {
        "samples": {"result_format": "SUMMARY", "partial_unexpected_count": DETAIL_LIMIT,
                    "unexpected_index_column_names": ["id"]},
        "summary": {"result_format": "SUMMARY", "partial_unexpected_count": DETAIL_LIMIT},
    }
    results: dict[str, Any] = {}
    for frame_name, frame in (("samples", samples), ("summary", summary)):
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(frame_name)
        suite = context.suites.add(suites[frame_name])
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{frame_name}_validation", data=batch, suite=suite))
        results[suite.name] = definition.run(batch_parameters={"dataframe": frame},
                                             result_format=formats[frame_name])
    docs_error = None
    if docs_build_dir is not None:
        try:
            context.add_data_docs_site(SITE_NAME, _site_config(docs_build_dir))  # type: ignore[arg-type]
            context.build_data_docs(site_names=[SITE_NAME])
        except Exception as exc:  # the docs are a report: a rendering failure must not hide the verdict
            logger.warning("Data Docs could not be built: %s", exc)
            docs_error = f"build failed: {type(exc).__name__}: {exc}"
    return results, docs_error


def _publish_docs(local_dir: str, docs_dir: str) -> str:
    """Copy a built site to ``docs_dir`` (any fsspec URL), replacing an earlier site; returns the index."""
    fs, root = fsspec.core.url_to_fs(docs_dir)
    root = root.rstrip("/")
    if fs.exists(f"{root}/index.html"):
        fs.rm(root, recursive=True)
    base = docs_dir.rstrip("/")
    for folder, _, files in os.walk(local_dir):
        for file in files:
            local = os.path.join(folder, file)
            relative = os.path.relpath(local, local_dir).replace(os.sep, "/")
            with open(local, "rb") as source, fsspec.open(f"{base}/{relative}", "wb") as target:
                shutil.copyfileobj(source, target)
    index = f"{base}/index.html"
    return os.path.abspath(index) if "://" not in docs_dir else index


def check_published(rows: list[dict[str, Any]], acceptance: Mapping[str, int], bounds: SuiteBounds,
                    docs_dir: str | None, fmt: FormatName = "toolace") -> SuiteOutcome:
    """Validate a published dataset with both suites of :mod:`schemas.suites`; write the Data Docs to
    ``docs_dir`` (None: no docs). ``acceptance`` is ``{"generated": int, "accepted": int}`` (the dialogs the
    run generated and accepted). Never raises for bad rows: an empty or broken dataset fails its expectations.
    """
    started = time.perf_counter()
    records, problems = sample_records(rows, bounds, fmt)
    return check_records(records, problems, acceptance, bounds, docs_dir, started)


def check_records(records: list[dict[str, Any]], problems: dict[int, list[str]], acceptance: Mapping[str, int],
                  bounds: SuiteBounds, docs_dir: str | None, started: float | None = None, *,
                  chat_problems: dict[int, list[str]] | None = None,
                  chat_rows: list[tuple[int, dict[str, Any]]] | None = None,
                  templates: TemplateGate | None = None) -> SuiteOutcome:
    """:func:`check_published` on the rows' records (from :func:`sample_records`, possibly gathered batch by
    batch while the rows were written, so the rows themselves need not be held).

    ``chat_problems``: the chat-convention problems of the rows that have any (by record index; their records
    say ``chat_format_ok: False``). ``chat_rows``: ``(record index, {"id", "messages", "tools"})`` of the rows
    to render through ``templates`` (:class:`tasks.formats.chat_templates.TemplateGate`); a row that a template cannot
    render fails ``gx_chat_templates_v1`` naming the family and the error. Raises the gate's one-line errors
    (no templates folder; an explicitly chosen target model whose template cannot render tools)."""
    started = time.perf_counter() if started is None else started
    report: TemplateReport | None = None
    template_problems: dict[int, list[str]] = {}
    if templates is not None and chat_rows is not None:
        report, template_problems = templates.check(chat_rows, published=len(records))
        for index in template_problems:
            records[index]["chat_templates_ok"] = False
    chat = {CHAT_FORMAT: chat_problems or {}, CHAT_TEMPLATES: template_problems}
    summary = summary_record(records, acceptance, bounds)
    samples_frame, summary_frame = _frames(records, summary)
    ids = [r["id"] for r in records]
    data_docs_index: str | None = None
    docs_error: str | None = None
    with tempfile.TemporaryDirectory(prefix="toolace-data-docs-") as build_dir, _GX_LOCK:
        results, docs_error = _validate(samples_frame, summary_frame, bounds,
                                        build_dir if docs_dir is not None else None)
        if docs_dir is not None and docs_error is None:
            try:
                data_docs_index = _publish_docs(build_dir, docs_dir)
            except Exception as exc:  # e.g. object storage unreachable: the verdict still stands
                logger.warning("Data Docs could not be copied to %s: %s", docs_dir, exc)
                docs_error = f"copy to {docs_dir} failed: {type(exc).__name__}: {exc}"
    outcomes = [_outcome(r, suite, summary, problems, ids, chat)
                for suite in (SAMPLES_SUITE, SUMMARY_SUITE) for r in results[suite].results]
    order = {name: i for i, name in enumerate(bounds.expectation_names())}
    outcomes.sort(key=lambda o: order.get(o.expectation, len(order)))
    return SuiteOutcome(success=all(o.success for o in outcomes), results=outcomes, rows=len(records),
                        acceptance_rate=summary["acceptance_rate"], data_docs_index=data_docs_index,
                        data_docs_error=docs_error, wall_time_s=round(time.perf_counter() - started, 3),
                        chat_templates=report)
