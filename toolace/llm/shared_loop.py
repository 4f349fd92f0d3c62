"""One event loop per run for every batch's LLM traffic (:class:`LlmLoop`, owned by the run context).

Batch tasks run in Prefect's worker threads, several at once (a batch generating while the one before is
verified). Each used to run its own event loop: the loops then competed for the interpreter, and a response that
arrived in one loop waited while another held it, so every request held its in-flight slot longer. Here each
batch's coroutine runs on one loop in a background thread and the worker thread waits for its result: one loop
does all the network I/O, and a freed slot goes to the next request without a hand-over between threads.

``run_coroutine_threadsafe`` schedules the coroutine with a copy of the caller's context, so context variables
(the request priority, Prefect's run context) reach it. The run context creates the loop and opens it for the
run's length; batch tasks of the flow's process find it in :data:`CURRENT_LLM` (set by the flow from its run
context, like the stall watchdog); a task elsewhere (a Dask worker, a test) opens its own for the batch.

Opening the loop also shortens the interpreter's thread switch interval (``sys.setswitchinterval``) from Python's
5 ms to :data:`SWITCH_INTERVAL_S`, never lengthening one already shorter. Every response and every freed slot is
handled on this one thread, and each time it comes back from waiting on the network it must take the interpreter
back from whatever thread holds it: a verification batch's rule layer, a table writer, a Prefect task engine. With
the default interval it can wait up to 5 ms each time while 64 requests sit answered. Measured on 2 cores
(``benchmarks/llm_throughput.py --apis 300 --dialogs 900``): the dialog phase went from 252-254 to 257-264 req/s;
1 ms and 0.2 ms measured within noise of 0.5 ms. CPU-bound threads pay a little more switching, which the
benchmark's CPU per request did not show. Closing the loop restores the interval it found.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from toolace.llm.rate_limit import EndpointLimits

if TYPE_CHECKING:
    from toolace.stall_watchdog import StallWatchdog

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.0005  # see the module docstring
CLOSE_TIMEOUT_S = 10.0  # closing waits this long for the loop's thread to end


class LlmLoop:
    """An event loop in a daemon thread that batch tasks' coroutines run on (:meth:`run`); a context manager
    that opens it (and shortens the switch interval) and closes it (restoring the interval)."""

    def __init__(self, name: str = "toolace-llm-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._interval_before: float | None = None

    def open(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                interval = sys.getswitchinterval()
                if interval > SWITCH_INTERVAL_S:
                    self._interval_before = interval
                    sys.setswitchinterval(SWITCH_INTERVAL_S)
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stops the loop and waits (at most ``timeout_s``) for its thread; restores the switch interval."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
            interval, self._interval_before = self._interval_before, None
        if loop is not None and not loop.is_closed():
            try:  # what is still running is cancelled and given the time to close its connections
                asyncio.run_coroutine_threadsafe(_cancel_pending(timeout_s / 2), loop).result(timeout_s)
            except Exception:  # noqa: BLE001  (a loop that cannot wind down is stopped all the same)
                pass
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout_s / 2)
            if thread is None or not thread.is_alive():
                loop.close()
        if interval is not None:
            sys.setswitchinterval(interval)

    def __enter__(self) -> LlmLoop:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def run(self, coroutine: Coroutine[Any, Any, T], watchdog: StallWatchdog | None = None, stage: str = "?",
            batch: object = "?", grace_s: float = 0.0) -> T:
        """Runs ``coroutine`` on the loop and waits for its result (or its exception). Called from the loop's
        own thread it would wait forever, so that is refused. With a ``watchdog`` the wait is watched
        (:meth:`~toolace.stall_watchdog.StallWatchdog.wait`): when nothing progresses for its timeout (plus
        ``grace_s``) the coroutine is cancelled and :class:`~toolace.stall_watchdog.StallError` names ``stage``,
        ``batch`` and what it waited for; without one the caller's wait has no deadline of its own (the
        coroutine's waits have theirs)."""
        loop = self.open()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coroutine.close()
            raise RuntimeError("LlmLoop.run() called from the LLM loop itself: await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        if watchdog is None:
            return future.result()
        return watchdog.wait(future, stage, batch, grace_s)  # type: ignore[no-any-return]


async def _cancel_pending(timeout_s: float) -> None:
    this = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not this]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


def tls_context() -> ssl.SSLContext:
    """The TLS settings the SDK's transport would build for itself (certificates as the environment says), made
    once per run: loading the certificate store costs about 20 ms of CPU, which every batch's gateway (hundreds
    in a run) paid again when each client made its own (docs/benchmarks.md, "One scheduler")."""
    import httpx2

    return httpx2.create_ssl_context(verify=True, trust_env=True)


@dataclass(frozen=True)
class LlmRuntime:
    """What the gateways of one run share: the loop their batches run on, the endpoint limits (in-flight
    slots, rate budgets, first-answer gates, recent latencies) and the TLS context their clients verify with."""

    loop: LlmLoop = field(default_factory=LlmLoop)
    limits: EndpointLimits = field(default_factory=EndpointLimits)
    tls: ssl.SSLContext = field(default_factory=tls_context)


# the run's LLM runtime, for batch tasks of the flow's process (set by the flow from its run context)
CURRENT_LLM: ContextVar[LlmRuntime | None] = ContextVar("toolace_llm_runtime", default=None)
