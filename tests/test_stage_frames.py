"""The pandera models of the stage tables: good tables pass, bad ones name table, column, row and check."""

from __future__ import annotations

import polars as pl
import pytest

from schemas.frames import APIsFrame, DialogsFrame, DocumentsFrame, TableValidationError, TreeNodesFrame, validate_table
from schemas.records import APISpec, Dialog, MinedDocument, ToolCall, TreeNode, Turn
from tasks.storage.frames import model_frame
from tasks.storage.writers import TableWriter, write_validated

API = APISpec(api_id="a1", name="get_weather", description="Weather for a city.",
              parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
              result_schema={"type": "object", "properties": {"t": {"type": "number"}}}, domain="Weather",
              node_ids=["n1"], operators=["add_constraints"])


def dialog(dialog_id: str = "d1", **update: object) -> Dialog:
    base = Dialog(dialog_id=dialog_id, dialog_type="single", domain="Weather", tools=[API], segments=["single"],
                  turns=[Turn(role="user", content="Weather in Oslo?"),
                         Turn(role="assistant", tool_calls=[ToolCall(id="c1", name="get_weather",
                                                                     arguments={"city": "Oslo"})]),
                         Turn(role="tool", tool_call_id="c1", name="get_weather", content='{"t": 3}'),
                         Turn(role="assistant", content="It is 3 degrees.")],
                  apis_used=["get_weather"], complexity_loss=1.2, losses=[1.2], decision_samples=3)
    return base.model_copy(update=update)


def test_good_tables_pass() -> None:
    rejected = dialog("d2", turns=[])
    rejected.reject("decision_agreement_v1", "samples disagree")
    DialogsFrame.validate(model_frame([dialog(), rejected], Dialog))
    doc = MinedDocument(doc_id="x", source="a.txt", title="A", chars=10, heuristic_score=0.5, embedding_score=0.3,
                        relevance_score=0.4, decided_by="llm_relevance_v1", domain="Weather")
    DocumentsFrame.validate(model_frame([doc], MinedDocument))
    nodes = [TreeNode(node_id="n0", parent_id=None, name="Weather", level=0, is_functionality=False, doc_ids=["x"]),
             TreeNode(node_id="n1", parent_id="n0", name="forecast", level=1, is_functionality=True, doc_ids=["x"])]
    TreeNodesFrame.validate(model_frame(nodes, TreeNode))
    APIsFrame.validate(model_frame([API], APISpec))


def failures(error: TableValidationError) -> set[tuple[object, object, object]]:
    return {(f["row"], f["column"], f["check"]) for f in error.failures}


def test_bad_dialogs_name_column_row_and_check(tmp_path) -> None:
    unversioned = dialog("d3")
    unversioned.reject("agreement", "no version in the check name")
    empty = dialog("d4", turns=[])
    bad = [dialog(), dialog("d1"), unversioned, empty, dialog("d5", complexity_loss=-1.0),
           dialog("d6", losses=[1.0, 2.0])]
    url = tmp_path / "dialogs.parquet"
    with pytest.raises(TableValidationError) as info:
        write_validated(bad, Dialog, DialogsFrame, str(url), "dialogs")
    found = failures(info.value)
    assert (0, "dialog_id", "field_uniqueness") in found and (1, "dialog_id", "field_uniqueness") in found
    assert (2, "rejected_by", "str_matches('^[a-z][a-z0-9_]*_v[0-9]+$')") in found
    assert (2, "DialogsFrame", "rejection_named") in found
    assert (3, "DialogsFrame", "accepted_has_turns") in found
    assert (4, "complexity_loss", "greater_than_or_equal_to(0.0)") in found
    assert (5, "DialogsFrame", "rounds_match_losses") in found
    message = str(info.value)
    assert message.startswith("table dialogs breaks its schema")
    assert "row 3, column DialogsFrame: check accepted_has_turns" in message
    assert not url.exists()  # nothing written when the table is bad


def test_unknown_dialog_type_and_segment() -> None:
    frame = model_frame([dialog(), dialog("d2")], Dialog).with_columns(
        dialog_type=pl.Series(["single", "chatty"]), segments=pl.Series([["single"], ["gossip"]]))
    with pytest.raises(TableValidationError) as info:
        validate_table(frame, DialogsFrame, "dialogs")
    found = failures(info.value)
    assert any(f[:2] == (1, "dialog_type") for f in found)
    assert (1, "DialogsFrame", "segments_known") in found


def test_table_writer_validates_each_batch(tmp_path) -> None:
    good = MinedDocument(doc_id="x", source="a.txt", title="A", domain="Weather")
    no_domain = MinedDocument(doc_id="y", source="b.txt", title="B")
    url = tmp_path / "documents.parquet"
    with TableWriter(str(url), MinedDocument, DocumentsFrame, "documents") as writer:
        writer.write([good])
        with pytest.raises(TableValidationError) as info:
            writer.write([no_domain])
    assert (1, "DocumentsFrame", "accepted_has_domain") in failures(info.value)  # the row as counted in the table
    assert writer.rows == 1


def test_batches_validated_together_are_written_as_the_same_row_groups(tmp_path) -> None:
    """``validate_rows``: batches wait and are validated in one call, then written batch by batch: the same bytes
    as validating each batch; a failure keeps the batches before the failing row and names its row in the table."""
    import pyarrow.parquet as pq

    batches = [[dialog(f"d{b}{i}") for i in range(3)] for b in range(4)]
    files = {}
    for together in (0, 7):
        url = tmp_path / f"dialogs-{together}.parquet"
        with TableWriter(str(url), Dialog, DialogsFrame, "dialogs", validate_rows=together) as writer:
            for batch in batches:
                writer.write(batch)
        files[together] = url.read_bytes()
        assert pq.ParquetFile(url).metadata.num_row_groups == 4
    assert files[0] == files[7]

    url = tmp_path / "bad.parquet"
    bad = dialog("bad", dialog_type="nonsense")
    with TableWriter(str(url), Dialog, DialogsFrame, "dialogs", validate_rows=100) as writer:
        writer.write(batches[0])
        writer.write(batches[1])
        with pytest.raises(TableValidationError) as info:
            writer.write([dialog("ok"), bad])
            writer.close()
    assert any(f[:2] == (7, "dialog_type") for f in failures(info.value))  # 3 + 3 + 1 rows before it
    assert writer.rows == 6 and pl.read_parquet(url).height == 6


def test_tree_nodes_need_known_parents_and_roots_at_level_zero() -> None:
    nodes = [TreeNode(node_id="n0", parent_id=None, name="Weather", level=1, is_functionality=False, doc_ids=[]),
             TreeNode(node_id="n1", parent_id="gone", name="f", level=1, is_functionality=True, doc_ids=[])]
    with pytest.raises(TableValidationError) as info:
        validate_table(model_frame(nodes, TreeNode), TreeNodesFrame, "context_tree_nodes")
    found = failures(info.value)
    assert (0, "TreeNodesFrame", "roots_have_no_parent") in found
    assert (1, "TreeNodesFrame", "parent_exists") in found


def test_accepted_api_names_are_unique() -> None:
    twin = API.model_copy(update={"api_id": "a2"})
    dropped = API.model_copy(update={"api_id": "a3"})
    dropped.reject("api_duplicate_v2", "same name")
    validate_table(model_frame([API, dropped], APISpec), APIsFrame, "apis")
    with pytest.raises(TableValidationError) as info:
        validate_table(model_frame([API, twin], APISpec), APIsFrame, "apis")
    assert (1, "APIsFrame", "accepted_names_unique") in failures(info.value)


def test_verdicts_table() -> None:
    from schemas.frames import verdicts_frame

    good = [{"dialog_id": "d1", "generated": True, "passed": True, "rules_passed": True, "model_judged": True,
             "failures": []},
            {"dialog_id": "d2", "generated": True, "passed": False, "rules_passed": True, "model_judged": True,
             "failures": [{"check": "llm_consistency_v1", "reason": "off topic", "layer": "model"}]}]
    assert verdicts_frame(good).height == 2
    bad = [{**good[0], "failures": [{"check": "oops", "reason": "x"}]}, {**good[1], "passed": True}]
    with pytest.raises(TableValidationError) as info:
        verdicts_frame(bad)
    assert {(f["row"], f["check"]) for f in info.value.failures} == {(0, "passed_means_no_failure"),
                                                                     (1, "passed_means_no_failure")}
