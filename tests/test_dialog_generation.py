"""Dialog planning (every type, related tool sets, dependent links, multi-turn chains) and the three
agents against the scripted OpenAI-compatible server over real HTTP (decision agreement, dependent calls)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

from schemas.records import APISpec
from tasks.dialogs.generation import (
    AGREEMENT_CHECK,
    API_SCHEMA_CHECK,
    DEPENDENT_CALL_CHECK,
    OTHERS_SCAN,
    DialogPlan,
    Neighbourhoods,
    Segment,
    find_link,
    generate_dialogs,
    plan_dialogs,
)
from tasks.verification.rules import score_dialog
from toolace.llm.gateway import GatewaySettings, LLMGateway


def api(api_id: str, name: str, params: dict[str, Any], required: list[str], result: dict[str, Any],
        domain: str = "Travel", nodes: tuple[str, ...] = ("n1",)) -> APISpec:
    return APISpec(api_id=api_id, name=name, description=f"{name.replace('_', ' ')} for a traveller.",
                   parameters={"type": "object", "properties": params, "required": required},
                   result_schema={"type": "object", "properties": result, "required": list(result)},
                   domain=domain, node_ids=list(nodes), operators=[])


FIND_HOTEL = api("a1", "find_hotel", {"city": {"type": "string", "description": "city"}}, ["city"],
                 {"hotel_id": {"type": "string", "description": "hotel id"},
                  "stars": {"type": "integer", "description": "stars"}})
BOOK_HOTEL = api("a2", "book_hotel", {"hotel_id": {"type": "string", "description": "hotel to book"},
                                      "nights": {"type": "integer", "description": "nights"}},
                 ["hotel_id", "nights"], {"booking_id": {"type": "string", "description": "booking"}})
WEATHER = api("a3", "get_weather", {"city": {"type": "string", "description": "city"}}, ["city"],
              {"temp_c": {"type": "number", "description": "temperature"}}, domain="Weather", nodes=("n9",))
RATES = api("a4", "get_rates", {"base": {"type": "string", "description": "currency", "enum": ["EUR", "USD"]}}, [],
            {"rate": {"type": "number", "description": "rate"}}, domain="Finance", nodes=("n7",))
APIS = [FIND_HOTEL, BOOK_HOTEL, WEATHER, RATES]
MIX = {"single": 1, "parallel": 1, "dependent": 1, "non_tool": 1, "clarification": 1, "multi_turn": 1}


def test_find_link_prefers_required_and_shared_words() -> None:
    link = find_link(FIND_HOTEL, [BOOK_HOTEL, WEATHER])
    assert link is not None
    assert (link.from_field, link.to_api, link.to_param) == ("hotel_id", "a2", "hotel_id")
    assert find_link(RATES, [WEATHER]) is None  # a number cannot feed a string parameter


def test_plans_cover_every_type_with_related_tool_sets() -> None:
    plans = plan_dialogs(APIS, 120, MIX, candidates=3, rng=random.Random(3), max_segments=3)
    kinds = Counter(p.dialog_type for p in plans)
    assert set(kinds) == set(MIX)
    for plan in plans:
        assert set(plan.targets) <= set(plan.offered)
        assert len(plan.offered) == max(3, len(set(plan.targets)))
        if plan.dialog_type == "multi_turn":
            assert 2 <= len(plan.segments) <= 3
        else:
            assert [s.kind for s in plan.segments] == [plan.dialog_type]
    dependent = [p for p in plans if p.dialog_type == "dependent"]
    assert all(p.segments[0].link is not None and len(p.segments[0].targets) == 2 for p in dependent)
    clar = [s for p in plans for s in p.segments if s.kind == "clarification"]
    assert clar and all(s.missing_param for s in clar)
    # a hotel dialog is offered the other hotel API (same tree node) before unrelated distractors
    hotel = next(p for p in plans if p.dialog_type == "single" and p.targets == ["a1"])
    assert "a2" in hotel.offered


def scanned_related(target: APISpec, usable: list[APISpec], rng: random.Random) -> list[APISpec]:
    """The neighbourhood as a scan of the whole pool finds it (what the index must reproduce)."""
    shared = [a for a in usable if a.api_id != target.api_id and set(a.node_ids) & set(target.node_ids)]
    same = [a for a in usable if a.api_id != target.api_id and a.domain == target.domain and a not in shared]
    rng.shuffle(shared)
    rng.shuffle(same)
    return shared + same


def synthetic_pool(count: int, domains: int) -> list[APISpec]:
    rng = random.Random(count)
    return [api(f"x{i}", f"tool_{i}", {"q": {"type": "string", "description": "query"}}, ["q"],
                {"value": {"type": "string", "description": "value"}}, domain=f"D{i % domains}",
                nodes=tuple({f"n{i % domains}-{rng.randrange(8)}", f"n{i % domains}-{rng.randrange(8)}"}))
            for i in range(count)]


def test_indexed_neighbourhood_equals_the_scan_of_the_pool() -> None:
    pool = synthetic_pool(300, 7)
    index = Neighbourhoods(pool)
    for target in pool[::17]:
        got = index.related(target, random.Random(target.api_id))
        scanned = scanned_related(target, pool, random.Random(target.api_id))
        assert [a.api_id for a in got] == [a.api_id for a in scanned]


def test_planning_a_large_pool_samples_distractors_from_other_domains() -> None:
    pool = synthetic_pool(OTHERS_SCAN + 3000, 40)
    by_id = {a.api_id: a for a in pool}
    plans = plan_dialogs(pool, 2000, MIX, candidates=5, rng=random.Random(1), max_segments=3)
    assert len(plans) == 2000
    for plan in plans:
        assert set(plan.targets) <= set(plan.offered)
        assert len(plan.offered) == len(set(plan.offered)) == max(5, len(set(plan.targets)))
    # neighbours (same tree node or domain) come first; a pool with 40 domains of ~125 APIs fills from them
    first = by_id[plans[0].targets[0]] if plans[0].targets else None
    if first is not None:
        assert sum(by_id[i].domain == first.domain for i in plans[0].offered) >= 2
    others = Neighbourhoods(pool).others(pool[0], 5, random.Random(0))
    assert len(others) == 5 and all(a.domain != pool[0].domain for a in others)


def test_impossible_types_fall_back_and_say_so() -> None:
    plans = plan_dialogs([RATES], 10, {"clarification": 1.0}, candidates=1, rng=random.Random(0))
    assert all(p.dialog_type == "single" and p.planned_type == "clarification" for p in plans)
    plans = plan_dialogs([WEATHER], 5, {"dependent": 1.0}, candidates=1, rng=random.Random(0))
    assert all(p.dialog_type == "single" and p.planned_type == "dependent" for p in plans)


def run(llm: Any, plans: list[DialogPlan], samples: int = 1) -> list:
    async def main() -> list:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            return await generate_dialogs(plans, APIS, gateway, seed=0, decision_samples=samples)
        finally:
            await gateway.aclose()

    return asyncio.run(main())


def single_plan(index: int = 0) -> DialogPlan:
    return DialogPlan(index=index, dialog_type="single", offered=["a3", "a4"],
                      segments=[Segment(kind="single", targets=["a3"])])


def test_agreeing_samples_keep_the_decision(llm) -> None:
    dialog = run(llm, [single_plan()], samples=3)[0]
    assert dialog.accepted, dialog.reason
    assert dialog.decision_samples == 3
    decision_requests = [r for r in llm.requests if r.get("tool_choice") == "required"]
    assert len(decision_requests) == 3 and len({r["seed"] for r in decision_requests}) == 3
    assert score_dialog(dialog, 2000) == []


def test_disagreeing_samples_reject_with_every_raw_output(llm) -> None:
    llm.script(lambda body: {"tool_calls": [{"name": "get_weather", "arguments": {"city": f"C{body['seed']}"}}]}
               if body.get("tool_choice") == "required" else None)
    dialog = run(llm, [single_plan()], samples=2)[0]
    assert dialog.rejected_by == AGREEMENT_CHECK
    assert "2 samples" in str(dialog.reason)
    assert sum('"C' in raw for raw in dialog.raw_outputs) == 2


def dependent_plan() -> DialogPlan:
    link = find_link(FIND_HOTEL, [BOOK_HOTEL])
    return DialogPlan(index=1, dialog_type="dependent", offered=["a1", "a2", "a3"],
                      segments=[Segment(kind="dependent", targets=["a1", "a2"], link=link)])


def _dependent_rule(reuse: bool) -> Any:
    def rule(body: dict[str, Any]) -> dict[str, Any] | None:
        if body.get("tool_choice") != "required":
            return None
        messages = body["messages"]
        results = [m for m in messages if m["role"] == "tool"]
        if not results:
            return {"tool_calls": [{"name": "find_hotel", "arguments": {"city": "Lisbon"}}]}
        hotel = json.loads(results[-1]["content"])["hotel_id"] if reuse else "made-up"
        return {"tool_calls": [{"name": "book_hotel", "arguments": {"hotel_id": hotel, "nights": 2}}]}
    return rule


def test_dependent_dialog_reuses_a_returned_value(llm) -> None:
    llm.script(_dependent_rule(reuse=True))
    dialog = run(llm, [dependent_plan()], samples=2)[0]
    assert dialog.accepted, dialog.reason
    calls = [c for t in dialog.turns for c in t.tool_calls]
    assert [c.name for c in calls] == ["find_hotel", "book_hotel"]
    first_result = json.loads(next(t.content for t in dialog.turns if t.role == "tool"))
    assert calls[1].arguments["hotel_id"] == first_result["hotel_id"]
    assert dialog.apis_used == ["find_hotel", "book_hotel"]
    assert score_dialog(dialog, 2000) == []


def test_dependent_dialog_that_invents_the_value_is_rejected(llm) -> None:
    llm.script(_dependent_rule(reuse=False))
    dialog = run(llm, [dependent_plan()])[0]
    assert dialog.rejected_by == DEPENDENT_CALL_CHECK and "does not reuse" in str(dialog.reason)


def test_multi_turn_dialog_chains_parts(llm) -> None:
    plan = DialogPlan(index=2, dialog_type="multi_turn", offered=["a3", "a4", "a1"],
                      segments=[Segment(kind="non_tool"), Segment(kind="single", targets=["a3"]),
                                Segment(kind="clarification", targets=["a1"], missing_param="city")])
    dialog = run(llm, [plan])[0]
    assert dialog.accepted, dialog.reason
    assert dialog.segments == ["non_tool", "single", "clarification"]
    roles = [t.role for t in dialog.turns]
    assert roles.count("user") == 4  # one per part, plus the clarification answer
    assert score_dialog(dialog, 2000) == []


def test_guidance_instruction_reaches_the_user_agent(llm) -> None:
    plan = single_plan().model_copy(update={"round": 1, "guidance": "Phrase it indirectly."})
    dialog = run(llm, [plan])[0]
    assert dialog.accepted
    assert any("Phrase it indirectly." in str(r["messages"]) for r in llm.requests)


def test_offered_api_with_an_invalid_result_schema_is_rejected_before_any_request(llm) -> None:
    broken = WEATHER.model_copy(update={"api_id": "a9", "result_schema": {"type": "object",
                                                                           "properties": {"t": {"type": "celsius"}}}})

    async def main() -> list:
        gateway = LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01))
        try:
            plan = DialogPlan(index=0, dialog_type="single", offered=["a9", "a4"],
                              segments=[Segment(kind="single", targets=["a9"])])
            return await generate_dialogs([plan], [broken, RATES], gateway, seed=0)
        finally:
            await gateway.aclose()

    dialog = asyncio.run(main())[0]
    assert dialog.rejected_by == API_SCHEMA_CHECK
    assert "get_weather (a9) has an invalid result schema" in str(dialog.reason)
    assert "properties/t/type" in str(dialog.reason)
    assert llm.requests == []


def test_each_dialogs_requests_wait_with_its_plan_index_as_priority(llm, monkeypatch) -> None:
    from toolace.llm.rate_limit import REQUEST_PRIORITY, InFlightSlots

    seen: list[int] = []
    acquire = InFlightSlots.acquire

    async def recording(self: InFlightSlots, priority: int | None = None, *args: Any) -> None:
        seen.append(REQUEST_PRIORITY.get() if priority is None else priority)
        await acquire(self, priority, *args)

    monkeypatch.setattr(InFlightSlots, "acquire", recording)
    dialogs = run(llm, [single_plan(7), single_plan(3)])
    assert all(d.accepted for d in dialogs)
    assert set(seen) == {3, 7} and len(seen) == len(llm.requests)  # every request, under its own dialog's index
