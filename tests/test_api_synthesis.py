"""Unit tests for tasks.apis.synthesis: speciation plans, answer -> APISpec (constraints, nesting),
admission (duplicates, near duplicates through the index, domain cap) and the pool report."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from schemas.llm_outputs import (
    ConstrainedAPI,
    ConstrainedNestedAPI,
    GeneratedAPI,
    NestedAPI,
    api_answer_model,
)
from schemas.records import APISpec, MinedDocument
from tasks.apis.near_duplicates import NearDuplicateIndex
from tasks.apis.synthesis import (
    DEFINITION_CHECK,
    DOMAIN_SHARE_CHECK,
    DUPLICATE_CHECK,
    NEAR_DUPLICATE_CHECK,
    NEST_OPERATOR,
    APIPlan,
    PoolGrower,
    TreeSampler,
    check_definition,
    evolution_messages,
    has_constraints,
    is_nested,
    plan_apis,
    pool_report,
    to_api_spec,
)
from tasks.context_tree.building import build_tree
from toolace.llm.response_format import schema_for


def doc(i: int, domain: str, sub: str, functions: list[str]) -> MinedDocument:
    return MinedDocument(doc_id=f"d{i}", source=f"d{i}", title=f"d{i}", domain=domain, subdomains=[sub],
                         functionalities=functions)


@pytest.fixture()
def nodes() -> list:
    docs = [doc(i, d, f"{d} tools", [f"{d.lower()} task {j}" for j in range(4)])
            for i, d in enumerate(["Weather", "Finance", "Travel", "Music", "Health"])]
    return build_tree(docs)


def plan(operators: list[str] | None = None, nested: bool = False) -> APIPlan:
    ops = list(operators or ["add_parameters", "update_result"]) + ([NEST_OPERATOR] if nested else [])
    return APIPlan(index=0, domain="Weather", domain_id="w", node_ids=["n1"], functionalities=["get forecast"],
                   path=["Weather", "Forecasts"], breadth="narrow", operators=ops)


def param(name: str, type_: str = "string", **extra: object) -> dict:
    base = {"name": name, "type": type_, "description": f"the {name} value", "required": True, "enum": [],
            "item_type": "none"}
    return {**base, **extra}


def constraints(**values: object) -> dict:
    return {"minimum": None, "maximum": None, "pattern": None, "format": "none", "min_items": None,
            "max_items": None, **values}


RESULT = [{"name": "temperature", "type": "number", "description": "degrees celsius", "item_type": "none"},
          {"name": "alerts", "type": "array", "description": "active alerts", "item_type": "string"}]


# ------------------------------------------------------------------------------------------------- planning


def test_plans_cycle_domains_and_sample_subtrees(nodes: list) -> None:
    plans = plan_apis(nodes, 50, random.Random(1), broad_share=0.5, nested_share=0.3)
    assert len(plans) == 50
    per_domain = Counter(p.domain for p in plans)
    assert set(per_domain.values()) == {10}  # five domains, balanced
    by_id = {n.node_id: n for n in nodes}
    for p in plans:
        leaves = [by_id[i] for i in p.node_ids]
        assert all(n.is_functionality for n in leaves)
        assert len({n.parent_id for n in leaves}) == 1  # one subtree
        assert (len(leaves) > 1) == (p.breadth == "broad")
        assert p.path[0] == p.domain
    assert 0.1 < sum(p.nested for p in plans) / 50 < 0.5
    assert 0.25 < sum(p.breadth == "broad" for p in plans) / 50 < 0.75


def test_nested_share_zero_and_one(nodes: list) -> None:
    assert not any(p.nested for p in plan_apis(nodes, 20, random.Random(0), 0.5, 0.0))
    assert all(p.nested for p in plan_apis(nodes, 20, random.Random(0), 0.5, 1.0))


def test_answer_model_follows_operators() -> None:
    assert api_answer_model(False, False) is GeneratedAPI
    assert api_answer_model(True, False) is ConstrainedAPI
    assert api_answer_model(False, True) is NestedAPI
    assert api_answer_model(True, True) is ConstrainedNestedAPI
    schema = schema_for(ConstrainedNestedAPI)
    assert "nested_parameter" in schema["required"]  # a schema-enforcing server cannot skip it


def test_evolution_prompt_names_operators_and_example() -> None:
    example = APISpec(api_id="x", name="get_rates", description="Get exchange rates", parameters={
        "type": "object", "properties": {"base": {"type": "string"}}, "required": []}, result_schema={},
        domain="Finance", node_ids=[], operators=[])
    text = evolution_messages(plan(["add_constraints"], nested=True), example)[-1]["content"]
    assert "get_rates" in text and "minimum/maximum" in text and "array of objects" in text


# ------------------------------------------------------------------------------------------ answer -> spec


def test_constraints_become_json_schema_keywords() -> None:
    answer = ConstrainedAPI.model_validate({
        "name": "getForecast", "description": "Hourly forecast for a city.",
        "parameters": [
            {**param("days", "integer"), **constraints(minimum=7.0, maximum=1.0)},  # swapped -> fixed
            {**param("date"), **constraints(format="date", pattern="[0-9]+")},  # format wins over pattern
            {**param("code"), **constraints(pattern="^[A-Z]{3}$")},
            {**param("bad_pattern"), **constraints(pattern="([")},  # invalid regex dropped
        ],
        "result": RESULT,
    })
    spec = to_api_spec(answer, plan(["add_constraints"]), None)
    props = spec.parameters["properties"]
    assert spec.name == "get_forecast"
    assert props["days"] == {"type": "integer", "description": "the days value", "minimum": 1, "maximum": 7}
    assert props["date"]["format"] == "date" and "pattern" not in props["date"]
    assert props["code"]["pattern"] == "^[A-Z]{3}$"
    assert "pattern" not in props["bad_pattern"]
    assert has_constraints(spec) and not is_nested(spec)
    assert check_definition(spec) is None
    assert spec.result_schema["properties"]["alerts"]["items"] == {"type": "string"}


def test_array_item_counts() -> None:
    answer = ConstrainedAPI.model_validate({
        "name": "tag_photos", "description": "Tag several photos at once.",
        "parameters": [{**param("tags", "array", item_type="string"), **constraints(min_items=5, max_items=2)}],
        "result": RESULT,
    })
    props = to_api_spec(answer, plan(), None).parameters["properties"]
    assert props["tags"]["minItems"] == 2 and props["tags"]["maxItems"] == 5


@pytest.mark.parametrize("kind", ["array_of_objects", "object"])
def test_nested_parameter(kind: str) -> None:
    answer = NestedAPI.model_validate({
        "name": "create_order", "description": "Create an order with several line items.",
        "parameters": [param("customer_id")],
        "nested_parameter": {"name": "items", "kind": kind, "description": "the items ordered", "required": True,
                             "fields": [
                                 {"name": "sku", "type": "string", "description": "product code", "required": True,
                                  "item_type": "none"},
                                 {"name": "options", "type": "array", "description": "chosen options",
                                  "required": False, "item_type": "string"}]},
        "result": RESULT,
    })
    spec = to_api_spec(answer, plan(nested=True), None)
    items = spec.parameters["properties"]["items"]
    obj = items["items"] if kind == "array_of_objects" else items
    assert obj["type"] == "object" and obj["required"] == ["sku"]
    assert obj["properties"]["options"] == {"type": "array", "description": "chosen options",
                                            "items": {"type": "string"}}
    assert spec.parameters["required"] == ["customer_id", "items"]
    assert is_nested(spec) and check_definition(spec) is None
    assert NEST_OPERATOR in spec.operators


def test_object_parameter_without_fields_is_rejected() -> None:
    answer = GeneratedAPI.model_validate({"name": "set_config", "description": "Set the configuration.",
                                          "parameters": [param("config", "object")], "result": RESULT})
    assert "no fields" in (check_definition(to_api_spec(answer, plan(), None)) or "")


# --------------------------------------------------------------------------------------------------- admission


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors: texts sharing their first word are near duplicates."""
    out = []
    for text in texts:
        head = text.split()[0]
        base = np.random.default_rng(abs(hash(head)) % 2**32).normal(size=32)
        noise = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=32) * 0.05
        vector = base + noise
        out.append(vector / np.linalg.norm(vector))
    return np.array(out, dtype=np.float32).reshape(len(texts), 32)


def spec_for(p: APIPlan, name: str, description: str = "Does a useful thing.", params: tuple = ("a",)) -> APISpec:
    props = {x: {"type": "string", "description": x} for x in params}
    return APISpec(api_id=name, name=name, description=description,
                   parameters={"type": "object", "properties": props, "required": []},
                   result_schema={"type": "object", "properties": {"r": {"type": "string"}}}, domain=p.domain,
                   node_ids=p.node_ids, operators=p.operators)


def grower(nodes: list, target: int, share: float = 0.25) -> PoolGrower:
    return PoolGrower(TreeSampler(nodes), target, fake_embed, NearDuplicateIndex(32, threshold=0.9),
                      random.Random(0), broad_share=0.4, nested_share=0.3, max_domain_share=share)


def test_admission_rejects_duplicates_with_reasons(nodes: list) -> None:
    g = grower(nodes, 10)
    plans = g.next_plans(6)
    failed = spec_for(plans[5], "broken_api")
    failed.reject(DEFINITION_CHECK, "bad")
    specs = [spec_for(plans[0], "get_weather"),
             spec_for(plans[1], "get_weather", "Another text.", ("z",)),  # same name
             spec_for(plans[2], "fetch_rates"),  # same description and parameters under another name
             spec_for(plans[3], "get_weather_now", "Current weather.", ("q",)),  # near duplicate (fake embed)
             spec_for(plans[4], "zeta_lookup", "Looks up zeta.", ("k",)),
             failed]
    admitted = g.admit(plans, specs)
    assert [s.status for s in admitted] == ["accepted", "rejected", "rejected", "rejected", "accepted", "rejected"]
    assert admitted[1].rejected_by == DUPLICATE_CHECK and "already named" in str(admitted[1].reason)
    assert admitted[2].rejected_by == DUPLICATE_CHECK and "same description and parameters" in str(admitted[2].reason)
    assert admitted[3].rejected_by == NEAR_DUPLICATE_CHECK and "get_weather" in str(admitted[3].reason)
    assert admitted[5].rejected_by == DEFINITION_CHECK  # an earlier rejection is left as it was
    # the same content twice keeps one row per record in the APIs table: ids stay distinct
    assert len({s.api_id for s in admitted}) == 6 and admitted[1].api_id == f"get_weather-{plans[1].index}"
    assert g.accepted == 2 and [a.name for a in g.buffer] == ["get_weather", "zeta_lookup"]
    assert sum(g.pending.values()) == 0


def test_near_duplicate_rejected_by_index(nodes: list) -> None:
    g = grower(nodes, 10)
    plans = g.next_plans(2)
    specs = g.admit(plans, [spec_for(plans[0], "forecast_a", "Hourly forecast."),
                            spec_for(plans[1], "forecast_b", "Daily forecast.", ("b", "c"))])
    assert specs[0].accepted
    assert specs[1].rejected_by == NEAR_DUPLICATE_CHECK and "forecast_a" in str(specs[1].reason)


def test_domain_cap_stops_planning_for_full_domains(nodes: list) -> None:
    g = grower(nodes, target=10, share=0.2)  # 5 domains -> cap 2 each
    assert g.domain_cap == 2
    counter = 0
    while g.accepted < 10:
        plans = g.next_plans(4)
        assert plans, "planning stopped before the target"
        specs = []
        for p in plans:
            counter += 1
            specs.append(spec_for(p, f"w{counter}_api", f"Description {counter}.", (f"p{counter}",)))
        g.admit(plans, specs)
    assert max(g.new_per_domain.values()) == 2
    assert g.next_plans(3) == []  # every domain is full


def test_domain_cap_raised_when_domains_are_too_few(nodes: list) -> None:
    assert grower(nodes, target=100, share=0.05).domain_cap == 20  # 5 domains must hold 100 APIs


def test_seed_pool_counts_for_duplicates(nodes: list) -> None:
    g = grower(nodes, 5)
    p = g.next_plans(1)
    g.seed([spec_for(p[0], "existing_api")])
    assert g.admit(p, [spec_for(p[0], "existing_api")])[0].rejected_by == DUPLICATE_CHECK
    assert g.buffer[0].name == "existing_api"


def test_examples_come_from_the_buffer(nodes: list) -> None:
    g = grower(nodes, 5)
    plans = g.next_plans(3)
    assert g.examples(plans) == [None, None, None]
    g.admit(plans[:1], [spec_for(plans[0], "alpha")])
    assert [e.name if e else None for e in g.examples(plans)] == ["alpha"] * 3


# ----------------------------------------------------------------------------------------------------- report


def test_pool_report(nodes: list) -> None:
    p = plan()
    nested = spec_for(p, "n_api")
    nested.parameters["properties"]["rows"] = {"type": "array", "items": {"type": "object", "properties": {
        "x": {"type": "integer"}}}}
    constrained = spec_for(p, "c_api")
    constrained.parameters["properties"]["a"]["enum"] = ["x", "y"]
    constrained.domain = "Finance"
    dup = spec_for(p, "d_api")
    dup.reject(NEAR_DUPLICATE_CHECK, "similar")
    bad = spec_for(p, "b_api")
    bad.reject(DEFINITION_CHECK, "bad")
    capped = spec_for(p, "cap_api")
    capped.reject(DOMAIN_SHARE_CHECK, "full")
    report = pool_report([nested, constrained, dup, bad, capped])
    assert report["apis"] == 2 and report["domains"] == 2
    assert report["apis_per_domain"] == {"Weather": 1, "Finance": 1}
    assert report["nesting_share"] == 0.5 and report["constraint_share"] == 0.5
    assert report["duplicate_rate"] == 0.25  # 1 duplicate among 4 well-defined APIs
    assert report["parameter_types"] == {"string": 2, "array<object>": 1}
    assert report["rejected_by"] == {NEAR_DUPLICATE_CHECK: 1, DEFINITION_CHECK: 1, DOMAIN_SHARE_CHECK: 1}
    assert pool_report([])["apis"] == 0


def test_repeated_parameters_dropped_and_name_clashes_renamed() -> None:
    answer = NestedAPI.model_validate({
        "name": "plan_trip", "description": "Plan a trip with stops.",
        "parameters": [param("city"), param("city"), param("items", "integer")],
        "nested_parameter": {"name": "items", "kind": "array_of_objects", "description": "stops", "required": False,
                             "fields": [{"name": "place", "type": "string", "description": "place", "required": True,
                                         "item_type": "none"},
                                        {"name": "days", "type": "integer", "description": "days", "required": True,
                                         "item_type": "none"}]},
        "result": RESULT,
    })
    props = to_api_spec(answer, plan(nested=True), None).parameters["properties"]
    assert list(props) == ["city", "items", "items_2"]
    assert props["items_2"]["type"] == "array" and props["items"]["type"] == "integer"

