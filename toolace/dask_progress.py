"""Progress from Dask workers reaches the flow's stall watchdog.

On Dask the batch tasks run in other processes, so the flow's :class:`~toolace.stall_watchdog.StallWatchdog`
cannot see their LLM answers or their CPU steps. Each task on a worker relays its progress as a Dask structured
event (``Worker.log_event``) on the flow run's topic, at most once per ``every_s``; the flow subscribes to that
topic on the task runner's client and counts each event as progress. So the flow's wait on a Dask batch is
watched like a local one: a worker that stops moving (a hung request, a CPU step that never ends, a lost
worker whose task Dask does not reschedule) fails the run after ``stall_timeout_s`` in one line, while a long
but moving batch never does.

Nothing lives at module level: a relay belongs to one task run, a subscription to one flow run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

RELAY_EVERY_S = 1.0  # a worker's task tells the flow at most this often (events go through the scheduler)


def progress_topic(flow_run_id: object) -> str:
    """The Dask event topic one flow run's tasks report progress on."""
    return f"toolace-progress-{flow_run_id}"


class ThrottledRelay:
    """Calls ``send`` on :meth:`__call__`, at most once per ``every_s`` (the first call always sends)."""

    def __init__(self, send: Callable[[], None], every_s: float = RELAY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sent_at = float("-inf")
        self.sent = 0

    def __call__(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._sent_at < self._every_s:
                return
            self._sent_at = now
            self.sent += 1
        try:
            self._send()
        except Exception:  # noqa: BLE001 - a relay that fails must not fail the batch; the flow's wait still has its deadline
            pass


def worker_relay(every_s: float = RELAY_EVERY_S) -> ThrottledRelay | None:
    """A relay to the flow run's topic when this code runs in a Prefect task on a Dask worker; else ``None``."""
    try:
        from distributed import get_worker
        from prefect.context import TaskRunContext
    except ImportError:
        return None
    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker
        return None
    context = TaskRunContext.get()
    flow_run_id = getattr(getattr(context, "task_run", None), "flow_run_id", None)
    if flow_run_id is None:
        return None
    topic = progress_topic(flow_run_id)
    return ThrottledRelay(lambda: worker.log_event(topic, time.time()), every_s)


@contextlib.contextmanager
def listening(client: Any, topic: str, on_progress: Callable[[], None]) -> Iterator[None]:
    """While the block runs, each event on ``topic`` (from any worker) calls ``on_progress``."""
    client.subscribe_topic(topic, lambda event: on_progress())
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the cluster may already be closing
            client.unsubscribe_topic(topic)
