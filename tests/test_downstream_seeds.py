"""`toolace downstream-check --seeds N` (issue 21 item 5): training repeated with seeds seed, seed+1, ..., every
tuned model scored on the same items, and the report gives each seed's paired comparison with the base and, per
category, the mean across seeds with its spread and an interval that resamples seeds and items. One seed (the
default) is the check it always was."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tasks.evaluation.bfcl_eval import CategoryScore
from tasks.evaluation.downstream import (
    ANSWERS,
    DownstreamConfig,
    SeedRun,
    downstream_record,
    paired_comparison,
    seed_report,
    seeds_difference,
    start_check,
    tuned_answers_name,
    tuned_model_dir,
    with_seeds,
)
from tasks.evaluation.statistics import paired_difference
from tests.test_downstream_check import published_run


def scores(outcomes: list[bool], category: str = "simple_python") -> list[CategoryScore]:
    return [CategoryScore(category, len(outcomes), sum(outcomes), tuple(outcomes))]


def run_of(seed: int, outcomes: list[bool]) -> SeedRun:
    return SeedRun(seed, f"/models/r1-{seed}", {"steps": 2, "seed": seed, "examples": 3}, False, scores(outcomes),
                   tuned_answers_name(seed, 3))


BASE = [True, False, False, False, False, False, False, False, False, False]  # 1 of 10


def test_one_seed_is_the_check_it_always_was(tmp_path):
    config = DownstreamConfig(run="x", models_dir=str(tmp_path))
    assert config.seeds == 1 and config.seed_list() == [0]
    assert config.for_seed(0).budget() == config.budget()
    assert tuned_model_dir(config.for_seed(0), "r1") == tuned_model_dir(config, "r1")
    assert tuned_answers_name(0, 1) == ANSWERS["tuned"] == "tuned-answers.jsonl"
    run = published_run(tmp_path)
    check = start_check(str(run), "r1")
    record = downstream_record(config, check, tmp_path / "tuned", {"steps": 60}, False, scores(BASE),
                               scores([True] * 3 + [False] * 7))
    assert with_seeds(record, scores(BASE), [run_of(0, [True] * 3 + [False] * 7)]) is record
    assert "seeds" not in record and set(record["files"]) == {"base_answers", "tuned_answers", "report"}


def test_each_seed_has_its_own_tuned_model_and_the_first_is_the_single_seed_one(tmp_path):
    single = DownstreamConfig(run="x", seed=5, models_dir=str(tmp_path))
    config = DownstreamConfig(run="x", seed=5, seeds=3, models_dir=str(tmp_path))
    assert config.seed_list() == [5, 6, 7]
    folders = [tuned_model_dir(config.for_seed(s), "r1") for s in config.seed_list()]
    assert len(set(folders)) == 3 and folders[0] == tuned_model_dir(single, "r1")
    assert [tuned_answers_name(s, 3) for s in (5, 6)] == ["tuned-seed5-answers.jsonl", "tuned-seed6-answers.jsonl"]
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        DownstreamConfig(run="x", seeds=0)


def test_with_one_seed_the_two_level_bootstrap_is_the_paired_bootstrap():
    rng = np.random.default_rng(3)
    base, tuned = list(rng.random(40) < 0.3), list(rng.random(40) < 0.5)
    estimate, low, high, p = seeds_difference(base, [tuned])
    paired = paired_difference(base, tuned)
    assert (estimate, low, high, p) == pytest.approx((paired.difference.estimate, paired.difference.low,
                                                      paired.difference.high, paired.p_not_better))


def test_seeds_that_disagree_widen_the_interval():
    items = 40
    base = [False] * items
    agree = [[True] * 12 + [False] * 28, [True] * 12 + [False] * 28]  # +30 points, twice
    disagree = [[True] * 24 + [False] * 16, [False] * items]  # +60 and 0: the same mean
    same_mean = seeds_difference(base, agree)
    spread = seeds_difference(base, disagree)
    assert same_mean[0] == pytest.approx(spread[0]) == pytest.approx(0.3)
    assert same_mean[1] > 0.15 and same_mean[3] == 0.0  # every resample is better
    assert spread[1] <= 0.0 < spread[2]  # one seed did nothing: "better" is no longer certain
    assert spread[2] - spread[1] > same_mean[2] - same_mean[1]


def test_the_seed_report_gives_each_seed_and_the_mean_with_its_spread():
    seeds = {0: [True] * 3 + [False] * 7, 1: [True] * 5 + [False] * 5, 2: [True] * 4 + [False] * 6}
    runs = [run_of(seed, outcomes) for seed, outcomes in seeds.items()]
    report = seed_report(scores(BASE), runs)
    assert report["seeds"] == [0, 1, 2]
    for entry, run in zip(report["per_seed"], runs, strict=True):
        assert entry["seed"] == run.seed and entry["tuned_model"] == run.tuned_model
        assert entry["paired"] == paired_comparison(scores(BASE), run.scores)
        assert entry["answers"] == f"tuned-seed{run.seed}-answers.jsonl" and entry["training"]["seed"] == run.seed
    assert [e["tuned"]["overall"]["accuracy"] for e in report["per_seed"]] == [0.3, 0.5, 0.4]
    assert [e["delta_accuracy"]["overall"] for e in report["per_seed"]] == [0.2, 0.4, 0.3]
    across = report["across_seeds"]
    assert set(across) == {"simple_python", "overall"}
    entry = across["simple_python"]
    assert entry["items"] == 10 and entry["base_accuracy"] == 0.1
    assert entry["tuned_accuracy"] == {"mean": 0.4, "sd": 0.1, "min": 0.3, "max": 0.5}
    assert entry["delta"] == {"mean": 0.3, "sd": 0.1, "min": 0.2, "max": 0.4}
    low, high = entry["ci95"]
    assert low <= 0.3 <= high and 0.0 <= entry["p_not_better"] <= 1.0
    assert entry["line"].startswith("tuned - base over 3 seeds: +30.0 points [")
    assert "per seed sd 10.0 points, range +20.0 to +40.0" in entry["line"]


@pytest.mark.integration
def test_downstream_flow_with_two_seeds(prefect_harness, tiny_base, tmp_path):
    from flows.downstream_check import downstream_check

    out = tmp_path / "out"
    published_run(out)
    config = DownstreamConfig(run=str(out), base=str(tiny_base), steps=2, lr=1e-3, limit=2, max_new_tokens=4,
                              models_dir=str(tmp_path / "models"), seeds=2, seed=3, engine="transformers")
    record = downstream_check(config)
    report = record["seeds"]
    assert report["seeds"] == [3, 4]
    assert [e["training"]["seed"] for e in report["per_seed"]] == [3, 4]
    assert report["per_seed"][0]["tuned_model"] != report["per_seed"][1]["tuned_model"]
    assert record["tuned"] == report["per_seed"][0]["tuned"] and record["training"]["seed"] == 3
    assert record["evaluation"]["engine"] == "transformers"
    folder = out / "downstream" / "r1" / record["check_id"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == \
        ["base-answers.jsonl", "report.json", "tuned-seed3-answers.jsonl", "tuned-seed4-answers.jsonl"]
    for name in ("tuned-seed3-answers.jsonl", "tuned-seed4-answers.jsonl"):
        assert len((folder / name).read_text().splitlines()) == 2
    assert record["files"]["tuned_answers_by_seed"] == {"3": "tuned-seed3-answers.jsonl",
                                                        "4": "tuned-seed4-answers.jsonl"}
    assert set(report["across_seeds"]) == {"simple_python", "overall"}
    single = downstream_check(config.model_copy(update={"seeds": 1}))  # seed 3 alone: its model is reused
    assert single["training_reused"] and "seeds" not in single
    assert single["tuned"] == record["tuned"]


def test_cli_prints_each_seed_and_the_mean(tmp_path, monkeypatch):
    import flows.downstream_check as flow_module
    from toolace.cli import app

    run = published_run(tmp_path)
    seen: list[DownstreamConfig] = []

    def fake_flow(config: DownstreamConfig) -> dict:
        seen.append(config)
        check = start_check(str(run), "r1")
        runs = [run_of(seed, [True] * (3 + seed) + [False] * (7 - seed)) for seed in config.seed_list()]
        record = downstream_record(config, check, tmp_path / "tuned", runs[0].training, False, scores(BASE),
                                   runs[0].scores)
        return with_seeds(record, scores(BASE), runs)

    monkeypatch.setattr(flow_module, "downstream_check", fake_flow)
    result = CliRunner().invoke(app, ["downstream-check", str(run), "--seeds", "3", "--engine", "transformers"])
    assert result.exit_code == 0, result.output
    assert seen[0].seeds == 3 and seen[0].engine == "transformers"
    assert "seeds 0, 1, 2 (the lines above: seed 0)" in result.output
    assert "seed 2" in result.output and "tuned mean  40.0% (sd 10.0%, 30.0% to 50.0%)" in result.output
    assert "tuned - base over 3 seeds: +30.0 points" in result.output
    bad = CliRunner().invoke(app, ["downstream-check", str(run), "--seeds", "0"])
    assert bad.exit_code == 1 and "--seeds" in bad.output


def test_seeds_that_never_change_a_verdict_get_the_exact_bound_both_ways():
    base = [False] * 16
    estimate, low, high, p = seeds_difference(base, [base, base])
    one_seed = paired_difference(base, base).difference
    assert (estimate, low, high, p) == pytest.approx((0.0, one_seed.low, one_seed.high, 1.0))
    assert 0.20 < high < 0.21
