"""The one scheduler of the LLM stages: batch tasks submitted on the flow's task runner, as many in flight as keep
the gateway's concurrency busy (:func:`batches_in_flight`), waited for under the run's stall watchdog and handed
back in order (:class:`BatchStream`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from toolace.stall_watchdog import CURRENT_WATCHDOG, StallWatchdog, items_of

P = TypeVar("P")


def submit_batch(task: Any, *args: Any) -> Any:
    """Submit one batch task on the flow's task runner (threads, or Dask workers).

    On the thread runner, collections go in under Prefect's ``quote``: they hold records, never futures, and
    walking every field of every record of a batch looking for upstream futures (twice per task run) was
    about a tenth of the flow's CPU. The task receives them unwrapped and its cache key (the inputs) is the
    same. Dask ships parameters through its own graph, which turns the annotation back into a plain tuple,
    so there they go as they are."""
    context = FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, ThreadPoolTaskRunner):
        return task.submit(*args)
    return task.submit(*(quote(a) if isinstance(a, (list, dict, tuple, BaseModel)) else a for a in args))


def on_runner(task: Any, *args: Any) -> Any:
    """Run one batch task on the flow's task runner and wait for its result, watched by the run's stall
    watchdog when there is one: the CPU tasks (context tree, loss, probes) report each step they finish, the
    LLM tasks each answer; nothing for ``stall_timeout_s`` fails the run in one line naming the task."""
    future = submit_batch(task, *args)
    watchdog = CURRENT_WATCHDOG.get()
    if watchdog is None:
        return future.result()
    return watchdog.wait(future, task.name, "(all of it)")


def batches_in_flight(concurrency: int, batch_size: int) -> int:
    """How many batches an LLM stage keeps going at once: enough items for twice the gateway's ``concurrency``
    (an item waits on its own earlier answers, so about half are between requests at any time), and never fewer
    than two (the next batch fills the slots the current one's last, longest items leave idle). The batch stays
    the unit of retry, caching and resume; this sets only how many are in flight."""
    return max(2, -(-2 * concurrency // max(batch_size, 1)))


@dataclass
class Submitted(Generic[P]):
    """One batch a stage started: its plans (what its size counts), the future of its task (None when nothing had
    to be sent, e.g. a corpus batch whose documents were all decided already), what the stage keeps with it, and,
    once done, the task's result."""

    plans: list[P]
    future: Any = None
    extra: Any = None
    label: object = None  # how a stall's message names the batch (default: its plans' indexes)
    result: Any = None


class BatchStream(Generic[P]):
    """The one place that knows about a stage's work in flight: keeps ``depth`` batches going (started by
    ``start(reserved)``, where ``reserved`` counts the plans of every batch started and not yet handed back, so a
    stage's planner never overshoots its target), waits for them in the order they started (under the run's stall
    watchdog) and yields each done batch; the next batches start before it is handed over, and again after the
    stage has taken it in (fewer accepted than counted on means more to plan). ``start`` returns None when there
    is nothing more to plan. Batches are handed back in the order they started, so a run's output does not depend
    on which batch answered first."""

    def __init__(self, stage: str, start: Callable[[int], Submitted[P] | None], depth: int,
                 watchdog: StallWatchdog | None = None) -> None:
        self.stage, self.start, self.depth, self.watchdog = stage, start, depth, watchdog
        self._going: deque[Submitted[P]] = deque()
        self._held = 0  # plans of the batch handed to the stage and not yet taken in
        self.started = 0

    @property
    def reserved(self) -> int:
        return self._held + sum(len(batch.plans) for batch in self._going)

    def _top_up(self) -> None:
        while len(self._going) < self.depth:
            batch = self.start(self.reserved)
            if batch is None:
                return
            self._going.append(batch)
            self.started += 1

    def __iter__(self) -> Iterator[Submitted[P]]:
        self._top_up()
        while self._going:
            batch = self._going.popleft()
            if batch.future is not None:
                label = batch.label if batch.label is not None else items_of(batch.plans)
                batch.result = self.watchdog.wait(batch.future, self.stage, label) \
                    if self.watchdog is not None else batch.future.result()
            self._held = len(batch.plans)
            self._top_up()  # the next batches go out while this one is taken in
            yield batch
            self._held = 0
            self._top_up()
