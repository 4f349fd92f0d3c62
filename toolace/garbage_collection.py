"""Fewer and shorter garbage-collector pauses while a run holds a large, long-lived heap.

A run's process holds millions of long-lived objects: Prefect, pydantic and their schemas, torch and transformers
with the embedding model, the API pool. CPython's cyclic collector scans all of them in every full (oldest
generation) collection, and while it does every thread stops, the LLM event loop included. Measured on 2 cores with
``benchmarks/llm_throughput.py --apis 300 --dialogs 900`` (gc callbacks): 19 full collections took 8.0 s in all,
the longest 881 ms, while 64 answered requests waited; the young generations took 3.1 s more.

Inside :func:`fewer_collector_pauses` the young generation is collected every 10,000 net allocations instead of
700, and the objects alive when a stage has built its long-lived state are frozen (``gc.freeze``: moved out of
the collector's generations, never scanned again; reference counting still frees them). The flow freezes at its
start, once the embedding model has loaded (torch and transformers), after mining and when the dialogs start.
Collections then took about 2 s in all, and the dialog phase went from 257 to 276-281 req/s.

What it costs: a reference cycle that was already garbage when frozen is not collected until the context exits
(it unfreezes everything, so the next full collection frees such cycles), and young garbage cycles wait for
10,000 allocations instead of 700. Both are small next to the heap. The settings are the process's: a process that
had frozen objects itself before the context keeps them frozen after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000  # net allocations between collections of the youngest generation (CPython's default 700)
OLDER_THRESHOLD = 20  # collections of a generation between collections of the next (default 10)

_depth = 0  # how many fewer_collector_pauses() contexts are open in this process


@contextmanager
def fewer_collector_pauses() -> Iterator[None]:
    """Raise the collector's thresholds and freeze the objects alive now; undo both on exit."""
    global _depth
    thresholds, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    _depth += 1
    gc.freeze()
    try:
        yield
    finally:
        _depth -= 1
        gc.set_threshold(*thresholds)
        if not frozen_before and not _depth:
            gc.unfreeze()


def freeze_long_lived() -> None:
    """Inside :func:`fewer_collector_pauses`, freeze the objects alive now (a stage has built its long-lived
    state); elsewhere, nothing."""
    if _depth:
        gc.freeze()
