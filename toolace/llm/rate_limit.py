"""The limits on LLM traffic, shared by every gateway of the process.

Batch tasks run at the same time in several threads, each with its own gateway (the flow keeps the next batch
in flight while the previous one is embedded or verified); their coroutines share one event loop
(:mod:`toolace.llm.shared_loop`), and anything else may run its own. Their requests together
stay within ``concurrency`` in flight (:class:`InFlightSlots`) and within the requests- and tokens-per-minute
budgets (:class:`RateLimiter`, two token buckets refilled continuously): :func:`shared_limits` hands every
gateway of one endpoint the same pair. Prefect's global rate limits throttle contending threads far below
their nominal rate (measured at a tenth), so LLM traffic is limited here. Dask workers are processes: each
worker has its own limits.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import threading
import time


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

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is None and self.tokens is None:
            return
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
                    return
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

    @property
    def in_use(self) -> int:
        return self.size - self._free

    async def acquire(self, priority: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (REQUEST_PRIORITY.get() if priority is None else priority, next(self._order), loop, waiter)
            heapq.heappush(self._waiters, entry)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.done() and not waiter.cancelled()
                if not granted:  # still queued: leave the queue
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


_SHARED: dict[tuple[object, ...], tuple[InFlightSlots, RateLimiter]] = {}
_SHARED_LOCK = threading.Lock()


def shared_limits(base_url: str, model: str, concurrency: int, requests_per_minute: int | None,
                  tokens_per_minute: int | None) -> tuple[InFlightSlots, RateLimiter]:
    """The in-flight slots and rate limiter every gateway of this process uses for one endpoint and model."""
    key = (base_url, model, concurrency, requests_per_minute, tokens_per_minute)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = (InFlightSlots(concurrency), RateLimiter(requests_per_minute, tokens_per_minute))
        return _SHARED[key]
