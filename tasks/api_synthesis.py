"""Tool self-evolution synthesis: speciation (sampled subtrees), adaptation (narrow or broad APIs) and
evolution (an LLM writes a new API from the subtree and one example from the API example buffer,
applying diversity operators). Every API is checked and ends accepted or rejected with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import keyword
import random
import re
from collections import defaultdict
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel

from schemas.llm_outputs import GeneratedAPI, GeneratedParameter
from schemas.records import APISpec, TreeNode
from tasks.context_tree import domain_of
from toolace.llm.gateway import LLMGateway

STAGE = "api_synthesis"
DEFINITION_CHECK = "api_definition_v1"
DUPLICATE_CHECK = "api_duplicate_v1"
API_MAX_TOKENS = 1024  # four parameters and four result fields with descriptions fit in about 600

OPERATORS: dict[str, str] = {
    "add_functionality": "cover one more related functionality than the example does",
    "add_parameters": "add optional parameters that refine the request (filters, paging, units)",
    "add_constraints": "constrain parameters: enums for categorical values, formats such as dates",
    "mutate_types": "use a mix of parameter types: string, integer, number, boolean and array",
    "update_result": "return a richer result object than the example",
}


class APIPlan(BaseModel):
    index: int
    domain: str
    node_ids: list[str]
    functionalities: list[str]
    path: list[str]
    operators: list[str]


def plan_apis(nodes: list[TreeNode], count: int, rng: random.Random, broad_share: float) -> list[APIPlan]:
    """Sample one subtree per API, cycling through domains so none dominates the pool."""
    by_id = {n.node_id: n for n in nodes}
    groups: dict[str, list[TreeNode]] = defaultdict(list)  # parent id -> functionality leaves
    for node in nodes:
        if node.is_functionality and node.parent_id:
            groups[node.parent_id].append(node)
    per_domain: dict[str, list[str]] = defaultdict(list)
    for parent_id in sorted(groups):
        per_domain[domain_of(by_id[parent_id], by_id).node_id].append(parent_id)
    if not per_domain:
        return []
    domains = sorted(per_domain)
    rng.shuffle(domains)
    plans: list[APIPlan] = []
    for index in range(count):
        domain_id = domains[index % len(domains)]
        parent_id = rng.choice(per_domain[domain_id])
        leaves = groups[parent_id]
        broad = len(leaves) > 1 and rng.random() < broad_share
        chosen = rng.sample(leaves, k=min(len(leaves), rng.randint(2, 3))) if broad else [rng.choice(leaves)]
        path, cursor = [], by_id[parent_id]
        while True:
            path.insert(0, cursor.name)
            if cursor.parent_id is None:
                break
            cursor = by_id[cursor.parent_id]
        plans.append(APIPlan(
            index=index, domain=by_id[domain_id].name, node_ids=[n.node_id for n in chosen],
            functionalities=[n.name for n in chosen], path=path,
            operators=rng.sample(sorted(OPERATORS), k=2),
        ))
    return plans


def snake_case(name: str) -> str:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^A-Za-z0-9]+", "_", words).strip("_").lower()
    if text and text[0].isdigit():
        text = f"api_{text}"
    if keyword.iskeyword(text) or keyword.issoftkeyword(text):
        text += "_"  # so calls in Python syntax (ToolACE, BFCL) parse with ast
    return text[:64]


def _param_schema(param: GeneratedParameter) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type, "description": param.description.strip()}
    if param.type == "string" and param.enum:
        schema["enum"] = list(dict.fromkeys(v for v in param.enum if v.strip()))
    if param.type == "array":
        item = "string" if param.item_type == "none" else param.item_type
        schema["items"] = {"type": item}
    return schema


def to_api_spec(answer: GeneratedAPI, plan: APIPlan, example_id: str | None) -> APISpec:
    properties = {snake_case(p.name): _param_schema(p) for p in answer.parameters if snake_case(p.name)}
    required = [snake_case(p.name) for p in answer.parameters if p.required and snake_case(p.name) in properties]
    parameters = {"type": "object", "properties": properties, "required": list(dict.fromkeys(required))}
    result = {
        "type": "object",
        "properties": {snake_case(f.name): {"type": f.type, "description": f.description}
                       for f in answer.result if snake_case(f.name)},
    }
    result["required"] = list(result["properties"])
    name = snake_case(answer.name)
    api_id = hashlib.sha1(json.dumps([name, parameters], sort_keys=True).encode()).hexdigest()[:16]
    return APISpec(api_id=api_id, name=name, description=" ".join(answer.description.split()),
                   parameters=parameters, result_schema=result, domain=plan.domain, node_ids=plan.node_ids,
                   operators=plan.operators, example_api_id=example_id)


def check_definition(api: APISpec) -> str | None:
    """API definition clarity: a usable name and description, valid JSON Schemas, sane parameters."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{2,63}", api.name):
        return f"name {api.name!r} is not a usable function name"
    if len(api.description) < 10:
        return "description shorter than 10 characters"
    if not api.parameters["properties"]:
        return "no parameters"
    for label, schema in (("parameters", api.parameters), ("result", api.result_schema)):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            return f"{label} is not a valid JSON Schema: {exc.message}"
    for pname, pschema in api.parameters["properties"].items():
        if pschema.get("enum") == []:
            return f"parameter {pname} has an empty enum"
    if not api.result_schema["properties"]:
        return "result has no fields"
    return None


def evolution_messages(plan: APIPlan, example: APISpec | None) -> list[dict[str, str]]:
    steps = "; ".join(OPERATORS[o] for o in plan.operators)
    example_text = (
        json.dumps({"name": example.name, "description": example.description, "parameters": example.parameters},
                   ensure_ascii=False)
        if example else "(none yet)"
    )
    return [
        {"role": "system", "content": "You design clear, realistic web APIs for developers."},
        {"role": "user", "content": (
            f"Domain path: {' > '.join(plan.path)}\n"
            f"Functionalities the API must provide: {'; '.join(plan.functionalities)}\n"
            f"Example of an earlier API (for style only, do not copy it): {example_text}\n"
            f"Design one new API for these functionalities. Also: {steps}. Give it a snake_case name, "
            "a description, its parameters (mark which are required) and the fields it returns."
        )},
    ]


async def synthesize_api(plan: APIPlan, gateway: LLMGateway, example: APISpec | None) -> APISpec:
    answer = await gateway.structured(GeneratedAPI, evolution_messages(plan, example), stage=STAGE,
                                      sample=plan.index, max_tokens=API_MAX_TOKENS)
    if answer.value is None:
        spec = APISpec(api_id=f"failed-{plan.index}", name="", description="", parameters={},
                       result_schema={}, domain=plan.domain, node_ids=plan.node_ids, operators=plan.operators)
        spec.reject(answer.check or DEFINITION_CHECK, answer.error or "no answer")
    else:
        spec = to_api_spec(answer.value, plan, example.api_id if example else None)
        if problem := check_definition(spec):
            spec.reject(DEFINITION_CHECK, problem)
    spec.raw_outputs = answer.raw_outputs
    return spec


async def synthesize_apis(plans: list[APIPlan], gateway: LLMGateway, buffer: list[APISpec],
                          taken_names: set[str], seed: int) -> list[APISpec]:
    """One batch: each plan draws its example from the buffer as it was when the batch started."""
    rng = random.Random(seed)
    examples = [rng.choice(buffer) if buffer else None for _ in plans]
    specs = list(await asyncio.gather(*(synthesize_api(p, gateway, e) for p, e in zip(plans, examples, strict=True))))
    for spec in specs:
        if spec.accepted:
            if spec.name in taken_names:
                spec.reject(DUPLICATE_CHECK, f"an accepted API is already named {spec.name}")
            else:
                taken_names.add(spec.name)
    return specs
