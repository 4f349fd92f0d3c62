"""``toolace verify``: both verification layers over anyone's dataset, streamed, one verdict per sample.

Samples are read one batch at a time (:func:`tasks.formats.dataset_formats.read_samples`), scored by the rule layer
and, with ``checks="all"``, the samples the rules passed are judged by the LLM judges (a sample the rules
already failed is not sent: it cannot pass, and judging it would only cost requests). Verdicts are
written in input order as JSONL: ``{"index", "id", "passed", "failures": [{"check", "reason"}]}``.
A sample that could not be read (truncated JSON, no tools ...) gets a failed verdict with the reason; the
run over the other samples always completes.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal, TextIO

import fsspec
from pydantic_core import PydanticSerializationError

from schemas.samples import Sample, Verdict
from tasks.formats.dataset_formats import read_samples
from tasks.verification.model_judges import judge_samples
from tasks.verification.rules import RuleLimits, score_sample, verdict
from toolace.llm.gateway import GatewaySettings, LLMGateway

Checks = Literal["rules", "all"]
BATCH = 256


def _batches(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _judge(batch: list[Sample], verdicts: list[Verdict], gateway: LLMGateway, votes: int) -> None:
    todo = [(s, v) for s, v in zip(batch, verdicts, strict=True) if v.passed]
    outcomes = await judge_samples([s for s, _ in todo], gateway, votes)
    for (_, v), outcome in zip(todo, outcomes, strict=True):
        v.failures.extend(outcome.failures)
        v.passed = not v.failures


def verdict_line(v: Verdict) -> str:
    """A verdict as one JSON line. Text holding a lone surrogate (the JSON escape ``"\\ud800"`` of the input reads
    as one; UTF-8 has no encoding for it) is written as that escape, so the verdict is still written."""
    try:
        return v.model_dump_json()
    except PydanticSerializationError:
        return json.dumps(v.model_dump(), ensure_ascii=True, separators=(",", ":"))


def verify_stream(samples: Iterator[Sample], out: TextIO, checks: Checks = "rules",
                  settings: GatewaySettings | None = None, limits: RuleLimits | None = None,
                  votes: int = 1, batch_size: int = BATCH) -> dict[str, Any]:
    """Write one verdict line per sample to ``out`` and return the summary."""
    if checks == "all" and settings is None:
        raise ValueError("checks='all' needs an LLM endpoint")
    limits = limits or RuleLimits()
    summary: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    total = passed = 0

    async def run() -> None:
        nonlocal total, passed
        gateway = LLMGateway(settings) if checks == "all" and settings is not None else None
        try:
            for batch in _batches(samples, batch_size):
                verdicts = [verdict(s, score_sample(s, limits)) for s in batch]
                if gateway is not None:
                    await _judge(batch, verdicts, gateway, votes)
                for sample, v in zip(batch, verdicts, strict=True):
                    out.write(verdict_line(v) + "\n")
                    total += 1
                    passed += v.passed
                    formats[sample.format or "undetected"] += 1
                    summary.update({f.check for f in v.failures})
        finally:
            if gateway is not None:
                await gateway.aclose()

    asyncio.run(run())
    return {"samples": total, "passed": passed, "failed": total - passed, "formats": dict(formats),
            "failures_per_check": dict(summary.most_common())}


def verify_dataset(url: str, fmt: str = "auto", output: str | None = None, checks: Checks = "rules",
                   settings: GatewaySettings | None = None, limits: RuleLimits | None = None,
                   votes: int = 1, out: TextIO | None = None) -> dict[str, Any]:
    """Verify a dataset file (JSON, JSONL, parquet; local or fsspec URL). Verdicts go to ``output`` (a
    path or URL) or to ``out``. Raises UserError only when the input cannot be read at all."""
    samples = read_samples(url, fmt)
    if output is None:
        if out is None:
            raise ValueError("give output or out")
        return verify_stream(samples, out, checks, settings, limits, votes)
    with fsspec.open(output, "w", encoding="utf-8") as handle:
        return verify_stream(samples, handle, checks, settings, limits, votes)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"samples {summary['samples']}, passed {summary['passed']}, failed {summary['failed']}"
             f" (formats: {json.dumps(summary['formats'])})"]
    lines += [f"  {check}: {count}" for check, count in summary["failures_per_check"].items()]
    return lines
