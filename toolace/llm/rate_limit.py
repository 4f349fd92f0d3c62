"""Requests-per-minute and tokens-per-minute limits enforced inside the gateway process.

Prefect's global rate limits throttle contending threads far below their nominal rate (measured at a
tenth), so LLM traffic is limited here, with two token buckets refilled continuously.
"""

from __future__ import annotations

import asyncio
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
    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._lock = asyncio.Lock()

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is None and self.tokens is None:
            return
        async with self._lock:
            while True:
                wait = max(
                    self.requests.wait_time(1) if self.requests else 0.0,
                    self.tokens.wait_time(estimated_tokens) if self.tokens else 0.0,
                )
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(estimated_tokens)
