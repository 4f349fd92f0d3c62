"""Fewer and shorter garbage-collector pauses while a run holds a large, long-lived heap.

A run's process holds millions of long-lived objects: Prefect, pydantic and their schemas, torch and transformers
with the embedding model, the API pool. CPython's cyclic collector scans all of them in every full (oldest
generation) collection, and while it does every thread stops, the LLM event loop included. Measured on 2 cores with
``benchmarks/llm_throughput.py --apis 300 --dialogs 900`` (gc callbacks): 19 full collections took 8.0 s in all,
the longest 881 ms, while 64 answered requests waited; the young generations took 3.1 s more.

Inside a :class:`CollectorPauses` context (the run context owns one; the flow enters it for the run's length) the
young generation is collected every 10,000 net allocations instead of
700, and the objects alive when a stage has built its long-lived state are frozen (``gc.freeze``: moved out of
the collector's generations, never scanned again; reference counting still frees them). The flow freezes at its
start, once the embedding model has loaded (torch and transformers), after mining and when the dialogs start,
each time right after a full collection, so that only live objects are frozen. The older generations keep
CPython's thresholds.

Why those last two: a first version froze without collecting and collected the older generations half as often.
On ``--apis 300 --dialogs 900`` it was the fastest (collections about 2 s in all, dialog phase 276-281 req/s against
257), but at the paper's scale (``benchmarks/scale_run.py``) it raised the peak RSS from 2,896 to 3,326 MiB, over
the 3 GB target, for the same wall time. The settings are the process's, so only the run context
that owns the object changes them, and only while it is open: a process that had frozen objects itself before the
context keeps them frozen after it. No library code freezes or collects: the flow decides where the freeze points
are (:meth:`CollectorPauses.freeze`).
"""

from __future__ import annotations

import gc
from types import TracebackType

YOUNG_THRESHOLD = 10_000  # net allocations between collections of the youngest generation (CPython's default 700)
OLDER_THRESHOLD = 10  # collections of a generation between collections of the next (CPython's default)


class CollectorPauses:
    """The collector settings of one run: raised thresholds and freeze points while open, undone on exit.

    Reentrant: an inner ``with`` on the same object only counts; the settings are restored when the outermost
    exits. Two objects nested (two runs in one process) each restore what they found."""

    def __init__(self) -> None:
        self._depth = 0
        self._thresholds: tuple[int, int, int] | None = None
        self._frozen_before = 0

    @property
    def active(self) -> bool:
        return self._depth > 0

    def __enter__(self) -> CollectorPauses:
        if not self._depth:
            self._thresholds, self._frozen_before = gc.get_threshold(), gc.get_freeze_count()
            gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
        self._depth += 1
        _collect_and_freeze()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth or self._thresholds is None:
            return
        gc.set_threshold(*self._thresholds)
        if not self._frozen_before:  # a host (or an outer run) that froze first keeps its frozen objects
            gc.unfreeze()
        self._thresholds = None

    def freeze(self) -> None:
        """While open, freeze the objects alive now (a stage has built its long-lived state); else nothing."""
        if self._depth:
            _collect_and_freeze()


def _collect_and_freeze() -> None:
    """Freeze only what is alive: garbage frozen with it would stay in memory until the context exits."""
    gc.collect()
    gc.freeze()
