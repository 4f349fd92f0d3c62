"""The dialogs stage's streamed output (tasks.dataset.stream): batches written as they come, shards renamed
to the Hugging Face layout at the end, only per-row figures kept."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tasks.dataset.stream import DialogStream, VerificationTally
from tasks.verification.expectations import check_published, check_records
from tasks.verification.published_format import openai_finetune_problems
from tests.test_dataset_expectations import ACCEPTANCE, BOUNDS, dialog, rows_of


def verdict(dialog_id: str, passed: bool, check: str | None = None) -> dict[str, object]:
    failures = [{"check": check, "layer": "rule", "reason": "bad"}] if check else []
    return {"dialog_id": dialog_id, "generated": True, "passed": passed, "rules_passed": passed,
            "model_judged": False, "failures": failures}


def test_batches_are_written_as_they_come_and_shards_renamed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    batches = [[dialog("d0"), dialog("d1", "parallel")], [dialog("d2"), dialog("d3")], [dialog("d4", "parallel")]]
    batches[1][1].reject("args_type_v1", "bad days")
    with DialogStream(str(run), BOUNDS, rows_per_shard=2) as stream:
        for number, batch in enumerate(batches):
            stream.write(batch, [verdict(d.dialog_id, d.accepted, d.rejected_by) for d in batch])
            if number == 0:  # a full shard is on disk before the next batch comes, under its temporary name
                assert pl.read_parquet(run / "dataset" / "data" / "train-00000.parquet")["id"].to_list() == [
                    "d0", "d1"]
                assert stream.tally.suite_records and stream._shards._shard is None  # closed, nothing held
    assert stream.shards == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert sorted(p.name for p in (run / "dataset" / "data").iterdir()) == [Path(s).name for s in stream.shards]
    ids = [r["id"] for s in stream.shards for r in pl.read_parquet(run / "dataset" / s).to_dicts()]
    assert ids == ["d0", "d1", "d2", "d4"]
    lines = (run / "dataset" / "toolace.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["d0", "d1", "d2", "d4"]
    openai_rows = [json.loads(line) for line in (run / "dataset" / "openai.jsonl").read_text().splitlines()]
    assert len(openai_rows) == 4 and all(openai_finetune_problems(row) == [] for row in openai_rows)  # row for row
    assert [len(r["messages"][1]["tool_calls"]) for r in openai_rows] == [1, 2, 1, 2]
    table = pl.read_parquet(run / "tables" / "dialogs.parquet")
    assert table["dialog_id"].to_list() == ["d0", "d1", "d2", "d3", "d4"]
    assert table.filter(pl.col("dialog_id") == "d3")["rejected_by"].to_list() == ["args_type_v1"]
    assert pl.read_parquet(run / "tables" / "verdicts.parquet").height == 5
    tally = stream.tally
    assert (tally.generated, tally.accepted) == (5, 4)
    assert tally.types == {"single": 2, "parallel": 2}
    assert stream.verification.report()["failures_per_check"] == {"args_type_v1": {"layer": "rule", "dialogs": 1}}


def test_a_batch_larger_than_a_shard_is_split_across_shards(tmp_path: Path) -> None:
    batches = [[dialog(f"d{i}") for i in range(3)], [dialog(f"d{i}") for i in range(3, 8)]]
    with DialogStream(str(tmp_path), BOUNDS, rows_per_shard=3) as stream:
        for batch in batches:
            stream.write(batch, [])
    assert stream.shards == [f"data/train-0000{n}-of-00003.parquet" for n in range(3)]
    shards = [pl.read_parquet(tmp_path / "dataset" / s)["id"].to_list() for s in stream.shards]
    assert shards == [["d0", "d1", "d2"], ["d3", "d4", "d5"], ["d6", "d7"]]


def test_streamed_records_give_the_same_suite_verdict_as_the_rows(tmp_path: Path) -> None:
    dialogs = [dialog("d0"), dialog("d1", "parallel"), dialog("d2", days="three"), dialog("d3", "parallel")]
    with DialogStream(str(tmp_path), BOUNDS) as stream:
        stream.write(dialogs[:2], [])
        stream.write(dialogs[2:], [])
    streamed = check_records(stream.tally.suite_records, stream.tally.suite_problems, ACCEPTANCE, BOUNDS, None)
    whole = check_published(rows_of(dialogs), ACCEPTANCE, BOUNDS, None)
    assert streamed.success == whole.success is False
    assert [(o.expectation, o.success, o.observed) for o in streamed.results] == [
        (o.expectation, o.success, o.observed) for o in whole.results]
    assert stream.tally.suite_problems.keys() == {2}  # the position in the whole dataset, not in its batch


def test_no_accepted_dialog_still_gives_one_empty_shard(tmp_path: Path) -> None:
    rejected = dialog("d0")
    rejected.reject("args_type_v1", "bad")
    with DialogStream(str(tmp_path), BOUNDS) as stream:
        stream.write([rejected], [verdict("d0", False, "args_type_v1")])
    assert stream.shards == ["data/train-00000-of-00001.parquet"]
    assert pl.read_parquet(tmp_path / "dataset" / stream.shards[0]).height == 0
    assert (tmp_path / "dataset" / "toolace.jsonl").read_text() == ""


def test_verification_tally_counts_only_generated_dialogs() -> None:
    tally = VerificationTally()
    tally.add([verdict("a", True), verdict("b", False, "x_v1")])
    tally.add([{**verdict("c", False, "gen_v1"), "generated": False}, verdict("d", False, "x_v1")])
    report = tally.report()
    assert (report["dialogs_checked"], report["passed"], report["rules_passed"]) == (3, 1, 1)
    assert report["failures_per_check"] == {"x_v1": {"layer": "rule", "dialogs": 2}}
