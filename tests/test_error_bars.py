"""Every accuracy comes with a 95% bootstrap interval over items; base and tuned are compared with a paired
bootstrap on the same items."""

from __future__ import annotations

from tasks.evaluation.bfcl_eval import CategoryScore, overall
from tasks.evaluation.downstream import intervals, paired_comparison
from tasks.evaluation.statistics import accuracy_interval, counts_interval, paired_difference


def test_the_interval_covers_the_estimate_and_narrows_with_more_items() -> None:
    small, large = counts_interval(26, 100), counts_interval(260, 1000)
    assert small.low < 0.26 < small.high and large.low < 0.26 < large.high
    assert large.high - large.low < small.high - small.low
    assert 0.17 < small.low < 0.19 and 0.34 < small.high < 0.36  # about +-8.6 points at n=100, p=0.26
    assert counts_interval(26, 100) == counts_interval(26, 100)  # seeded: the same figure every time
    assert accuracy_interval([]).estimate == 0.0
    assert small.percent() == f"26.0% [{100 * small.low:.1f}, {100 * small.high:.1f}]"


def test_a_paired_difference_uses_the_pairs() -> None:
    base = [True] * 20 + [False] * 80
    tuned = [True] * 20 + [True] * 10 + [False] * 70  # ten more right, none lost
    paired = paired_difference(base, tuned)
    assert abs(paired.difference.estimate - 0.1) < 1e-9 and paired.tuned_only == 10 and paired.base_only == 0
    assert paired.difference.low > 0 and paired.p_not_better < 0.01
    unpaired_width = counts_interval(30, 100).high - counts_interval(30, 100).low
    assert paired.difference.high - paired.difference.low < unpaired_width  # pairing removes the shared items
    noise = paired_difference([True, False] * 50, [False, True] * 50)
    assert noise.difference.low < 0 < noise.difference.high and noise.p_not_better > 0.3
    assert "tuned - base: +10.0 points" in paired.line()


def test_the_downstream_record_gets_intervals_and_the_paired_comparison() -> None:
    base = [CategoryScore("simple_python", 4, 1, (True, False, False, False))]
    tuned = [CategoryScore("simple_python", 4, 3, (True, True, True, False))]
    assert set(intervals(base)) == {"simple_python", "overall"}
    compared = paired_comparison(base, tuned)
    assert compared["overall"]["difference"] == 0.5 and compared["overall"]["tuned_only"] == 2
    assert paired_comparison([CategoryScore("simple_python", 4, 1)], tuned) == {}  # no per-item verdicts: none
    assert overall(base + tuned).outcomes == base[0].outcomes + tuned[0].outcomes


def test_a_unanimous_verdict_gets_the_exact_interval_not_a_collapsed_bootstrap() -> None:
    none_right = accuracy_interval([False] * 16)
    assert none_right.estimate == 0.0 and none_right.low == 0.0
    assert abs(none_right.high - (1 - 0.025 ** (1 / 16))) < 1e-12 and 0.20 < none_right.high < 0.21
    assert none_right.percent() == "0.0% [0.0, 20.6]"
    all_right = counts_interval(240, 240)
    assert all_right.estimate == 1.0 and all_right.high == 1.0 and 0.984 < all_right.low < 0.985
    assert 0.009 < counts_interval(0, 400).high < 0.0093  # more items, a tighter bound
    agree = paired_difference([False] * 16, [False] * 16)
    assert agree.difference.estimate == 0.0 and agree.difference.low == -none_right.high
    assert agree.difference.high == none_right.high and agree.p_not_better == 1.0
    one_differs = paired_difference([False] * 16, [False] * 15 + [True])  # not unanimous: the bootstrap again
    assert one_differs.tuned_only == 1 and one_differs.difference.low == 0.0
