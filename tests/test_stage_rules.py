"""The stages' own rules, as plain functions: document duplicates and ledger reuse (mining), the out-of-band
rejection (dialogs), and the stage results the Prefect UI shows as counts."""

from __future__ import annotations

from flows.stages.dialogs import OUT_OF_BAND_CHECK, reject_out_of_band
from flows.stages.mining import DUPLICATE_DOC_CHECK, triage
from flows.stages.run_context import Carried, StageResult
from schemas.records import Document, MinedDocument, StageStats
from tasks.dialogs.self_guidance import fixed_bounds, start_record
from tests.test_self_guidance import tool_dialog


def doc(doc_id: str, source: str) -> Document:
    return Document(doc_id=doc_id, source=source, title=doc_id, text=f"text of {doc_id}")


def test_triage_rejects_duplicates_reuses_the_ledger_and_mines_the_rest() -> None:
    seen = {"a": "first.md"}
    earlier = MinedDocument(doc_id="b", source="old.md", title="b", chars=9, domain="Weather")
    known = {"b": ("run-0", earlier)}
    sorted_ = triage([doc("a", "copy.md"), doc("b", "new.md"), doc("c", "c.md"), doc("c", "c-again.md")], seen, known)
    assert [d.doc_id for d in sorted_.fresh] == ["c"]
    duplicate, reused, second_c = sorted_.decided
    assert (duplicate.doc_id, duplicate.accepted, duplicate.rejected_by) == ("a", False, DUPLICATE_DOC_CHECK)
    assert duplicate.reason == "same text as first.md"
    assert (reused.source, reused.reused_from, reused.domain) == ("new.md", "run-0", "Weather")
    assert second_c.rejected_by == DUPLICATE_DOC_CHECK and second_c.reason == "same text as c.md"
    assert sorted_.reused == 1
    assert seen == {"a": "first.md", "b": "new.md", "c": "c.md"}


def test_a_dialog_still_out_of_band_after_guidance_is_rejected_unless_kept() -> None:
    bounds = fixed_bounds(1.0, 2.0)
    too_easy = tool_dialog()
    too_easy.complexity_loss = 0.2
    reject_out_of_band(too_easy, start_record(bounds, 0.2), bounds, keep_out_of_band=False)
    assert too_easy.rejected_by == OUT_OF_BAND_CHECK
    assert "still too_easy" in (too_easy.reason or "") and "bounds 1.000-2.000" in (too_easy.reason or "")

    kept = tool_dialog()
    reject_out_of_band(kept, start_record(bounds, 0.2), bounds, keep_out_of_band=True)
    assert kept.accepted
    in_band = tool_dialog()
    reject_out_of_band(in_band, start_record(bounds, 1.5), bounds, keep_out_of_band=False)
    assert in_band.accepted


def test_stage_inputs_and_results_show_as_counts_not_records() -> None:
    from fastapi.encoders import jsonable_encoder

    records = [MinedDocument(doc_id=str(i), source="s", title="t") for i in range(1000)]
    assert jsonable_encoder(Carried(items=records)) == "<1000 MinedDocument>"
    shown = jsonable_encoder(StageResult(records=records, stats={"mining": StageStats(items_in=1000)},
                                         files=["tables/documents.parquet"]))
    assert shown["records"] == 1000 and shown["files"] == ["tables/documents.parquet"]
    assert shown["stats"]["mining"]["items_in"] == 1000
