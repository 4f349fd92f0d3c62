"""The one scheduler of the LLM stages: as many batches in flight as keep the gateway busy, handed back in the
order they started whatever order they finish in, planning that sees every plan still in flight as reserved."""

from __future__ import annotations

import concurrent.futures
import time

from flows.scheduler import BatchStream, Submitted, batches_in_flight
from toolace.stall_watchdog import StallWatchdog


def test_batches_in_flight_follow_the_concurrency() -> None:
    assert batches_in_flight(8, 16) == 2  # the default: never fewer than two
    assert batches_in_flight(64, 16) == 8  # 128 items for 64 slots
    assert batches_in_flight(64, 256) == 2
    assert batches_in_flight(1, 1) == 2


def test_a_stream_keeps_depth_batches_going_and_hands_them_back_in_order() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(8)
    target, accepted, seen_reserved, going = 20, [0], [], []

    def work(n: int) -> int:
        time.sleep(0.05 * (3 - n % 3))  # later batches often finish first
        return n

    def start(reserved: int) -> Submitted[int] | None:
        seen_reserved.append(reserved)
        want = min(4, target - accepted[0] - reserved)
        if want <= 0:
            return None
        n = len(going)
        going.append(n)
        return Submitted(list(range(want)), pool.submit(work, n), extra=n)

    stream = BatchStream("dialogs", start, depth=3, watchdog=StallWatchdog(5, poll_s=0.01))
    order = []
    for batch in stream:
        assert batch.result == batch.extra
        order.append(batch.extra)
        assert stream.reserved >= len(batch.plans)  # the batch being taken in still counts as reserved
        accepted[0] += len(batch.plans) - (batch.extra % 2 == 0)  # some rejected: more to plan
    assert order == sorted(order)
    assert accepted[0] == target and stream.reserved == 0
    assert max(seen_reserved) <= 3 * 4 + 4  # never more than depth batches going plus the one held
    pool.shutdown()


def test_a_batch_with_nothing_to_send_is_handed_back_as_it_is() -> None:
    batches = iter([Submitted([1], None, extra="decided already"), None])
    (only,) = list(BatchStream("mining", lambda reserved: next(batches, None), depth=2))
    assert only.extra == "decided already" and only.result is None
