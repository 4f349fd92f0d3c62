"""The limits on LLM traffic, shared by every gateway of a run (:class:`EndpointLimits`, owned by the run context).

Batch tasks run at the same time in several threads, each with its own gateway (the flow keeps the next batch
in flight while the previous one is embedded or verified); their coroutines share one event loop
(:class:`toolace.llm.shared_loop.LlmLoop`), and anything else may run its own. Their requests together
stay within ``concurrency`` in flight (:class:`InFlightSlots`) and within the requests- and tokens-per-minute
budgets (:class:`RateLimiter`, two token buckets refilled continuously): :class:`EndpointLimits` hands every
gateway of one endpoint the same pair. Prefect's global rate limits throttle contending threads far below
their nominal rate (measured at a tenth), so LLM traffic is limited here. Dask workers are processes: a
batch on a worker has its own limits. Until an endpoint has answered one request of a given shape, that shape's requests
go one at a time (:class:`FirstAnswerGate`): an endpoint that refuses a parameter
refuses one request, not one per slot. :func:`retry_after_s` reads how long an endpoint asks a client to wait.
Every wait here takes a deadline (``timeout_s``): the gateway gives each the run's ``stall_timeout_s``.
:class:`LatencyWindow`  keeps an endpoint's recent answer times, which the
gateway's hedging deadline is derived from.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import email.utils
import heapq
import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Mapping

RETRY_AFTER_SPREAD = 0.2  # a wait is spread up to this share later (earlier when capped)


def retry_after_s(headers: Mapping[str, str], cap_s: float = 60.0, now: dt.datetime | None = None,
                  rng: random.Random | None = None) -> float | None:
    """Seconds to wait before retrying, as the endpoint asks: ``retry-after-ms`` (OpenAI, Azure), else
    ``Retry-After`` in seconds or as an HTTP date (RFC 9110). ``None`` when neither is given or readable.

    The wait is capped at ``cap_s`` (an endpoint asking for an hour would stall the run) and jittered, so the
    requests told the same time do not all return at once: up to 20% later, or, when capped, up to 20%
    earlier than the cap (never over it)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    delay: float | None = None
    if "retry-after-ms" in lowered:
        try:
            delay = float(lowered["retry-after-ms"]) / 1000.0
        except ValueError:
            delay = None
    if delay is None and "retry-after" in lowered:
        text = lowered["retry-after"].strip()
        try:
            delay = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            delay = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if delay is None or delay != delay:  # absent, or NaN
        return None
    delay, cap_s = max(0.0, delay), max(0.0, cap_s)
    rng = rng or random.Random()  # never the process-wide state: that is the caller's
    draw = rng.uniform(1.0 - RETRY_AFTER_SPREAD, 1.0) if delay >= cap_s else rng.uniform(1.0, 1.0 + RETRY_AFTER_SPREAD)
    return min(cap_s, delay * draw) if delay < cap_s else cap_s * draw


class TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is); requests above capacity wait for a full bucket."""
        self._refill()
        needed = min(amount, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= min(amount, self.capacity)


class RateLimiter:
    """Both buckets, safe to share between threads (each waiting request sleeps in its own event loop)."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._lock = threading.Lock()
        self.passed_at = time.monotonic()  # the last request let through

    async def acquire(self, estimated_tokens: int, timeout_s: float | None = None) -> None:
        """Wait until both buckets hold this request. ``timeout_s``: ``TimeoutError`` when no request at all
        passed the limiter for that long while this one waited (waiting behind others that pass is no stall)."""
        if self.requests is None and self.tokens is None:
            return
        queued_at = time.monotonic()
        while True:
            with self._lock:
                wait = max(
                    self.requests.wait_time(1) if self.requests else 0.0,
                    self.tokens.wait_time(estimated_tokens) if self.tokens else 0.0,
                )
                if wait <= 0:
                    if self.requests:
                        self.requests.take(1)
                    if self.tokens:
                        self.tokens.take(estimated_tokens)
                    self.passed_at = time.monotonic()
                    return
                passed_at = self.passed_at
            if timeout_s is not None:
                left = max(queued_at, passed_at) + timeout_s - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no request passed the rate limit for {timeout_s:.0f} s")
                wait = min(wait, left)
            await asyncio.sleep(wait)


# Which request is served first when requests wait for a slot: the lowest number, first come first served among
# equals. A context variable, so each asyncio task (one per dialog) carries its own: dialog generation sets the
# dialog's plan index, so the oldest dialogs of the run finish first (a batch completes instead of every dialog of
# two batches advancing at the same slow pace), and a newer batch only fills the slots the older one leaves idle.
REQUEST_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("toolace_request_priority", default=0)


class InFlightSlots:
    """A counting semaphore for coroutines of several event loops (threads): at most ``size`` holders at once.
    Waiters are served by :data:`REQUEST_PRIORITY` (lowest first), first come, first served among equals. Use
    ``async with slots:``."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"in-flight slots must be at least 1, not {size}")
        self.size = size
        self._free = size
        self._lock = threading.Lock()
        self._order = itertools.count()
        # (priority, arrival, loop, waiter): a heap; a cancelled waiter is removed at once (rare)
        self._waiters: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.released_at = time.monotonic()  # the last release: a queue moves while this advances

    @property
    def in_use(self) -> int:
        return self.size - self._free

    async def acquire(self, priority: int | None = None, timeout_s: float | None = None) -> None:
        """Take a slot, waiting in :data:`REQUEST_PRIORITY` order (or ``priority``). ``timeout_s``: the deadline
        of a queue that does not move. ``TimeoutError`` when no slot was released for that long while this
        request waited (a long queue that moves is no stall; the waiter then leaves the queue, or passes on a
        slot granted meanwhile)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (REQUEST_PRIORITY.get() if priority is None else priority, next(self._order), loop, waiter)
            heapq.heappush(self._waiters, entry)
        queued_at = time.monotonic()
        try:
            if timeout_s is None:
                await waiter
            else:
                while not waiter.done():
                    moved = max(queued_at, self.released_at)
                    left = moved + timeout_s - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no in-flight slot was released for {timeout_s:.0f} s "
                                           f"({self.size} of {self.size} held)")
                    await asyncio.wait([waiter], timeout=left)
                waiter.result()
        except (asyncio.CancelledError, TimeoutError):
            with self._lock:
                granted = waiter.done() and not waiter.cancelled()
                if not granted:  # still queued: leave the queue
                    waiter.cancel()  # a grant already on its way sees it done and passes the slot on
                    try:
                        self._waiters.remove(entry)
                        heapq.heapify(self._waiters)
                    except ValueError:
                        pass  # a release is handing it the slot right now: _grant passes it on
            if granted:
                self.release()  # the slot came with the cancellation: give it back
            raise

    def release(self) -> None:
        with self._lock:
            self.released_at = time.monotonic()
            if not self._waiters:
                self._free += 1
                return
            _, _, loop, waiter = heapq.heappop(self._waiters)
        try:
            loop.call_soon_threadsafe(self._grant, waiter)
        except RuntimeError:  # that loop is closed (its waiter went with it): the next one gets the slot
            self.release()

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        """In the waiter's loop: hand it the slot, or pass the slot on when it was cancelled meanwhile."""
        if waiter.done():
            self.release()
        else:
            waiter.set_result(None)

    async def __aenter__(self) -> InFlightSlots:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class FirstAnswerGate:
    """Holds the requests of one endpoint and request shape until one of them is answered: the first goes alone
    (the probe), and the others follow at once when it succeeds. A probe that fails (refused, timed out) hands
    the role to the next waiting request, so a refused parameter costs one request per gateway instead of one
    per slot, and a flaky first answer delays nothing for long. Safe across threads and event loops (waiting
    requests poll; they only wait at the start of a run)."""

    POLL_S = 0.02

    def __init__(self) -> None:
        self.opened = False
        self._probing = False
        self._lock = threading.Lock()
        self.changed_at = time.monotonic()  # the last probe's end

    async def enter(self, timeout_s: float | None = None) -> bool:
        """Wait for this request's turn: ``True`` when it goes as the probe (then call :meth:`leave`);
        ``TimeoutError`` when no probe finished for ``timeout_s`` while this request waited."""
        queued_at = time.monotonic()
        while True:
            with self._lock:
                if self.opened:
                    return False
                if not self._probing:
                    self._probing = True
                    return True
            if timeout_s is not None and time.monotonic() >= max(queued_at, self.changed_at) + timeout_s:
                raise TimeoutError(f"the first request to this endpoint had no answer within {timeout_s:.0f} s")
            await asyncio.sleep(self.POLL_S)

    def leave(self, answered: bool) -> None:
        """The probe is done: ``answered`` opens the gate for good, else the next waiting request probes."""
        with self._lock:
            self._probing = False
            self.opened = self.opened or answered
            self.changed_at = time.monotonic()


class LatencyWindow:
    """The latencies (seconds, sent to answered) of the last ``size`` answered requests of one endpoint, per stage
    and over all stages; safe to share between threads. The gateway derives its hedging deadline from them
    (:func:`toolace.llm.gateway.hedge_deadline_s`): a stage's own recent requests when it has ``min_samples`` of
    them (a mining request and a dialog turn take different times), else the endpoint's."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._all: deque[float] = deque(maxlen=size)
        self._stages: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._all.append(seconds)
            self._stages.setdefault(stage, deque(maxlen=self.size)).append(seconds)

    def quantile(self, stage: str | None, q: float, min_samples: int) -> float | None:
        """The ``q`` quantile (nearest rank) of the stage's recent latencies, or the endpoint's when the stage has
        fewer than ``min_samples``; ``None`` when neither has that many."""
        with self._lock:
            own = self._stages.get(stage) if stage is not None else None
            values = list(own) if own is not None and len(own) >= min_samples else list(self._all)
        if len(values) < max(1, min_samples):
            return None
        values.sort()
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def __len__(self) -> int:
        with self._lock:
            return len(self._all)


class EndpointLimits:
    """The in-flight slots, rate budgets, first-answer gates and recent latencies per endpoint and model that the
    gateways of one run share (the run context owns one; a gateway made without it has its own)."""

    def __init__(self) -> None:
        self._limits: dict[tuple[object, ...], tuple[InFlightSlots, RateLimiter]] = {}
        self._latencies: dict[tuple[object, ...], LatencyWindow] = {}
        self._gates: dict[tuple[object, ...], FirstAnswerGate] = {}
        self._lock = threading.Lock()

    def limits(self, base_url: str, model: str, concurrency: int, requests_per_minute: int | None,
               tokens_per_minute: int | None) -> tuple[InFlightSlots, RateLimiter]:
        """The in-flight slots and rate limiter of one endpoint and model."""
        key = (base_url, model, concurrency, requests_per_minute, tokens_per_minute)
        with self._lock:
            if key not in self._limits:
                self._limits[key] = (InFlightSlots(concurrency), RateLimiter(requests_per_minute, tokens_per_minute))
            return self._limits[key]

    def gate(self, base_url: str, model: str, *shape: object) -> FirstAnswerGate:
        """The first-answer gate of one endpoint, model and request shape (the settings an endpoint may refuse)."""
        with self._lock:
            return self._gates.setdefault((base_url, model, *shape), FirstAnswerGate())

    def latencies(self, base_url: str, model: str) -> LatencyWindow:
        """The recent latencies of one endpoint and model (a batch task's gateway starts with what the batches
        before it measured)."""
        with self._lock:
            return self._latencies.setdefault((base_url, model), LatencyWindow())
