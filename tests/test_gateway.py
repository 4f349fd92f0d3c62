"""The LLM gateway against the scripted server over real HTTP (and a fake client for concurrency)."""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.llm_outputs import DocumentExtraction, UserTurn
from toolace.errors import EndpointError
from toolace.llm.gateway import STRUCTURED_OUTPUT_CHECK, GatewaySettings, LLMCallFailed, LLMGateway
from toolace.llm.rate_limit import TokenBucket
from toolace.llm.response_format import schema_for

MESSAGES = [{"role": "user", "content": "Document: a weather API with hourly forecasts."}]


def gateway(server: Any, tmp_path: Any = None, **overrides: Any) -> LLMGateway:
    settings = GatewaySettings(base_url=server.base_url, model="scripted-model", backoff_base_s=0.01,
                               cache_dir=str(tmp_path / "cache") if tmp_path else None, **overrides)
    return LLMGateway(settings)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def once(gw: LLMGateway, call: Any = None) -> Any:
    """One call (a chat request unless ``call(gw)`` says otherwise) through a gateway, closed afterwards."""

    async def main() -> Any:
        try:
            return await (call(gw) if call else gw.chat(MESSAGES, stage="s"))
        finally:
            await gw.aclose()

    return run(main())


def test_structured_sends_schema_generated_from_model_and_validates(llm):
    async def main() -> Any:
        gw = gateway(llm)
        answer = await gw.structured(DocumentExtraction, MESSAGES, stage="mining")
        await gw.aclose()
        return answer, gw

    answer, gw = run(main())
    assert answer.ok and isinstance(answer.value, DocumentExtraction)
    sent = llm.requests[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "DocumentExtraction"
    assert sent["json_schema"]["schema"] == schema_for(DocumentExtraction)
    stats = gw.stats["mining"]
    assert stats.requests == 1 and stats.tokens_in > 0 and stats.tokens_out > 0


def test_invalid_answer_gets_one_repair_then_passes(llm):
    llm.on_schema("UserTurn", {"message": ""}, times=1)  # violates min_length=1

    answer = once(gateway(llm), lambda gw: gw.structured(UserTurn, MESSAGES, stage="dialog"))
    assert answer.ok
    assert len(answer.raw_outputs) == 2 and json.loads(answer.raw_outputs[0]) == {"message": ""}
    repair_request = llm.requests[1]["messages"]
    assert repair_request[-2] == {"role": "assistant", "content": '{"message": ""}'}
    assert "invalid" in repair_request[-1]["content"]


def test_answer_still_invalid_after_repair_is_rejected_with_raw_text(llm):
    llm.script(lambda body: {"content": "not json at all"})

    answer = once(gateway(llm), lambda gw: gw.structured(UserTurn, MESSAGES, stage="dialog"))
    assert not answer.ok
    assert answer.check == STRUCTURED_OUTPUT_CHECK
    assert answer.raw_outputs == ["not json at all", "not json at all"]
    assert "after one repair" in (answer.error or "")


RESULT_SCHEMA = {"type": "object", "properties": {"temp": {"type": "number", "minimum": -90}},
                 "required": ["temp"], "additionalProperties": False}


def test_structured_json_validates_against_a_data_schema_and_repairs(llm):
    llm.script(lambda body: {"content": '{"temp": 21.5}'}, times=1)
    llm.script(lambda body: {"content": '{"temp": -300}'}, times=1)  # tried first: below the minimum
    answer = once(gateway(llm), lambda gw: gw.structured_json("weather_result", RESULT_SCHEMA, MESSAGES, stage="d"))
    assert answer.ok and answer.value == {"temp": 21.5}
    assert answer.raw_outputs == ['{"temp": -300}', '{"temp": 21.5}']
    assert "-300" in llm.requests[1]["messages"][-1]["content"]  # the repair request names what was wrong
    assert llm.requests[0]["response_format"]["json_schema"]["schema"] == RESULT_SCHEMA

    llm.script(lambda body: {"content": '{"temp": 1, "extra": true}'})
    again = once(gateway(llm), lambda gw: gw.structured_json("weather_result", RESULT_SCHEMA, MESSAGES, stage="d"))
    assert again.check == STRUCTURED_OUTPUT_CHECK and "extra" in (again.error or "")


def test_structured_json_with_an_invalid_schema_raises(llm):
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        once(gateway(llm), lambda gw: gw.structured_json("bad", {"type": "no-such-type"}, MESSAGES, stage="d"))
    assert llm.requests == []


def test_retries_5xx_and_429_then_succeeds(llm):
    llm.fail_next(2, status=500)
    llm.fail_next(1, status=429, headers={"Retry-After": "0"})

    async def main() -> Any:
        gw = gateway(llm)
        try:
            result = await gw.chat(MESSAGES, stage="s")
            return result, gw.stats["s"]
        finally:
            await gw.aclose()

    result, stats = run(main())
    assert result.content
    assert stats.retries == 3 and stats.requests == 4


def test_retries_are_bounded(llm):
    llm.fail_next(10, status=503)

    with pytest.raises(LLMCallFailed, match="3 attempts"):
        once(gateway(llm, max_retries=2))
    assert len(llm.requests) == 3


def test_client_error_is_not_retried(llm):
    llm.fail_next(1, status=400, body={"error": {"message": "bad request", "type": "invalid_request_error"}})

    with pytest.raises(LLMCallFailed, match="HTTP 400"):
        once(gateway(llm))
    assert len(llm.requests) == 1


@pytest.mark.parametrize("error", [
    {"error": {"message": "Requested tokens (8230) exceed context window of 8192"}},  # llama-cpp-python
    {"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you requested "
                                   "5000 tokens.", "type": "BadRequestError", "code": 400},  # vLLM
    {"error": {"message": "Input is too long.", "code": "context_length_exceeded"}},  # OpenAI
    {"error": {"message": "the request exceeds the available context size, try increasing it"}},  # llama.cpp
])
def test_a_prompt_over_the_context_is_told_apart(llm, error):
    """An item too long for the model fails alone (the evaluation records it); it is not a refused parameter."""
    from toolace.llm.gateway import ContextLengthExceeded

    llm.fail_next(1, status=400, body=error)
    with pytest.raises(ContextLengthExceeded, match="HTTP 400"):
        once(gateway(llm))
    llm.fail_next(1, status=400, body={"error": {"message": "bad request", "type": "invalid_request_error"}})
    with pytest.raises(LLMCallFailed) as failed:
        once(gateway(llm))
    assert not isinstance(failed.value, ContextLengthExceeded)


def test_unknown_model_is_an_endpoint_error(llm):
    with pytest.raises(EndpointError, match="no-such-model"):
        once(LLMGateway(GatewaySettings(base_url=llm.base_url, model="no-such-model")))


def test_response_cache_means_a_rerun_never_pays_twice(llm, tmp_path):
    async def main() -> Any:
        first = gateway(llm, tmp_path)
        a = await first.structured(DocumentExtraction, MESSAGES, stage="mining")
        await first.aclose()
        second = gateway(llm, tmp_path)  # a new process would build a new gateway on the same cache
        b = await second.structured(DocumentExtraction, MESSAGES, stage="mining")
        c = await second.structured(DocumentExtraction, MESSAGES, stage="mining", sample=1)
        await second.aclose()
        return a, b, c, second.stats["mining"]

    a, b, c, stats = run(main())
    assert a.value == b.value
    assert len(llm.requests) == 2  # the first request and the distinct sample=1 request
    assert stats.cache_hits == 1 and stats.requests == 1


class _FakeCompletions:
    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def post(self, path: str, *, content: bytes, **options: Any) -> Any:
        assert path == "/chat/completions"
        assert json.loads(content)["model"] == "m"  # the body goes out as the JSON bytes the gateway encoded
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        raw = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        assert options["cast_to"] is object  # the gateway takes the parsed JSON as it came
        return raw


@pytest.mark.parametrize("raw", [[1, 2], "text", {"choices": []}, {"choices": ["x"]},
                                 {"choices": [{"message": "x"}]}, {"choices": [{"message": {}}], "usage": 3}])
def test_malformed_completion_is_retried_then_fails(raw):
    calls = []

    async def post(path: str, **options: Any) -> Any:
        calls.append(path)
        return raw

    gw = LLMGateway(GatewaySettings(base_url="http://unused/v1", model="m", max_retries=1, backoff_base_s=0.0),
                    client=SimpleNamespace(post=post, close=lambda: asyncio.sleep(0)))
    with pytest.raises(LLMCallFailed, match="ValueError"):
        run(gw.chat([{"role": "user", "content": "hi"}], stage="s"))
    assert len(calls) == 2


def test_retry_jitter_stays_in_bounds_and_leaves_the_process_random_state_alone():
    gw = LLMGateway(GatewaySettings(base_url="http://unused/v1", model="m", backoff_base_s=1.0, backoff_cap_s=4.0),
                    client=SimpleNamespace(post=None, close=lambda: asyncio.sleep(0)))
    before = random.getstate()
    delays = [gw._backoff(attempt) for attempt in range(6) for _ in range(20)]
    assert random.getstate() == before  # a library call must not move its caller's (or hypothesis's) random state
    assert all(0.5 <= d <= 1.5 for d in delays[:20]) and all(2.0 <= d <= 6.0 for d in delays[-20:])
    assert len(set(delays[:20])) > 1  # jittered, not a fixed delay


def test_concurrency_limit_caps_requests_in_flight():
    completions = _FakeCompletions()
    client = SimpleNamespace(post=completions.post, close=lambda: asyncio.sleep(0))
    gw = LLMGateway(GatewaySettings(base_url="http://unused/v1", model="m", concurrency=3), client=client)

    async def main() -> None:
        await asyncio.gather(*(gw.chat([{"role": "user", "content": str(i)}], stage="s") for i in range(12)))

    run(main())
    assert completions.peak == 3
    assert gw.stats["s"].requests == 12 and gw.stats["s"].tokens_in == 36


def test_token_bucket_waits_for_refill(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("toolace.llm.rate_limit.time.monotonic", lambda: now[0])
    bucket = TokenBucket(per_minute=60)  # one per second
    for _ in range(60):
        assert bucket.wait_time(1) == 0
        bucket.take(1)
    assert bucket.wait_time(1) == pytest.approx(1.0)
    now[0] += 0.5
    assert bucket.wait_time(1) == pytest.approx(0.5)
    assert bucket.wait_time(1000) > 0  # larger than capacity: waits for a full bucket, not forever


def test_in_flight_slots_are_shared_by_event_loops_of_several_threads():
    import threading

    from toolace.llm.rate_limit import InFlightSlots

    slots = InFlightSlots(3)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "done": 0}

    async def hold() -> None:
        async with slots:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.005)
            with lock:
                state["now"] -= 1
                state["done"] += 1

    async def many() -> None:
        await asyncio.gather(*(hold() for _ in range(20)))

    threads = [threading.Thread(target=lambda: asyncio.run(many())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert state["done"] == 60 and state["peak"] == 3 and slots.in_use == 0


def test_a_cancelled_waiter_does_not_keep_a_slot():
    from toolace.llm.rate_limit import InFlightSlots

    slots = InFlightSlots(1)

    async def main() -> None:
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        slots.release()  # may hand the slot to the cancelled waiter: it must come back
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.01)
        assert slots.in_use == 0
        await asyncio.wait_for(slots.acquire(), timeout=1)  # and it can be taken again
        slots.release()

    run(main())


def test_gateways_of_one_run_share_its_limits_per_endpoint_and_others_have_their_own():
    from toolace.llm.rate_limit import EndpointLimits

    run_limits = EndpointLimits()  # the run context's

    def gateway(url: str, limits: EndpointLimits | None = run_limits) -> LLMGateway:
        return LLMGateway(GatewaySettings(base_url=url, model="m", concurrency=5), limits=limits,
                          client=SimpleNamespace(post=None, close=None))

    one, two, other = gateway("http://shared/v1"), gateway("http://shared/v1"), gateway("http://other/v1")
    assert one._slots is two._slots and one._limiter is two._limiter
    assert one.latencies is two.latencies and one._gate is two._gate
    assert other._slots is not one._slots
    alone = gateway("http://shared/v1", None)  # made outside a run: nothing shared with it
    assert alone._slots is not one._slots and alone.latencies is not one.latencies


def test_request_body_keeps_the_schema_property_order_and_the_cache_key_ignores_key_order():
    """The body is sent as encoded, in its own key order (constrained decoding follows the schema's property
    order), while the cache key is the same for any key order."""
    from pydantic import BaseModel

    from toolace.llm.response_cache import request_key

    class Answer(BaseModel):
        zeta_reasoning: str
        alpha_answer: str

    sent: list[bytes] = []

    async def post(path: str, *, content: bytes, **options: Any) -> Any:
        sent.append(content)
        return {"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": '{"zeta_reasoning": "r", "alpha_answer": "a"}'}}]}

    gw = LLMGateway(GatewaySettings(base_url="http://unused/v1", model="m"),
                    client=SimpleNamespace(post=post, close=lambda: asyncio.sleep(0)))
    out = run(gw.structured(Answer, [{"role": "user", "content": "ü"}], stage="s"))
    assert out.value == Answer(zeta_reasoning="r", alpha_answer="a")
    text = sent[0].decode("utf-8")
    assert text.index("zeta_reasoning") < text.index("alpha_answer")
    body = json.loads(text)
    assert body["messages"] == [{"role": "user", "content": "ü"}]
    assert request_key(body) == request_key(dict(reversed(list(body.items()))))


def test_response_cache_round_trip_and_torn_files(tmp_path):
    from toolace.llm.response_cache import ResponseCache, request_key

    cache = ResponseCache(tmp_path / "llm")
    key = request_key({"model": "m", "messages": [{"role": "user", "content": "é"}]})
    assert cache.get(key) is None
    cache.put(key, {"choices": [{"message": {"content": "ü"}}]})
    assert ResponseCache(tmp_path / "llm").get(key) == {"choices": [{"message": {"content": "ü"}}]}
    stored = tmp_path / "llm" / key[:2] / f"{key}.json"
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temporary file left behind
    for torn in (b'{"choices": [', b"\xff\xfe not utf-8"):  # a write cut short by a kill; a corrupt file
        stored.write_bytes(torn)
        assert cache.get(key) is None and not stored.exists()  # paid for again, not trusted


def test_slot_waiters_are_served_lowest_priority_first_then_in_arrival_order():
    from toolace.llm.rate_limit import REQUEST_PRIORITY, InFlightSlots

    slots = InFlightSlots(1)
    served: list[str] = []

    async def wait(name: str, priority: int) -> None:
        REQUEST_PRIORITY.set(priority)  # each task has its own context: the priority is this request's
        async with slots:
            served.append(name)
            await asyncio.sleep(0)

    async def main() -> None:
        await slots.acquire()  # held: everyone below queues
        tasks = []
        for name, priority in [("late-a", 9), ("old", 1), ("late-b", 9), ("older", 0), ("old-2", 1)]:
            tasks.append(asyncio.create_task(wait(name, priority)))
            await asyncio.sleep(0)  # arrival order is the order above
        slots.release()
        await asyncio.gather(*tasks)

    run(main())
    assert served == ["older", "old", "old-2", "late-a", "late-b"]
    assert REQUEST_PRIORITY.get() == 0  # the tasks' settings stayed in their own contexts


def test_a_cancelled_waiter_leaves_the_priority_queue_in_order():
    from toolace.llm.rate_limit import InFlightSlots

    slots = InFlightSlots(1)
    served: list[int] = []

    async def wait(priority: int) -> None:
        await slots.acquire(priority)
        served.append(priority)
        slots.release()

    async def main() -> None:
        await slots.acquire()
        waiting = {p: asyncio.create_task(wait(p)) for p in (5, 3, 4, 1, 2)}
        await asyncio.sleep(0)
        waiting[3].cancel()
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*(t for p, t in waiting.items() if p != 3))

    run(main())
    assert served == [1, 2, 4, 5] and slots.in_use == 0


def test_the_runs_loop_runs_batches_with_the_callers_context_and_errors():
    import contextvars
    import threading

    from toolace.llm.shared_loop import LlmLoop

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    async def where() -> tuple[str, str]:
        await asyncio.sleep(0)
        return marker.get(), threading.current_thread().name

    marker.set("caller")
    with LlmLoop() as llm_loop:
        value, thread = llm_loop.run(where())
        assert value == "caller" and thread == "toolace-llm-loop"
        results: list[tuple[str, str]] = []
        workers = [threading.Thread(target=lambda: results.append(llm_loop.run(where()))) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=10)
        assert [t for _, t in results] == ["toolace-llm-loop"] * 3  # one loop for every worker thread

        async def fails() -> None:
            raise ValueError("from the batch")

        with pytest.raises(ValueError, match="from the batch"):
            llm_loop.run(fails())

        async def nested() -> None:
            llm_loop.run(where())  # would wait for itself forever

        with pytest.raises(RuntimeError, match="LLM loop itself"):
            asyncio.run_coroutine_threadsafe(nested(), llm_loop.open()).result(timeout=10)
    assert not any(t.name == "toolace-llm-loop" and t.is_alive() for t in threading.enumerate())  # closed


def test_opening_the_loop_shortens_the_switch_interval_closing_restores_it_never_lengthens_it():
    import sys

    from toolace.llm.shared_loop import SWITCH_INTERVAL_S, LlmLoop

    before = sys.getswitchinterval()
    try:
        for preset, expected in ((0.005, SWITCH_INTERVAL_S), (0.0001, 0.0001)):
            sys.setswitchinterval(preset)
            llm_loop = LlmLoop()
            with llm_loop:
                assert sys.getswitchinterval() == pytest.approx(expected)
                llm_loop.open()  # the running loop is reused: the interval is set once, at start
                assert sys.getswitchinterval() == pytest.approx(expected)
            assert sys.getswitchinterval() == pytest.approx(preset)  # what the process had before the run
    finally:
        sys.setswitchinterval(before)


def test_an_answer_the_cache_cannot_keep_is_used_all_the_same(llm, tmp_path, caplog):
    """The cache is written from a worker thread (not the loop every answer comes through); a write that fails
    is a warning, never a failed request."""
    import logging

    from toolace.llm.response_cache import ResponseCache

    class FullDisk(ResponseCache):
        def put(self, key: str, response: dict[str, Any]) -> None:
            raise OSError(28, "No space left on device")

    async def main() -> Any:
        gw = gateway(llm, tmp_path)
        gw.cache = FullDisk(tmp_path / "llm")
        try:
            return await gw.structured(DocumentExtraction, MESSAGES, stage="mining")
        finally:
            await gw.aclose()

    with caplog.at_level(logging.WARNING, logger="toolace.llm.gateway"):
        answer = run(main())
    assert answer.value is not None
    assert "caching an LLM answer failed" in caplog.text and "No space left" in caplog.text
