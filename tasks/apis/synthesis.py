"""Tool self-evolution synthesis, as the ToolACE paper describes it.

* **Speciation**: each new API starts from a subtree sampled from the API context tree: one
  functionality leaf for a narrow API, several sibling leaves for a broad one (adaptation).
* **Evolution**: an LLM writes the API from that subtree and one example drawn from the API example
  buffer, applying diversity operators (add functionality, add parameters, add constraints, mutate
  parameter types, update the result). A configurable share of plans also asks for a nested
  parameter (an array of objects, or an object holding arrays); the answer model then *requires* one,
  so a schema-enforcing server cannot skip it.
* **Admission** (:class:`PoolGrower`): every API ends accepted or rejected with a versioned check:
  definition clarity, exact duplicates (same name or same signature), near duplicates (embedding of
  name + description + parameter names above a threshold, looked up in an LSH index, not a scan),
  and a per-domain cap so no domain takes more than its share of the new APIs.

The plan/parse/check functions are plain; the LLM gateway and the embedder are passed in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import keyword
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from schemas.llm_outputs import (
    ConstrainedParameter,
    GeneratedAPI,
    GeneratedParameter,
    GeneratedResultField,
    NestedParameter,
    api_answer_model,
)
from schemas.records import APISpec, TreeNode
from tasks.apis.schema_validity import schema_problem
from tasks.context_tree.building import domain_of
from toolace.llm.gateway import LLMGateway
from toolace.safe_patterns import pattern_problem, schema_hazard

STAGE = "api_synthesis"
DEFINITION_CHECK = "api_definition_v1"
DUPLICATE_CHECK = "api_duplicate_v2"  # v2: same signature (params + description) counts, not only the name
NEAR_DUPLICATE_CHECK = "api_near_duplicate_v1"
DOMAIN_SHARE_CHECK = "api_domain_share_v1"
API_MAX_TOKENS = 1024  # four parameters, a nested one and four result fields fit in about 800

OPERATORS: dict[str, str] = {
    "add_functionality": "cover one more related functionality than the example does",
    "add_parameters": "add optional parameters that refine the request (filters, paging, units)",
    "add_constraints": "constrain parameters: enums for categorical values, minimum/maximum for numbers, "
                       "a pattern or format (date, email, uuid) for strings, item counts for arrays",
    "mutate_types": "use a mix of parameter types: string, integer, number, boolean and array",
    "update_result": "return a richer result object than the example",
}
NEST_OPERATOR = "nest_parameters"
NEST_INSTRUCTION = ("add one structured parameter: an array of objects (e.g. a list of items, each with "
                    "fields) or an object whose fields may hold arrays")
CONSTRAINT_KEYS = ("enum", "minimum", "maximum", "pattern", "format", "minItems", "maxItems")


class APIPlan(BaseModel):
    index: int
    domain: str
    domain_id: str
    node_ids: list[str]
    functionalities: list[str]
    path: list[str]
    breadth: str  # "narrow" (one leaf) or "broad" (several leaves)
    operators: list[str]

    @property
    def constrained(self) -> bool:
        return "add_constraints" in self.operators

    @property
    def nested(self) -> bool:
        return NEST_OPERATOR in self.operators


class TreeSampler:
    """Samples subtrees (a parent and some of its functionality leaves) per domain."""

    def __init__(self, nodes: list[TreeNode]) -> None:
        self.by_id = {n.node_id: n for n in nodes}
        self.leaves: dict[str, list[TreeNode]] = defaultdict(list)  # parent id -> functionality leaves
        for node in nodes:
            if node.is_functionality and node.parent_id:
                self.leaves[node.parent_id].append(node)
        self.parents: dict[str, list[str]] = defaultdict(list)  # domain id -> parents holding leaves
        for parent_id in sorted(self.leaves):
            self.parents[domain_of(self.by_id[parent_id], self.by_id).node_id].append(parent_id)
        self.domain_ids = sorted(self.parents)

    def path(self, node_id: str) -> list[str]:
        path, cursor = [], self.by_id[node_id]
        while True:
            path.insert(0, cursor.name)
            if cursor.parent_id is None:
                return path
            cursor = self.by_id[cursor.parent_id]

    def plan(self, index: int, domain_id: str, rng: random.Random, broad_share: float,
             nested_share: float) -> APIPlan:
        parent_id = rng.choice(self.parents[domain_id])
        leaves = self.leaves[parent_id]
        broad = len(leaves) > 1 and rng.random() < broad_share
        chosen = rng.sample(leaves, k=min(len(leaves), rng.randint(2, 3))) if broad else [rng.choice(leaves)]
        operators = rng.sample(sorted(OPERATORS), k=2)
        if rng.random() < nested_share:
            operators.append(NEST_OPERATOR)
        return APIPlan(index=index, domain=self.by_id[domain_id].name, domain_id=domain_id,
                       node_ids=[n.node_id for n in chosen], functionalities=[n.name for n in chosen],
                       path=self.path(parent_id), breadth="broad" if broad else "narrow", operators=operators)


def plan_apis(nodes: list[TreeNode], count: int, rng: random.Random, broad_share: float,
              nested_share: float = 0.0) -> list[APIPlan]:
    """``count`` plans, cycling through the domains so none dominates."""
    sampler = TreeSampler(nodes)
    if not sampler.domain_ids:
        return []
    domains = list(sampler.domain_ids)
    rng.shuffle(domains)
    return [sampler.plan(i, domains[i % len(domains)], rng, broad_share, nested_share) for i in range(count)]


# ------------------------------------------------------------------------------------------ answer -> APISpec


def snake_case(name: str) -> str:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^A-Za-z0-9]+", "_", words).strip("_").lower()
    if text and text[0].isdigit():
        text = f"api_{text}"
    if keyword.iskeyword(text) or keyword.issoftkeyword(text):
        text += "_"  # so calls in Python syntax (ToolACE, BFCL) parse with ast
    return text[:64]


def _items(item_type: str) -> dict[str, Any]:
    return {"type": "string" if item_type == "none" else item_type}


def _constraints(param: ConstrainedParameter, schema: dict[str, Any]) -> None:
    """Copy the constraints that make sense for the parameter's type; drop contradictory ones."""
    if param.type in ("integer", "number"):
        low, high = param.minimum, param.maximum
        if low is not None and high is not None and low > high:
            low, high = high, low
        cast: Callable[[float], float | int] = (lambda v: int(math.floor(v))) if param.type == "integer" else float
        if low is not None and math.isfinite(low):
            schema["minimum"] = cast(low)
        if high is not None and math.isfinite(high):
            schema["maximum"] = math.ceil(high) if param.type == "integer" else float(high)
    if param.type == "string" and "enum" not in schema:
        if param.format != "none":
            schema["format"] = param.format
        elif param.pattern and pattern_problem(param.pattern) is None:
            # a pattern without a linear-time matcher (invalid, or a backreference, a lookaround...: see
            # toolace.safe_patterns) is left out, the parameter stays usable
            schema["pattern"] = param.pattern
    if param.type == "array":
        low_items = param.min_items if param.min_items is not None and param.min_items >= 0 else None
        high_items = param.max_items if param.max_items is not None and param.max_items >= 1 else None
        if low_items is not None and high_items is not None and low_items > high_items:
            low_items, high_items = high_items, low_items
        if low_items is not None:
            schema["minItems"] = low_items
        if high_items is not None:
            schema["maxItems"] = high_items


def _param_schema(param: GeneratedParameter) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type, "description": param.description.strip()}
    if param.type == "string" and param.enum:
        schema["enum"] = list(dict.fromkeys(v for v in param.enum if v.strip()))
    if param.type == "array":
        schema["items"] = _items(param.item_type)
    if param.type == "object":
        schema["properties"] = {}
    if isinstance(param, ConstrainedParameter):
        _constraints(param, schema)
    return schema


def _nested_schema(param: NestedParameter) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in param.fields:
        key = snake_case(field.name)
        if key and key not in fields:
            fields[key] = {"type": field.type, "description": field.description.strip()}
            if field.type == "array":
                fields[key]["items"] = _items(field.item_type)
    required = list(dict.fromkeys(snake_case(f.name) for f in param.fields if f.required and snake_case(f.name)))
    obj = {"type": "object", "properties": fields, "required": [r for r in required if r in fields]}
    if param.kind == "array_of_objects":
        return {"type": "array", "description": param.description.strip(), "items": obj}
    return {**obj, "description": param.description.strip()}


def _result_field(field: GeneratedResultField) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": field.type, "description": field.description.strip()}
    if field.type == "array":
        schema["items"] = _items(field.item_type)
    return schema


def _free_key(key: str, taken: dict[str, Any]) -> str:
    """A parameter name not used yet: a repeated name gets a numeric suffix instead of being lost."""
    if not key or key not in taken:
        return key
    suffix = 2
    while f"{key}_{suffix}" in taken:
        suffix += 1
    return f"{key}_{suffix}"


def api_signature(name: str, description: str, parameters: dict[str, Any]) -> str:
    """Exact-duplicate key: the same description and parameters under any name is the same API."""
    text = json.dumps([" ".join(description.lower().split()), parameters], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def to_api_spec(answer: GeneratedAPI, plan: APIPlan, example_id: str | None) -> APISpec:
    properties: dict[str, Any] = {}
    required: list[str] = []
    nested: NestedParameter | None = getattr(answer, "nested_parameter", None)
    for param in [*answer.parameters, *([nested] if nested else [])]:
        schema = _nested_schema(param) if isinstance(param, NestedParameter) else _param_schema(param)
        if schema in properties.values():
            continue  # a repeated parameter (small models do that) is dropped, not renamed
        key = _free_key(snake_case(param.name), properties)
        if key:
            properties[key] = schema
            if param.required:
                required.append(key)
    parameters = {"type": "object", "properties": properties, "required": required}
    result_props = {snake_case(f.name): _result_field(f) for f in answer.result if snake_case(f.name)}
    result = {"type": "object", "properties": result_props, "required": list(result_props)}
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
        if hazard := schema_hazard(schema):
            return f"{label} schema: {hazard}"
        problem = schema_problem(schema)
        if problem is not None:
            return f"{label} is not a valid JSON Schema: {problem}"
    for pname, pschema in api.parameters["properties"].items():
        if pschema.get("enum") == []:
            return f"parameter {pname} has an empty enum"
        if pschema.get("type") == "object" and not pschema.get("properties"):
            return f"parameter {pname} is an object with no fields"
    if not api.result_schema["properties"]:
        return "result has no fields"
    return None


def evolution_messages(plan: APIPlan, example: APISpec | None) -> list[dict[str, str]]:
    steps = "; ".join(OPERATORS[o] for o in plan.operators if o in OPERATORS)
    if plan.nested:
        steps += "; " + NEST_INSTRUCTION
    example_text = (
        json.dumps({"name": example.name, "description": example.description, "parameters": example.parameters},
                   ensure_ascii=False)
        if example else "(none yet)"
    )
    scope = "a broad API that covers all of these functionalities" if plan.breadth == "broad" else "a focused API"
    return [
        {"role": "system", "content": "You design clear, realistic web APIs for developers."},
        {"role": "user", "content": (
            f"Domain path: {' > '.join(plan.path)}\n"
            f"Functionalities the API must provide: {'; '.join(plan.functionalities)}\n"
            f"Example of an earlier API (for style only, do not copy it): {example_text}\n"
            f"Design {scope}. Also: {steps}. Give it a snake_case name, a description, its parameters "
            "(mark which are required) and the fields it returns."
        )},
    ]


async def synthesize_api(plan: APIPlan, gateway: LLMGateway, example: APISpec | None) -> APISpec:
    model = api_answer_model(plan.constrained, plan.nested)
    answer = await gateway.structured(model, evolution_messages(plan, example), stage=STAGE,
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


async def synthesize_apis(plans: list[APIPlan], gateway: LLMGateway,
                          examples: Sequence[APISpec | None]) -> list[APISpec]:
    """One batch of LLM generation and definition checks; admission to the pool is :class:`PoolGrower`'s."""
    pairs = zip(plans, examples, strict=True)
    return list(await asyncio.gather(*(synthesize_api(p, gateway, e) for p, e in pairs)))


# ------------------------------------------------------------------------------------------------ admission


def api_text(api: APISpec) -> str:
    """What the near-duplicate embedding sees: name, description and parameter names."""
    words = api.name.replace("_", " ")
    params = ", ".join(p.replace("_", " ") for p in api.parameters.get("properties", {}))
    return f"{words}: {api.description} Parameters: {params}"


Embed = Callable[[Sequence[str]], np.ndarray]


class PoolGrower:
    """The growing API pool's state and admission rules, shared by the flow and the scale benchmark.

    ``embed`` maps texts to L2-normalised vectors (all-MiniLM-L6-v2 in the flow); near duplicates are
    found through ``index`` (an LSH index), so admission cost does not grow with the pool.
    """

    def __init__(self, sampler: TreeSampler, target: int, embed: Embed, index: Any, rng: random.Random,
                 broad_share: float, nested_share: float, max_domain_share: float,
                 buffer_size: int = 64) -> None:
        self.sampler, self.target, self.embed, self.index, self.rng = sampler, target, embed, index, rng
        self.broad_share, self.nested_share = broad_share, nested_share
        domains = max(1, len(sampler.domain_ids))
        # a domain may take at most its share, but never so little that the target cannot be met
        self.domain_cap = max(math.ceil(max_domain_share * target), math.ceil(target / domains))
        self.new_per_domain: Counter[str] = Counter()
        self.names: set[str] = set()
        self.signatures: dict[str, str] = {}
        self.ids: set[str] = set()  # api_ids handed out in this run (every record keeps a distinct one)
        self.buffer: list[APISpec] = []
        self.buffer_size = buffer_size
        self.planned = 0
        self.accepted: int = 0
        self.pending: Counter[str] = Counter()
        self._cursor = 0
        self._domains = list(sampler.domain_ids)
        rng.shuffle(self._domains)

    def seed(self, pool: list[APISpec]) -> None:
        """Existing APIs (from ``--pool``): they count for duplicates and feed the example buffer."""
        known = [a for a in pool if a.accepted and a.name not in self.names]
        for api in known:
            self.names.add(api.name)
            self.signatures[api_signature(api.name, api.description, api.parameters)] = api.name
        if known:
            self.index.add_many([a.name for a in known], self.embed([api_text(a) for a in known]))
        self.buffer = known[-self.buffer_size:]

    def open_domains(self) -> list[str]:
        return [d for d in self._domains
                if self.new_per_domain[d] + self.pending[d] < self.domain_cap]

    def next_plans(self, count: int) -> list[APIPlan]:
        """Plans round-robin over the domains still under their cap; fewer (or none) when all are full."""
        plans: list[APIPlan] = []
        for _ in range(count):
            open_domains = self.open_domains()
            if not open_domains:
                break
            domain_id = open_domains[self._cursor % len(open_domains)]
            self._cursor += 1
            plans.append(self.sampler.plan(self.planned, domain_id, self.rng, self.broad_share, self.nested_share))
            self.pending[domain_id] += 1
            self.planned += 1
        return plans

    def examples(self, plans: list[APIPlan]) -> list[APISpec | None]:
        """One example per plan from the buffer, preferring the plan's own domain half the time."""
        picks: list[APISpec | None] = []
        for plan in plans:
            same = [a for a in self.buffer if a.domain == plan.domain]
            pool = same if same and self.rng.random() < 0.5 else self.buffer
            picks.append(self.rng.choice(pool) if pool else None)
        return picks

    def admit(self, plans: list[APIPlan], specs: list[APISpec]) -> list[APISpec]:
        """Apply the duplicate and balance checks to one generated batch; updates the pool state."""
        for plan, spec in zip(plans, specs, strict=True):
            self.pending[plan.domain_id] -= 1
            if spec.api_id in self.ids:  # the same content generated twice: each record keeps its own id
                spec.api_id = f"{spec.api_id}-{plan.index}"
            self.ids.add(spec.api_id)
        candidates = [(p, s) for p, s in zip(plans, specs, strict=True) if s.accepted]
        vectors = self.embed([api_text(s) for _, s in candidates]) if candidates else np.zeros((0, 1))
        for (plan, spec), vector in zip(candidates, vectors, strict=True):
            signature = api_signature(spec.name, spec.description, spec.parameters)
            if spec.name in self.names:
                spec.reject(DUPLICATE_CHECK, f"an accepted API is already named {spec.name}")
            elif signature in self.signatures:
                spec.reject(DUPLICATE_CHECK, f"same description and parameters as {self.signatures[signature]}")
            elif (match := self.index.nearest(vector)) is not None:
                spec.reject(NEAR_DUPLICATE_CHECK,
                            f"similarity {match.similarity:.3f} to {match.key} (threshold {self.index.threshold})")
            elif self.new_per_domain[plan.domain_id] >= self.domain_cap:
                spec.reject(DOMAIN_SHARE_CHECK, f"domain {plan.domain} already has {self.domain_cap} new APIs")
            else:
                self.names.add(spec.name)
                self.signatures[signature] = spec.name
                self.index.add(spec.name, vector)
                self.new_per_domain[plan.domain_id] += 1
                self.accepted += 1
                self.buffer.append(spec)
                if len(self.buffer) > self.buffer_size:
                    self.buffer.pop(0)
        return specs


# --------------------------------------------------------------------------------------------------- report


def _walk(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = [schema]
    for sub in (schema.get("properties") or {}).values():
        if isinstance(sub, dict):
            found.extend(_walk(sub))
    if isinstance(schema.get("items"), dict):
        found.extend(_walk(schema["items"]))
    return found


def is_nested(api: APISpec) -> bool:
    """An array of objects or an object parameter holding fields."""
    for param in api.parameters.get("properties", {}).values():
        items = param.get("items") if isinstance(param.get("items"), dict) else {}
        if (param.get("type") == "array" and items.get("type") == "object") or \
                (param.get("type") == "object" and param.get("properties")):
            return True
    return False


def has_constraints(api: APISpec) -> bool:
    return any(key in node for node in _walk(api.parameters) for key in CONSTRAINT_KEYS)


def pool_report(apis: list[APISpec]) -> dict[str, Any]:
    """Diversity figures of one synthesis stage (accepted and rejected APIs of the run)."""
    accepted = [a for a in apis if a.accepted]
    defined = [a for a in apis if a.accepted or a.rejected_by in
               (DUPLICATE_CHECK, NEAR_DUPLICATE_CHECK, DOMAIN_SHARE_CHECK)]
    duplicates = sum(a.rejected_by in (DUPLICATE_CHECK, NEAR_DUPLICATE_CHECK) for a in apis)
    types: Counter[str] = Counter()
    for api in accepted:
        for param in api.parameters.get("properties", {}).values():
            kind = str(param.get("type"))
            items = param.get("items") if isinstance(param.get("items"), dict) else None
            types[f"array<{items.get('type')}>" if kind == "array" and items else kind] += 1
    per_domain = Counter(a.domain for a in accepted)
    n = len(accepted)
    return {
        "apis": n,
        "domains": len(per_domain),
        "apis_per_domain": dict(per_domain.most_common()),
        "max_domain_share": round(max(per_domain.values()) / n, 4) if n else 0.0,
        "parameter_types": dict(types.most_common()),
        "nesting_share": round(sum(map(is_nested, accepted)) / n, 4) if n else 0.0,
        "constraint_share": round(sum(map(has_constraints, accepted)) / n, 4) if n else 0.0,
        "broad_share": round(sum(len(a.node_ids) > 1 for a in accepted) / n, 4) if n else 0.0,
        "duplicate_rate": round(duplicates / len(defined), 4) if defined else 0.0,
        "rejected_by": dict(Counter(a.rejected_by for a in apis if not a.accepted).most_common()),
    }
