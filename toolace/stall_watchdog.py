"""The stall watchdog: a run that makes no progress says what it waits for, then fails, instead of waiting silently.

A :class:`StallWatchdog` belongs to one flow run (``run_stages`` makes it, with ``stall_timeout_s`` from the config)
or, on a Dask worker, to one batch task. Progress is anything that moves the run on: an LLM answer (every
:class:`~toolace.llm.gateway.LLMGateway` given the watchdog reports each one) or a finished batch. The waits
that could hang (the flow on a batch task, a batch task's thread on the shared LLM loop) go through
:meth:`StallWatchdog.wait`, which polls the future and, while nothing progresses:

- after ``warn_after_s`` (a tenth of the timeout) logs one warning and tells the progress sink (``on_stall``): the
  CLI's bar and the Prefect UI show the stall while it lasts, and clear it when progress resumes;
- after ``stall_timeout_s`` logs and raises :class:`StallError`, one line naming the stage, the batch and what it
  waits for ("stage dialogs, batch 3: no progress for 600 s; waiting for 2 LLM requests (oldest in flight 612 s
  to http://.../chat/completions)"), and cancels the other waits it watches (a batch's coroutine on the shared
  loop), so the process can exit. The run resumes with the same ``--run-id``: finished batches are cached.

The gateway registers each request while it waits for a slot and while it is in flight, which is what the line
says the run waits for. No state lives at module level: the flow hands its watchdog to the batch tasks it runs
in its own process through :data:`CURRENT_WATCHDOG` (a context variable, copied into Prefect's worker threads and
onto the shared LLM loop with the rest of the caller's context).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from toolace.errors import UserError

DEFAULT_STALL_TIMEOUT_S = 600.0
POLL_S = 0.5  # how often a watched wait looks at its future and at the clock
SHOW_EVERY_S = 5.0  # how often a stall's progress display is refreshed while it lasts

# The watchdog of the flow run this code serves, when it runs in the flow's process (``None`` elsewhere).
CURRENT_WATCHDOG: contextvars.ContextVar[StallWatchdog | None] = contextvars.ContextVar(
    "toolace_stall_watchdog", default=None)

# what a stall is shown with: (stage, one-line message) while it lasts, (stage, None) once progress resumes
StallSink = Callable[[str, str | None], None]


class StallError(UserError):
    """The run made no progress for ``stall_timeout_s``: the message is one line naming the stage, the batch and
    what the run waits for. A user error: retrying the batch at once would most likely wait the same way (the
    run resumes with the same ``--run-id``)."""


@dataclass
class _Request:
    stage: str
    url: str
    queued_at: float
    sent_at: float | None = None  # None: waiting for a slot, the limiter or the first-answer gate


class StallWatchdog:
    """Notices waits that make no progress (see the module docstring). Thread-safe: gateways on the shared LLM
    loop report to it while the flow's thread and batch tasks' threads wait through it."""

    def __init__(self, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S, *, on_stall: StallSink | None = None,
                 logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
                 warn_after_s: float | None = None, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic, hint: str | None = None,
                 watching: bool = True, relay: Callable[[], None] | None = None) -> None:
        """``watching=False``: :meth:`wait` only waits, it never fires. ``relay``: also called on each progress
        (a batch's own watchdog on a Dask worker relays it to the flow's: :mod:`toolace.dask_progress`)."""
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be positive, not {stall_timeout_s}")
        self.stall_timeout_s = float(stall_timeout_s)
        self.warn_after_s = float(warn_after_s) if warn_after_s is not None else max(1.0, stall_timeout_s / 10)
        self.poll_s = poll_s
        self.on_stall = on_stall
        self.logger = logger or logging.getLogger("toolace.stall")
        self.hint = hint  # appended to the failure line, e.g. how to resume
        self.watching = watching
        self.relay = relay
        self._owner = threading.get_ident()  # the progress display is told from the thread that made it only
        self._clock = clock
        self._lock = threading.Lock()
        self._last_progress = clock()
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._watched: set[concurrent.futures.Future[Any]] = set()
        self._warned: str | None = None  # the stage a stall is shown for, until progress resumes
        self._shown_at = float("-inf")  # the last time on_stall was told (at most every SHOW_EVERY_S)
        self._cleared: str | None = None  # a stall that ended, not yet cleared from the display (by the owner)
        self.failure: StallError | None = None  # set when the watchdog fired; every later wait raises it
        self.stalls_shown = 0

    # -- what the gateways report ------------------------------------------------------------------------

    def progress(self) -> None:
        """Something moved on (an answer, a finished batch): the idle clock restarts and a shown stall clears."""
        if self.relay is not None:
            self.relay()
        with self._lock:
            self._last_progress = self._clock()
            shown, self._warned = self._warned, None
        if shown is not None:
            self.logger.info("stage %s: progress again", shown)
            if self.on_stall is not None and threading.get_ident() == self._owner:
                self.on_stall(shown, None)
            elif self.on_stall is not None:  # told by the owner's next wait or check
                with self._lock:
                    self._cleared = shown

    def request_queued(self, stage: str, url: str) -> int:
        """A request waits for its turn (slot, limiter, gate); returns its token for :meth:`request_sent` and
        :meth:`request_done`."""
        with self._lock:
            token = next(self._ids)
            self._requests[token] = _Request(stage, url, self._clock())
            return token

    def request_sent(self, token: int) -> None:
        with self._lock:
            if token in self._requests:
                self._requests[token].sent_at = self._clock()

    def request_done(self, token: int, answered: bool) -> None:
        """The request left (answered, failed or cancelled); an answer counts as progress."""
        with self._lock:
            self._requests.pop(token, None)
        if answered:
            self.progress()

    # -- what the run waits for ----------------------------------------------------------------------------

    def idle_s(self, since: float | None = None) -> float:
        """Seconds without progress, counted from ``since`` (a clock reading) when that is later."""
        with self._lock:
            start = self._last_progress if since is None else max(self._last_progress, since)
        return max(0.0, self._clock() - start)

    def waiting_for(self) -> str:
        """What the run waits for, in words: the LLM requests in flight (the oldest's age and URL) and those
        waiting for a slot; or the batch task itself when no request is out."""
        now = self._clock()
        with self._lock:
            requests = list(self._requests.values())
        sent = [r for r in requests if r.sent_at is not None]
        queued = len(requests) - len(sent)
        parts = []
        if sent:
            oldest = min(sent, key=lambda r: r.sent_at or now)
            parts.append(f"{len(sent)} LLM request{'s' if len(sent) != 1 else ''} (oldest in flight "
                         f"{now - (oldest.sent_at or now):.0f} s to {oldest.url})")
        if queued:
            parts.append(f"{queued} request{'s' if queued != 1 else ''} waiting for an in-flight slot or the "
                         "rate limit")
        return "; ".join(parts) if parts else "the batch task (no LLM request in flight)"

    def in_flight(self) -> int:
        with self._lock:
            return sum(r.sent_at is not None for r in self._requests.values())

    # -- watched waits ---------------------------------------------------------------------------------------

    def check(self, stage: str, batch: object, since: float | None = None, grace_s: float = 0.0) -> None:
        """Raise :class:`StallError` when the run has not progressed for ``stall_timeout_s`` (plus ``grace_s``),
        or already stalled; show the stall after ``warn_after_s``."""
        if self.failure is not None:
            raise self.failure
        self._clear_shown()
        idle = self.idle_s(since)
        if idle < self.warn_after_s:
            return
        line = f"stage {stage}, batch {batch}: no progress for {idle:.0f} s; waiting for {self.waiting_for()}"
        if idle >= self.stall_timeout_s + grace_s:
            self._fire(StallError(line + (f"; {self.hint}" if self.hint else "")))
        now = self._clock()
        with self._lock:
            first, self._warned = self._warned is None, stage
            show = (first or now - self._shown_at >= SHOW_EVERY_S) and threading.get_ident() == self._owner
            if show:
                self._shown_at = now
        if first:
            self.stalls_shown += 1
            self.logger.warning("%s (the run fails after %.0f s without progress: stall_timeout_s)", line,
                                self.stall_timeout_s)
        if show and self.on_stall is not None and threading.get_ident() == self._owner:
            self.on_stall(stage, line)

    def _clear_shown(self) -> None:
        """In the owner's thread: clear a stall display whose stall ended in another thread."""
        if threading.get_ident() != self._owner:
            return
        with self._lock:
            cleared, self._cleared = self._cleared, None
        if cleared is not None and self.on_stall is not None:
            self.on_stall(cleared, None)

    def _fire(self, error: StallError) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = error
            error, watched = self.failure, list(self._watched)  # type: ignore[assignment]
        if first:
            self.logger.error("%s", error)
        for future in watched:  # the batches' coroutines on the shared loop: cancelled, so the process can exit
            future.cancel()
        raise error

    def wait(self, future: Any, stage: str, batch: object, grace_s: float = 0.0) -> Any:
        """``future.result()`` (a ``concurrent.futures.Future`` or a Prefect future), watched: raises
        :class:`StallError` when nothing progresses for ``stall_timeout_s`` from the start of this wait or the
        last progress, whichever is later. A finished wait counts as progress. ``grace_s``: fire that much later
        (a batch's own wait, which leaves the first word to the flow's wait on it, naming the flow's batch)."""
        if not self.watching:
            result = future.result()
            self.progress()
            return result
        since = self._clock()
        plain = isinstance(future, concurrent.futures.Future)
        inner = future if plain else getattr(future, "wrapped_future", None)
        if plain:
            with self._lock:
                self._watched.add(future)
        try:
            while True:
                if plain:
                    concurrent.futures.wait([future], timeout=self.poll_s)
                else:
                    future.wait(timeout=self.poll_s)
                if inner is None or inner.done():
                    break
                self.check(stage, batch, since, grace_s)
        except concurrent.futures.CancelledError:
            raise self.failure or StallError(f"stage {stage}, batch {batch}: cancelled") from None
        finally:
            if plain:
                with self._lock:
                    self._watched.discard(future)
        if plain and future.cancelled():
            raise self.failure or StallError(f"stage {stage}, batch {batch}: cancelled")
        result = future.result()
        self.progress()
        self._clear_shown()
        return result


def items_of(plans: Sequence[Any]) -> str:
    """A batch named by its plans' indexes, as a stall's message names it: ``items 48-63``."""
    indexes = [int(getattr(plan, "index", 0)) for plan in plans]
    if not indexes:
        return "(empty)"
    low, high = min(indexes), max(indexes)
    return f"items {low}-{high}" if high > low else f"item {low}"
