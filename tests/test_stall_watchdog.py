"""The stall watchdog: no silent wait. A stage that makes no progress is shown while it lasts, then fails the run
in one line naming the stage, the batch and what it waits for; the run then resumes with the same --run-id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.scripted_llm_server import ScriptedLLMServer
from tests.test_crash_resume import DIALOGS, cached_keys, command, environment, is_dialog_request
from tests.test_deployment_e2e import DOCS, mining_answers
from toolace.config import SAMPLE_CORPUS
from toolace.llm.gateway import GatewaySettings, LLMGateway
from toolace.llm.rate_limit import FirstAnswerGate, InFlightSlots, RateLimiter
from toolace.llm.response_cache import request_key
from toolace.llm.shared_loop import LlmLoop
from toolace.stall_watchdog import StallError, StallWatchdog, items_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Shown:
    """A progress sink that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []

    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, amount: int) -> None:
        return None

    def finish(self, name: str) -> None:
        return None

    def stall(self, name: str, message: str | None) -> None:
        self.events.append((name, message))


def test_a_stall_is_shown_then_fails_in_one_line_naming_stage_batch_and_what_it_waits_for() -> None:
    clock, shown = Clock(), Shown()
    watchdog = StallWatchdog(600, on_stall=shown.stall, clock=clock, hint="resume with --run-id r1")
    a = watchdog.request_queued("dialog_generation", "http://h:1/v1/chat/completions")
    b = watchdog.request_queued("dialog_generation", "http://h:1/v1/chat/completions")
    watchdog.request_queued("dialog_generation", "http://h:1/v1/chat/completions")  # waits for a slot
    watchdog.request_sent(a)
    clock.now += 12
    watchdog.request_sent(b)
    watchdog.check("dialogs", 3)  # 12 s: nothing to say yet
    assert shown.events == []
    clock.now += 60  # 72 s idle: past warn_after_s (a tenth of the timeout), shown
    watchdog.check("dialogs", 3)
    assert shown.events[-1][0] == "dialogs" and "no progress for 72 s" in (shown.events[-1][1] or "")
    watchdog.progress()  # an answer: the stall ends, the display clears
    assert shown.events[-1] == ("dialogs", None)
    clock.now += 600
    with pytest.raises(StallError) as info:
        watchdog.check("dialogs", 3)
    line = str(info.value)
    assert "\n" not in line
    assert line == ("stage dialogs, batch 3: no progress for 600 s; waiting for 2 LLM requests (oldest in flight "
                    "672 s to http://h:1/v1/chat/completions); 1 request waiting for an in-flight slot or the rate "
                    "limit; resume with --run-id r1")
    with pytest.raises(StallError) as again:  # every later wait fails the same way
        watchdog.check("verification", 4)
    assert again.value is info.value


def test_progress_restarts_the_clock_and_a_wait_counts_from_its_own_start() -> None:
    clock = Clock()
    watchdog = StallWatchdog(100, clock=clock)
    clock.now += 99
    watchdog.check("mining", 1)
    token = watchdog.request_queued("mining", "u")
    watchdog.request_done(token, answered=True)
    clock.now += 99
    watchdog.check("mining", 1)
    clock.now += 500  # long CPU work with nothing in flight ...
    watchdog.check("mining", 2, since=clock.now - 10)  # ... then a fresh wait: 10 s idle, no stall
    assert watchdog.waiting_for() == "the batch task (no LLM request in flight)"
    with pytest.raises(StallError, match="stage mining, batch 2: no progress for 599 s"):
        watchdog.check("mining", 2)


def test_wait_on_a_stuck_future_fails_and_cancels_it() -> None:
    watchdog = StallWatchdog(0.6, poll_s=0.05, logger=logging.getLogger("test"))
    stuck: concurrent.futures.Future[int] = concurrent.futures.Future()
    started = time.monotonic()
    with pytest.raises(StallError, match=r"^stage api_synthesis, batch items 0-15: no progress for \d s; waiting "
                       "for the batch task"):
        watchdog.wait(stuck, "api_synthesis", "items 0-15")
    assert 0.5 < time.monotonic() - started < 3
    assert stuck.cancelled()
    done: concurrent.futures.Future[int] = concurrent.futures.Future()
    done.set_result(7)
    fresh = StallWatchdog(0.6, poll_s=0.05)
    assert fresh.wait(done, "mining", 1) == 7


def test_every_wait_on_a_slot_the_limiter_or_the_gate_has_a_deadline() -> None:
    async def run() -> None:
        slots = InFlightSlots(1)
        await slots.acquire()
        with pytest.raises(TimeoutError, match="no in-flight slot was released for 0 s"):
            await slots.acquire(timeout_s=0.2)
        assert slots._waiters == []  # left the queue
        slots.release()
        await slots.acquire(timeout_s=0.2)  # the slot it gave up is free again
        slots.release()
        assert slots.in_use == 0
        limiter = RateLimiter(1, None)
        await limiter.acquire(1)
        with pytest.raises(TimeoutError, match="no request passed the rate limit"):
            await limiter.acquire(1, timeout_s=0.2)
        gate = FirstAnswerGate()
        assert await gate.enter(timeout_s=0.2) is True
        with pytest.raises(TimeoutError, match="first request"):
            await gate.enter(timeout_s=0.2)

    asyncio.run(run())


def test_a_queue_that_moves_is_no_stall() -> None:
    async def run() -> None:
        slots = InFlightSlots(1)
        await slots.acquire()

        async def holder() -> None:  # releases and takes back every 0.1 s: the queue moves
            for _ in range(6):
                await asyncio.sleep(0.1)
                slots.release()
                await slots.acquire(priority=-1)
            slots.release()

        task = asyncio.create_task(holder())
        await slots.acquire(priority=5, timeout_s=0.3)  # waits 0.7 s in all, never 0.3 s without a release
        slots.release()
        await task

    asyncio.run(run())


def test_a_stalled_request_without_hedging_fails_the_batch_in_one_line(llm: ScriptedLLMServer) -> None:
    llm.set_fault_rates({"stall": 1.0}, stall_s=30.0)
    watchdog = StallWatchdog(1.0, poll_s=0.05)
    settings = GatewaySettings(base_url=llm.base_url, model="scripted-model", hedge=False, concurrency=3)
    gateway = LLMGateway(settings, watchdog=watchdog)

    async def work() -> None:
        try:
            await gateway.chat([{"role": "user", "content": "stall"}], stage="dialog_generation")
        finally:
            await gateway.aclose()

    started = time.monotonic()
    llm_loop = LlmLoop()
    with pytest.raises(StallError) as info:
        llm_loop.run(work(), watchdog, "dialogs", 3)
    assert time.monotonic() - started < 5
    assert str(info.value).startswith(
        "stage dialogs, batch 3: no progress for 1 s; waiting for 1 LLM request (oldest in flight 1 s to "
        f"{llm.base_url}/chat/completions)")
    deadline = time.monotonic() + 5
    while llm.stalls_abandoned < 1:  # the batch's coroutine was cancelled: the connection closed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert gateway._slots.in_use == 0 and watchdog.in_flight() == 0
    llm_loop.close()


def test_items_of_names_a_batch_by_its_plans() -> None:
    class Plan:
        def __init__(self, index: int) -> None:
            self.index = index

    assert items_of([Plan(48), Plan(63), Plan(50)]) == "items 48-63"
    assert items_of([Plan(7)]) == "item 7"
    assert items_of([]) == "(empty)"


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_a_stalled_stage_fails_the_run_in_one_line_then_it_resumes_with_the_same_run_id(
        llm: ScriptedLLMServer, tmp_path: Path) -> None:
    """``toolace run`` while every dialog request stalls (hedging off, stall_timeout_s 30: long enough that the
    stages before the dialogs, one batch each, show progress within it on a loaded machine; 20 s was not, with two
    test workers and a model server on two cores, the context tree's task then spending that long in Prefect's
    orchestration before its first step): the bar shows the stall
    while it lasts, the run fails with one line naming the stage, the batch and what it waits for, and the rerun
    with the same --run-id completes without mining again or resending a request answered before the stall."""
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    for name in DOCS:
        shutil.copy(Path(SAMPLE_CORPUS) / name, corpus / name)
    llm.script(mining_answers)
    rule = llm.script(lambda body: {"delay": 60.0} if is_dialog_request(body) else None)
    settings = tmp_path / "run.yaml"
    settings.write_text("stall_timeout_s: 30\nllm_hedge: false\nmodel_checks: false\ntemplate_families: []\n"
                        "decision_samples: 1\nguidance_rounds: 0\nbatch_size: 3\n")
    cli = [*command(corpus, out, llm.base_url), "--config", str(settings)]
    cli[cli.index("--run-id") + 1] = "stalled"
    env = environment(tmp_path)
    first = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode != 0
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert errors[0].startswith("error: stage dialogs, batch items 0-2: no progress for "), errors[0]
    assert "; waiting for " in errors[0] and f"{llm.base_url}/chat/completions" in errors[0]
    assert errors[0].endswith("; resume with --run-id stalled")
    assert "stalled: no progress for" in " ".join(first.stderr.split())  # the bar showed it
    assert "(the run fails after 30 s without progress: stall_timeout_s)" in first.stderr  # logged while it lasted
    assert not (out / "runs" / "stalled").exists()
    answered = cached_keys(out)  # every answer the stalled run had received
    assert answered
    llm.unscript(rule)
    llm.clear_requests()
    second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    manifest = json.loads((out / "runs" / "stalled" / "manifest.json").read_text())
    assert manifest["stages"]["mining"]["reused"] == len(DOCS)  # the first run's mining was kept
    resent = [b for b in llm.requests if request_key(b) in answered]
    assert resent == [], f"{len(resent)} requests answered before the stall were sent again"
    assert manifest["dataset"]["dialogs"] == DIALOGS


def test_the_cli_bar_shows_a_stall_while_it_lasts() -> None:
    from rich.console import Console

    from toolace.cli.progress_bar import RichProgress

    buffer = io.StringIO()
    with RichProgress(Console(file=buffer, width=200, force_terminal=False)) as bar:
        bar.stage("dialogs", 30)
        bar.stall("dialogs", "stage dialogs, batch items 0-2: no progress for 75 s; waiting for 2 LLM requests")
        bar.stall("verification", "stage verification, batch items 0-2: no progress for 80 s; waiting for x")
    assert "stalled: no progress for 80 s; waiting for x" in buffer.getvalue()
    buffer = io.StringIO()
    with RichProgress(Console(file=buffer, width=200, force_terminal=False)) as bar:
        bar.stage("dialogs", 30)
        bar.stall("dialogs", "stage dialogs, batch 3: no progress for 75 s; waiting for 2 LLM requests")
        bar.stall("dialogs", None)
    assert "stalled" not in buffer.getvalue()


@pytest.mark.usefixtures("prefect_harness")
def test_the_prefect_progress_artifact_says_a_stall_while_it_lasts() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.run_progress import PrefectProgress

    inner = Shown()

    @flow(name="stall-display")
    def stalled_run() -> tuple[str | None, str | None]:
        sink = PrefectProgress(inner, "stall-ui")
        sink.stage("dialogs", 30)
        with get_client(sync_client=True) as client:
            sink.stall("dialogs", "stage dialogs, batch items 0-2: no progress for 75 s; waiting for 2 LLM requests")
            during = _artifact(client, sink.artifact_id)
            sink.stall("dialogs", None)
            return during, _artifact(client, sink.artifact_id)

    during, after = stalled_run()
    assert "STALLED, stage dialogs, batch items 0-2: no progress for 75 s" in (during or "")
    assert after == "Progress of run stall-ui"
    assert inner.events == [("dialogs", "stage dialogs, batch items 0-2: no progress for 75 s; waiting for 2 LLM "
                                        "requests"), ("dialogs", None)]


def _artifact(client: Any, artifact_id: Any) -> str | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    found = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    return found[0].description if found else None


# ----------------------------------------------------------------------------- CPU tasks (context tree, loss, probes)


def _watched_cpu_task(watchdog: StallWatchdog, steps: int, step_s: float, report: bool) -> Any:
    """A CPU task run as the flow runs one (a worker thread with the flow's context), waited on through the
    watchdog as ``flows.scheduler.on_runner`` waits."""
    import contextvars

    from flows.batch_tasks import _progress_reporter
    from toolace.stall_watchdog import CURRENT_WATCHDOG

    def work() -> str:
        progressed = _progress_reporter()
        for _ in range(steps):
            time.sleep(step_s)
            if report:
                progressed()
        return "done"

    token = CURRENT_WATCHDOG.set(watchdog)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(contextvars.copy_context().run, work)
            return watchdog.wait(future, "complexity-loss", "(all of it)")
    finally:
        CURRENT_WATCHDOG.reset(token)


def test_a_cpu_task_that_reports_its_steps_outlives_the_stall_timeout() -> None:
    watchdog = StallWatchdog(1.0, warn_after_s=0.3, poll_s=0.05)
    assert _watched_cpu_task(watchdog, steps=10, step_s=0.25, report=True) == "done"  # 2.5 s in all


def test_a_cpu_task_without_progress_fails_the_run_naming_it() -> None:
    watchdog = StallWatchdog(1.0, warn_after_s=0.3, poll_s=0.05)
    with pytest.raises(StallError, match=r"^stage complexity-loss, batch \(all of it\): no progress for 1 s"):
        _watched_cpu_task(watchdog, steps=1, step_s=2.5, report=False)


def test_a_cpu_task_counts_its_start_as_progress() -> None:
    """The time a CPU batch spends queued for the runner, in Prefect's orchestration or loading its model is not
    counted against its first step: asking for the reporter (once that is done) is the task's first report."""
    from flows.batch_tasks import _progress_reporter
    from toolace.stall_watchdog import CURRENT_WATCHDOG

    clock = Clock()
    watchdog = StallWatchdog(100, clock=clock)
    token = CURRENT_WATCHDOG.set(watchdog)
    try:
        clock.now += 99  # queued, orchestrated, loading: 99 s without a report
        progressed = _progress_reporter()  # the task's body has started
        clock.now += 99
        watchdog.check("context_tree", "(all of it)")  # 99 s since the start: no stall
        progressed()
        clock.now += 99
        watchdog.check("context_tree", "(all of it)")
        clock.now += 2
        with pytest.raises(StallError, match="stage context_tree, batch \\(all of it\\): no progress for 101 s"):
            watchdog.check("context_tree", "(all of it)")
    finally:
        CURRENT_WATCHDOG.reset(token)
