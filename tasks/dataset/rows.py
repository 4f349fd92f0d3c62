"""One accepted dialog as a published row: ToolACE's format, LLaMA-Factory's ShareGPT and OpenAI's fine-tuning
format (each through the converter's writers, so the dataset and ``toolace convert`` agree)."""

from __future__ import annotations

from typing import Any

from schemas.environments import AgenticDialog
from schemas.records import Dialog
from schemas.samples import Sample
from tasks.formats.call_format import openai_example
from tasks.formats.dataset_formats import row_from_sample
from tasks.verification.rules import sample_from_dialog


def _meta(dialog: Dialog) -> dict[str, Any]:
    """The row's ``meta``; an ``agentic_multi_turn`` dialog adds its environment: id, initial state, ground-truth
    actions, required outputs and the final state's diff (:class:`schemas.environments.AgenticDialog`)."""
    meta = {"domain": dialog.domain, "dialog_type": dialog.dialog_type, "segments": dialog.segments,
            "apis_used": dialog.apis_used,
            "complexity_loss": dialog.complexity_loss, "apis_offered": [t.name for t in dialog.tools]}
    if isinstance(dialog, AgenticDialog):
        meta.update(dialog.meta)
    return meta


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
    """ToolACE's release format (the converter's writer, :mod:`tasks.formats.dataset_formats`), plus the ``id`` and
    ``meta`` its users asked for. ``sample``: the dialog's :func:`published_sample`, when already made."""
    return _published(row_from_sample(sample or published_sample(dialog), "toolace"), dialog)


def sharegpt_row(dialog: Dialog, sample: Sample | None = None) -> dict[str, Any]:
    """LLaMA-Factory's function-calling ShareGPT format (``human``/``gpt``/``function_call``/``observation``,
    ``tools`` as a JSON string), the converter's writer, plus ``id`` and ``meta``."""
    return _published(row_from_sample(sample or published_sample(dialog), "sharegpt"), dialog)


def openai_row(dialog: Dialog) -> dict[str, Any]:
    """One example of OpenAI's fine-tuning format (:func:`tasks.formats.call_format.openai_example`): ``messages`` with
    ``tool_calls`` (JSON-string ``arguments``, 9-character ids) and ``tool`` replies, and ``tools``; nothing
    else, since the fine-tuning input takes no other key (the id and meta are in ``toolace.jsonl`` and the
    parquet shards, row for row in the same order)."""
    return openai_example(dialog.turns, [t.tool_definition() for t in dialog.tools], dialog.dialog_id)
