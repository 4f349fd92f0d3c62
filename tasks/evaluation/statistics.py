"""Error bars for accuracies: a percentile bootstrap over items, and a paired bootstrap for the difference of two
models scored on the same items. Seeded, so a figure printed twice is the same figure.

Where every item has the same verdict the bootstrap cannot spread (every resample is that verdict again: 0 of 16
would read "0.0% [0.0, 0.0]", a certainty 16 items do not give). There the interval is the exact (Clopper-Pearson)
one, whose open end has a closed form: 0 of n right puts the accuracy below ``1 - (0.025 ** (1 / n))`` (20.6% for
16 items, 0.9% for 400); two models that agree on every item get a difference within plus or minus that bound of
the rate at which they could still disagree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def percent(self) -> str:
        """``41.0% [31.0, 51.0]``"""
        return f"{100 * self.estimate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def accuracy_interval(outcomes: Sequence[bool] | np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                      level: float = LEVEL, seed: int = 0) -> Interval:
    """The accuracy of ``outcomes`` (one per item) with its percentile bootstrap interval over items."""
    values = np.asarray(outcomes, dtype=float)
    if values.size == 0:
        return Interval(0.0, 0.0, 0.0)
    if values.min() == values.max():  # every item the same verdict: the exact interval (module docstring)
        bound = unseen_rate_bound(values.size, level)
        return Interval(0.0, 0.0, bound) if values[0] == 0 else Interval(1.0, 1.0 - bound, 1.0)
    rng = np.random.default_rng(seed)
    means = rng.binomial(values.size, values.mean(), size=samples) / values.size  # resampling 0/1 items
    tail = (1 - level) / 2
    return Interval(float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def unseen_rate_bound(items: int, level: float = LEVEL) -> float:
    """The exact two-sided upper bound on the rate of an event seen in none of ``items`` items (Clopper-Pearson:
    the rate whose chance of no event in ``items`` tries is half of ``1 - level``)."""
    return float(1.0 - ((1 - level) / 2) ** (1.0 / items))


def counts_interval(correct: int, items: int, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL,
                    seed: int = 0) -> Interval:
    """:func:`accuracy_interval` of ``items`` outcomes of which ``correct`` are right (the order does not matter)."""
    return accuracy_interval([True] * correct + [False] * (items - correct), samples, level, seed)


@dataclass(frozen=True)
class PairedDifference:
    """Tuned minus base accuracy on the same items, its paired bootstrap interval, and the share of resamples in
    which the difference is not above zero (a one-sided bootstrap p-value)."""

    difference: Interval
    items: int
    base_only: int  # items only the base model got right
    tuned_only: int  # items only the tuned model got right
    p_not_better: float

    def line(self) -> str:
        d = self.difference
        return (f"tuned - base: {100 * d.estimate:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}] (95% paired "
                f"bootstrap over {self.items} items; {self.tuned_only} right only after tuning, {self.base_only} only "
                f"before; p(not better) = {self.p_not_better:.3f})")


def paired_difference(base: Sequence[bool], tuned: Sequence[bool], samples: int = BOOTSTRAP_SAMPLES,
                      level: float = LEVEL, seed: int = 0) -> PairedDifference:
    """The paired comparison of two models' outcomes on the same items (same order)."""
    if len(base) != len(tuned):
        raise ValueError(f"paired outcomes need the same items: {len(base)} base, {len(tuned)} tuned")
    a, b = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    n = a.size
    if n == 0:
        return PairedDifference(Interval(0.0, 0.0, 0.0), 0, 0, 0, 1.0)
    if (a == b).all():  # no item differs: the difference is bounded by the rate at which they could (docstring)
        bound = unseen_rate_bound(n, level)
        return PairedDifference(Interval(0.0, -bound, bound), n, 0, 0, 1.0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(samples, n))
    diffs = (b[picks] - a[picks]).mean(axis=1)
    tail = (1 - level) / 2
    return PairedDifference(Interval(float(b.mean() - a.mean()), float(np.quantile(diffs, tail)),
                                     float(np.quantile(diffs, 1 - tail))),
                            n, int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum()),
                            float((diffs <= 0).mean()))
