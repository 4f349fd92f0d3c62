"""On Dask the flow's stall watchdog hears the workers: a long batch that keeps moving is never taken for a stall,
and one that stops moving (LLM request or CPU step alike) fails the flow's wait in one line."""

from __future__ import annotations

import re
import time

import pytest
from prefect import flow, task
from prefect_dask import DaskTaskRunner

from flows.stages.run_context import workers_watched as _worker_progress
from toolace.dask_progress import ThrottledRelay, progress_topic, worker_relay
from toolace.stall_watchdog import StallError, StallWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_relay_sends_at_most_once_per_interval_and_never_fails_its_caller() -> None:
    clock, sent = Clock(), []
    relay = ThrottledRelay(lambda: sent.append(clock.now), every_s=1.0, clock=clock)
    for step in range(25):  # 2.5 s of steps every 0.1 s
        clock.now = step / 10
        relay()
    assert sent == [0.0, 1.0, 2.0]

    def broken() -> None:
        raise OSError("scheduler gone")

    ThrottledRelay(broken)()  # the batch goes on; the flow's wait keeps its own deadline


def test_a_watchdog_relays_each_progress() -> None:
    relayed: list[int] = []
    watchdog = StallWatchdog(10, relay=lambda: relayed.append(1))
    watchdog.progress()
    watchdog.request_done(watchdog.request_queued("dialogs", "http://x"), answered=True)
    assert len(relayed) == 2


def test_outside_a_dask_worker_there_is_no_relay() -> None:
    assert worker_relay() is None
    assert progress_topic("f1") == "toolace-progress-f1"


@task
def steps(count: int, pause_s: float, report: bool) -> bool:
    """A CPU-like task on a Dask worker: ``count`` steps of ``pause_s``, each relayed to the flow when ``report``."""
    relay = worker_relay(every_s=0.2)
    for _ in range(count):
        time.sleep(pause_s)
        if report and relay is not None:
            relay()
    return relay is not None


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": False,
                                                 "dashboard_address": None}))
def watched_on_dask(stall_timeout_s: float) -> tuple[bool, str, float]:
    watchdog = StallWatchdog(stall_timeout_s, poll_s=0.1)
    # the worker's first task (its Prefect task-run setup, unwatched here) before the watched ones: on a loaded
    # machine that alone took longer than a short stall timeout, before the task's first step could report
    steps.submit(1, 0.0, False).result(timeout=120)
    with _worker_progress(watchdog):
        # 6 s of steps, twice the stall timeout: moving, so never a stall
        relayed = watchdog.wait(steps.submit(30, 0.2, True), "context_tree", "(all of it)")
        started = time.monotonic()
        try:  # longer work, silent: the flow's wait fails after the timeout, not when the task ends
            watchdog.wait(steps.submit(60, 0.2, False), "loss", "(all of it)")
        except StallError as error:
            return relayed, str(error), time.monotonic() - started
    return relayed, "", 0.0


def test_on_dask_the_flows_watchdog_hears_the_workers_progress() -> None:
    relayed, error, waited = watched_on_dask(3.0)
    assert relayed, "the task on the Dask worker found no relay"
    assert re.match(r"stage loss, batch \(all of it\): no progress for \d+ s; waiting for the batch task", error), error
    assert waited < 9.0  # the silent task would have run 12 s


@pytest.mark.parametrize("every_s", [0.0])
def test_a_relay_with_no_interval_sends_every_time(every_s: float) -> None:
    sent: list[int] = []
    relay = ThrottledRelay(lambda: sent.append(1), every_s=every_s)
    relay()
    relay()
    assert len(sent) == 2
