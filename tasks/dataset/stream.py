"""The dialogs stage's output, written batch by batch as each batch is decided, so a run's memory does not
grow with its number of dialogs.

Every decided dialog (accepted or rejected) goes to ``tables/dialogs.parquet`` and its verdict to
``tables/verdicts.parquet``; the accepted ones go at once to ``dataset/toolace.jsonl``,
``dataset/openai.jsonl`` and the parquet shards. What the end of the run needs (the expectation suite, the
dataset card, the charts, the verification report) is kept as small per-row figures only
(:class:`DatasetTally`), never the dialogs themselves.

Shards are written as ``data/train-NNNNN.parquet`` while the run goes and renamed to the Hugging Face
layout ``data/train-NNNNN-of-MMMMM.parquet`` when the stream closes (the count is known only then).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl

from schemas.frames import VERDICT_SCHEMA, DialogsFrame, verdicts_frame
from schemas.records import Dialog
from schemas.suites import SuiteBounds
from tasks.dataset import rows
from tasks.dataset.card import ROWS_PER_SHARD, SHARD_SCHEMA, ToolTally, shard_row, shard_table
from tasks.formats.chat_templates import RowSample
from tasks.storage import writers
from tasks.storage.run_storage import with_retries
from tasks.verification.expectations import sample_records
from tasks.verification.published_format import chat_convention_problems


@dataclass
class VerificationTally:
    """Every failure of both verification layers counted per check (a dialog may fail several), over the
    dialogs that reached verification; fed one batch of verdict rows at a time."""

    checked: int = 0
    passed: int = 0
    rules_passed: int = 0
    model_judged: int = 0
    per_check: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, verdicts: list[dict[str, Any]]) -> None:
        for row in verdicts:
            if not row["generated"]:
                continue
            self.checked += 1
            self.passed += bool(row["passed"])
            self.rules_passed += bool(row["rules_passed"])
            self.model_judged += bool(row["model_judged"])
            for failure in row["failures"]:
                entry = self.per_check.setdefault(failure["check"], {"layer": failure["layer"], "dialogs": 0})
                entry["dialogs"] += 1

    def report(self) -> dict[str, Any]:
        return {"dialogs_checked": self.checked, "passed": self.passed, "rules_passed": self.rules_passed,
                "model_judged": self.model_judged,
                "failures_per_check": dict(sorted(self.per_check.items(), key=lambda kv: -kv[1]["dialogs"]))}


@dataclass
class DatasetTally:
    """What the end of a run needs of the accepted dialogs: counts per type and domain, their losses, and
    the expectation suite's per-row records (a few scalars each, see
    :func:`tasks.verification.expectations.sample_records`) with the call problems of the rows that have any."""

    generated: int = 0
    accepted: int = 0
    types: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    losses: list[float] = field(default_factory=list)
    suite_records: list[dict[str, Any]] = field(default_factory=list)
    suite_problems: dict[int, list[str]] = field(default_factory=dict)
    chat_problems: dict[int, list[str]] = field(default_factory=dict)  # chat-convention problems by record
    chat_sample: RowSample = field(default_factory=lambda: RowSample(0))  # shard rows for the template check
    tools: ToolTally = field(default_factory=ToolTally)  # tools by source, tool turns executed or simulated

    def loss_summary(self) -> dict[str, Any]:
        losses = sorted(self.losses)
        if not losses:
            return {"count": 0}

        def quantile(q: float) -> float:
            return round(losses[min(len(losses) - 1, int(q * (len(losses) - 1) + 0.5))], 4)

        return {"count": len(losses), "min": round(losses[0], 4), "p25": quantile(0.25), "median": quantile(0.5),
                "p75": quantile(0.75), "max": round(losses[-1], 4), "mean": round(sum(losses) / len(losses), 4)}


DIALOGS_VALIDATED_TOGETHER = 256  # rows of the dialogs table validated in one pandera call (see TableWriter)


class _ShardWriter:
    """The dataset's parquet shards, ``rows_per_shard`` accepted dialogs each, written batch by batch (one row
    group per batch): a shard is closed as soon as it is full, and only the current batch is in memory."""

    def __init__(self, dataset_url: str, rows_per_shard: int) -> None:
        self.dataset_url, self.rows_per_shard = dataset_url, rows_per_shard
        self.paths: list[str] = []  # temporary names, relative to dataset_url
        self._shard: writers.ParquetAppender | None = None
        self._rows = 0

    def _start(self) -> writers.ParquetAppender:
        if self._shard is None:
            path = f"data/train-{len(self.paths):05d}.parquet"
            self._shard = writers.ParquetAppender(f"{self.dataset_url}/{path}", SHARD_SCHEMA)
            self.paths.append(path)
            self._rows = 0
        return self._shard

    def _finish(self) -> None:
        if self._shard is not None:
            self._shard.close()
        self._shard = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        while rows:
            room = self.rows_per_shard - self._rows if self._shard is not None else self.rows_per_shard
            part, rows = rows[:room], rows[room:]
            self._start().write_table(shard_table(part))
            self._rows += len(part)
            if self._rows >= self.rows_per_shard:
                self._finish()

    def close(self) -> None:
        """Finish the open shard; a run without accepted dialogs still gets one (empty) shard."""
        if not self.paths:
            self._start()
        self._finish()


class DialogStream:
    """Writes each decided batch of dialogs to the run folder as it comes (see the module docstring).

    Use as a context manager; :attr:`shards` holds the final shard paths (relative to ``dataset/``) once
    it is closed. Only the batch being written is held in memory, and a seeded sample of at most
    ``template_rows`` shard rows (``messages`` and ``tools``) for the chat-template check at the end.
    ``publish_reasoning`` puts the turns' ``reasoning_content`` on the shards' assistant messages."""

    def __init__(self, run_url: str, bounds: SuiteBounds, rows_per_shard: int = ROWS_PER_SHARD, *,
                 publish_reasoning: bool = False, template_rows: int = 0, seed: int = 0) -> None:
        self.run_url, self.dataset_url = run_url, f"{run_url}/dataset"
        self.bounds = bounds
        self.publish_reasoning = publish_reasoning
        self.tally = DatasetTally(chat_sample=RowSample(template_rows, seed))
        self.verification = VerificationTally()
        self.shards: list[str] = []
        self._shards = _ShardWriter(self.dataset_url, rows_per_shard)
        self._dialogs = writers.TableWriter(f"{run_url}/tables/dialogs.parquet", Dialog, DialogsFrame, "dialogs",
                                            validate_rows=DIALOGS_VALIDATED_TOGETHER)
        self._verdicts = writers.ParquetAppender(f"{run_url}/tables/verdicts.parquet",
                                                 pl.DataFrame(schema=VERDICT_SCHEMA).to_arrow().schema)
        self._toolace = writers.JsonlAppender(f"{self.dataset_url}/toolace.jsonl")
        self._openai = writers.JsonlAppender(f"{self.dataset_url}/openai.jsonl")
        self._sharegpt = writers.JsonlAppender(f"{self.dataset_url}/sharegpt.jsonl")

    def write(self, decided: list[Dialog], verdicts: list[dict[str, Any]]) -> None:
        """One decided batch: every dialog and verdict to the tables, the accepted dialogs to the dataset."""
        self._dialogs.write(decided)
        if verdicts:  # validated against VerdictsFrame batch by batch
            self._verdicts.write_table(verdicts_frame(verdicts).to_arrow())
        self.verification.add(verdicts)
        accepted = [d for d in decided if d.accepted]
        tally = self.tally
        tally.generated += len(decided)
        samples = [rows.published_sample(d) for d in accepted]  # each dialog converted once for its formats
        toolace_rows = [rows.toolace_row(d, s) for d, s in zip(accepted, samples, strict=True)]
        records, problems = sample_records(toolace_rows, self.bounds)
        offset = len(tally.suite_records)
        tally.suite_records.extend(records)
        tally.suite_problems.update({offset + i: found for i, found in problems.items()})
        self._toolace.write(toolace_rows)
        self._openai.write([rows.openai_row(d) for d in accepted])
        self._sharegpt.write([rows.sharegpt_row(d, s) for d, s in zip(accepted, samples, strict=True)])
        shard_rows = [shard_row(d, self.publish_reasoning, t) for d, t in zip(accepted, toolace_rows, strict=True)]
        for i, row in enumerate(shard_rows):
            found = chat_convention_problems(row)
            if found:
                tally.chat_problems[offset + i] = found
                records[i]["chat_format_ok"] = False
            tally.chat_sample.add(offset + i, {"id": row["id"], "messages": row["messages"], "tools": row["tools"]})
        for dialog in accepted:
            tally.accepted += 1
            tally.types[dialog.dialog_type] += 1
            tally.domains[dialog.domain] += 1
            tally.tools.add(dialog)
            if dialog.complexity_loss is not None:
                tally.losses.append(dialog.complexity_loss)
        self._shards.write(shard_rows)

    def close(self) -> None:
        """Finish every file; shards get their final ``-of-MMMMM`` names (one empty shard for no rows)."""
        for writer in (self._dialogs, self._verdicts, self._toolace, self._openai, self._sharegpt, self._shards):
            writer.close()
        fs, root = fsspec.core.url_to_fs(self.dataset_url)
        count = len(self._shards.paths)
        for number, path in enumerate(self._shards.paths):
            final = f"data/train-{number:05d}-of-{count:05d}.parquet"
            with_retries(lambda s=path, f=final: fs.mv(f"{root}/{s}", f"{root}/{f}"), f"renaming shard {path}")
            self.shards.append(final)

    def __enter__(self) -> DialogStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # the run failed: finish what can be finished (the tables keep the batches already decided)
        for writer in (self._dialogs, self._verdicts, self._toolace, self._openai, self._sharegpt, self._shards):
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the run's own error is the one to report
                continue
