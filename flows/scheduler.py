"""Submitting batch tasks on the flow's task runner and waiting for them under the run's stall watchdog."""

from __future__ import annotations

from typing import Any

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from toolace.stall_watchdog import CURRENT_WATCHDOG


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
