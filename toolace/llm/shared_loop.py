"""One event loop per process for every batch's LLM traffic.

Batch tasks run in Prefect's worker threads, several at once (a batch generating while the one before is
verified). Each used to run its own event loop: the loops then competed for the interpreter, and a response that
arrived in one loop waited while another held it, so every request held its in-flight slot longer. Here each
batch's coroutine runs on one loop in a background thread and the worker thread waits for its result: one loop
does all the network I/O, and a freed slot goes to the next request without a hand-over between threads.

``run_coroutine_threadsafe`` schedules the coroutine with a copy of the caller's context, so context variables
(the request priority, Prefect's run context) reach it. A forked child gets its own loop.

Starting the loop also shortens the interpreter's thread switch interval (``sys.setswitchinterval``) from Python's
5 ms to :data:`SWITCH_INTERVAL_S`, never lengthening one already shorter. Every response and every freed slot is
handled on this one thread, and each time it comes back from waiting on the network it must take the interpreter
back from whatever thread holds it: a verification batch's rule layer, a table writer, a Prefect task engine. With
the default interval it can wait up to 5 ms each time while 64 requests sit answered. Measured on 2 cores
(``benchmarks/llm_throughput.py --apis 300 --dialogs 900``): the dialog phase went from 252-254 to 257-264 req/s;
1 ms and 0.2 ms measured within noise of 0.5 ms. CPU-bound threads pay a little more switching, which the
benchmark's CPU per request did not show.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from toolace.stall_watchdog import StallWatchdog

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.0005  # see the module docstring

_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None  # (the process that started it, the loop)


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's LLM event loop, started on first use in a daemon thread (which also shortens the thread
    switch interval to :data:`SWITCH_INTERVAL_S`)."""
    global _loop
    with _lock:
        if _loop is None or _loop[0] != os.getpid() or _loop[1].is_closed():
            if sys.getswitchinterval() > SWITCH_INTERVAL_S:
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="toolace-llm-loop", daemon=True).start()
            _loop = (os.getpid(), loop)
        return _loop[1]


def run_shared(coroutine: Coroutine[Any, Any, T], watchdog: StallWatchdog | None = None, stage: str = "?",
               batch: object = "?", grace_s: float = 0.0) -> T:
    """Runs ``coroutine`` on the shared loop and waits for its result (or its exception). Called from the loop's
    own thread it would wait forever, so that is refused. With a ``watchdog`` the wait is watched
    (:meth:`~toolace.stall_watchdog.StallWatchdog.wait`): when nothing progresses for its timeout (plus
    ``grace_s``) the coroutine is cancelled and :class:`~toolace.stall_watchdog.StallError` names ``stage``,
    ``batch`` and what it waited for; without one the caller's wait has no deadline of its own (the coroutine's
    waits have theirs)."""
    loop = shared_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("run_shared() called from the shared LLM loop itself: await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    if watchdog is None:
        return future.result()
    return watchdog.wait(future, stage, batch, grace_s)  # type: ignore[no-any-return]
