"""Scale benchmark of API pool growth: grow a pool of 30,000 APIs against the scripted OpenAI-compatible server.

The benchmark drives the same plain functions as the flow's API-synthesis stage, without Prefect:
``PoolGrower.next_plans`` -> ``PoolGrower.examples`` -> ``synthesize_apis`` (one ``LLMGateway``, real HTTP to an
in-process :class:`ScriptedLLMServer`, no response cache) -> ``PoolGrower.admit`` (all-MiniLM-L6-v2 embeddings and
near-duplicate lookups in a ``NearDuplicateIndex``). The context tree is synthetic (``--domains`` domains with
sub-domains and functionality leaves named from word lists) and built with ``build_tree`` without an embedder.

The scripted server answers the API-generation schemas (``GeneratedAPI``, ``ConstrainedAPI``, ``NestedAPI``,
``ConstrainedNestedAPI``) with a valid answer derived from the request (the user message and the sample index):
names, descriptions and parameters combined from word lists, so most APIs are distinct, while a few percent copy
the example API shown in the prompt (its name, its description and parameters under a new name, or a light
rewording of it), as an LLM does now and then: those must end as duplicate or near-duplicate rejections.

Per segment of ``--segment`` accepted APIs it prints the time split between the LLM round trips (with the
definition checks of ``synthesize_apis``), embedding and index lookups, and the mean number of index candidates
examined per lookup, so that one sees whether the per-API cost grows with the pool. At the end it prints the
totals, the peak RSS, and how many near duplicates an exact scan of every pair would have found beyond the index.
Timing wrappers only count time: every function called is the flow's own.

Usage: python benchmarks/pool_growth.py [--apis 30000] [--domains 400] [--batch 256] [--concurrency 64]
       [--segment 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import platform
import random
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.scripted_llm_server

from schemas.llm_outputs import ConstrainedAPI, ConstrainedNestedAPI, GeneratedAPI, NestedAPI
from schemas.records import APISpec, MinedDocument
from tasks.apis import synthesis as api_synthesis
from tasks.apis.near_duplicates import NearDuplicateIndex
from tasks.apis.synthesis import STAGE, PoolGrower, TreeSampler, pool_report, synthesize_apis
from tasks.context_tree.building import build_tree, tree_shape
from tasks.embedding.text_embedding import shared_embedder
from tests.scripted_llm_server import DEFAULT_MODEL, ScriptedLLMServer, last_user_text, schema_name
from toolace.llm import gateway as gateway_module
from toolace.llm.gateway import GatewaySettings, LLMGateway

MAX_ATTEMPT_FACTOR = 3  # as in the flow: at most 3x the requested APIs are attempted
NEAR_DUPLICATE_THRESHOLD = 0.9

# ------------------------------------------------------------------------------------------------ word lists

SCOPES = ["Consumer", "Enterprise", "Regional", "Municipal", "Wholesale", "Academic", "Mobile", "Open Data",
          "Personal", "Industrial", "Nonprofit", "Global"]
SECTORS = ["Banking", "Insurance", "Weather", "Logistics", "Healthcare", "Retail", "Travel", "Real Estate",
           "Education", "Energy", "Agriculture", "Telecom", "Streaming Media", "Gaming", "Sports", "Music",
           "Fitness", "Food Delivery", "Hospitality", "Automotive", "Aviation", "Maritime", "Construction",
           "Manufacturing", "Legal Services", "Government", "Recruiting", "Payroll", "Marketing", "Advertising",
           "Ecommerce", "Cybersecurity", "Cloud Hosting", "Social Networks", "Messaging", "Mapping", "Astronomy",
           "Pharmacy", "Veterinary", "Charity", "Events", "Publishing", "Translation", "Parking", "Public Transit",
           "Ride Sharing", "Crypto", "Stock Trading", "Accounting", "Tax Filing"]
FACETS = ["Accounts", "Orders", "Scheduling", "Analytics", "Notifications", "Inventory", "Billing", "Reviews",
          "Search", "Compliance", "Reporting", "Customer Support", "Pricing", "Documents", "Identity", "Bookings",
          "Locations", "Media Assets", "Forecasting", "Partners", "Contracts", "Loyalty Programs", "Shipping",
          "Feedback", "Catalog", "Audit Logs", "Workflows", "Payments", "Subscriptions", "Staff", "Risk",
          "Quality Control", "Procurement", "Maintenance", "Training", "Onboarding", "Claims", "Marketplace",
          "Sensors", "Campaigns"]
# (verb, third person singular) of the functionality leaves
VERBS = [("list", "Lists"), ("search", "Searches"), ("create", "Creates"), ("update", "Updates"),
         ("cancel", "Cancels"), ("track", "Tracks"), ("export", "Exports"), ("summarize", "Summarizes"),
         ("forecast", "Forecasts"), ("validate", "Validates"), ("compare", "Compares"), ("schedule", "Schedules"),
         ("archive", "Archives"), ("approve", "Approves"), ("rank", "Ranks"), ("estimate", "Estimates"),
         ("recommend", "Recommends"), ("flag", "Flags"), ("convert", "Converts"), ("sync", "Syncs"),
         ("import", "Imports"), ("audit", "Audits"), ("monitor", "Monitors"), ("retrieve", "Retrieves"),
         ("book", "Books"), ("verify", "Verifies"), ("assign", "Assigns"), ("merge", "Merges")]
OBJECTS = ["invoices", "shipments", "appointments", "claims", "listings", "tickets", "reservations", "payments",
           "policies", "routes", "sensors", "orders", "customers", "vehicles", "documents", "courses", "patients",
           "prescriptions", "flights", "hotels", "tracks", "playlists", "matches", "players", "recipes", "menus",
           "properties", "leases", "meters", "tariffs", "crops", "fields", "devices", "subscriptions", "campaigns",
           "leads", "candidates", "jobs", "timesheets", "budgets", "transactions", "portfolios", "alerts",
           "incidents", "certificates", "permits", "contracts", "vendors", "warehouses", "parcels", "stops",
           "drivers", "reviews", "events", "venues", "articles", "translations", "wallets", "trades", "receipts"]
SINGULAR = {"policies": "policy", "properties": "property", "leases": "lease", "matches": "match",
            "warehouses": "warehouse", "courses": "course", "vehicles": "vehicle", "prescriptions": "prescription"}
QUALIFIERS = [("history", "over time"), ("summary", "as a short summary"), ("status", "with their current status"),
              ("by_region", "grouped by region"), ("by_date", "for a date range"), ("details", "with full details"),
              ("in_bulk", "in bulk"), ("nearby", "near a location"), ("trends", "with weekly trends"),
              ("report", "as a printable report"), ("alerts", "that need attention"), ("stats", "with statistics"),
              ("timeline", "on a timeline"), ("feed", "as a live feed"), ("snapshot", "as a daily snapshot"),
              ("overview", "in an overview"), ("changes", "changed since a given time"), ("costs", "with costs"),
              ("top", "ranked from best to worst"), ("pending", "that are still pending"),
              ("for_user", "of one user"), ("by_owner", "grouped by owner"), ("csv", "as CSV rows"),
              ("preview", "as a preview"), ("quota", "against the account quota")]
MODIFIERS = [("live", "in real time"), ("bulk", "in large batches"), ("daily", "once a day"),
             ("partner", "for partner systems"), ("mobile", "sized for mobile screens"),
             ("secure", "over signed requests"),
             ("quick", "as a fast approximate answer"), ("smart", "using learned rankings"),
             ("public", "from public records"), ("internal", "for internal tools"), ("batch", "as a background job"),
             ("cached", "from a cached copy"), ("paged", "page by page"), ("scoped", "scoped to one workspace"),
             ("shared", "shared across teams"), ("draft", "as drafts first"),
             ("verified", "from verified sources only"),
             ("legacy", "from the legacy system"), ("async", "asynchronously behind a job id"),
             ("local", "in the caller's locale")]
AUDIENCES = ["operations teams", "mobile apps", "partner portals", "back-office staff", "analysts", "end users",
             "support agents", "auditors", "dashboards", "field workers", "managers", "integrators"]
FEATURES = ["with optional paging and sorting", "filtered by status and date range", "returning totals per category",
            "including links to related records", "with localized labels", "respecting user permissions",
            "with caching hints for clients", "flagging anomalies", "with per-item error details",
            "honouring the caller's time zone", "in the caller's currency", "with a confidence score",
            "including soft-deleted items on request", "with geo coordinates", "deduplicating repeated entries",
            "with an audit trail", "within the account's rate limits", "with thumbnails where available"]
REWORDINGS = [("Returns", "Gives back"), ("Lists", "Returns a list of"), (" for ", " for the "),
              (" with ", " together with "), (" by ", " per ")]
# name, type, description, enum, item_type, constraints (for the Constrained variants)
PARAMS: list[tuple[str, str, str, list[str], str, dict[str, Any]]] = [
    ("region", "string", "Region code to restrict results to", ["eu", "us", "apac", "latam"], "none", {}),
    ("start_date", "string", "First day of the range", [], "none", {"format": "date"}),
    ("end_date", "string", "Last day of the range", [], "none", {"format": "date"}),
    ("since", "string", "Only items changed after this moment", [], "none", {"format": "date-time"}),
    ("limit", "integer", "Maximum number of items to return", [], "none", {"minimum": 1, "maximum": 200}),
    ("page", "integer", "Page number, starting at 1", [], "none", {"minimum": 1, "maximum": 10000}),
    ("sort_order", "string", "Order of the results", ["asc", "desc"], "none", {}),
    ("status", "string", "Only items in this state", ["open", "pending", "closed", "failed"], "none", {}),
    ("include_archived", "boolean", "Whether archived items are included", [], "none", {}),
    ("tags", "array", "Tags an item must carry", [], "string", {"min_items": 1, "max_items": 10}),
    ("owner_email", "string", "Email address of the owner", [], "none", {"format": "email"}),
    ("currency", "string", "ISO 4217 currency of amounts", [], "none", {"pattern": "^[A-Z]{3}$"}),
    ("country_code", "string", "ISO 3166 two-letter country code", [], "none", {"pattern": "^[A-Z]{2}$"}),
    ("radius_km", "number", "Search radius around the location in km", [], "none", {"minimum": 0.1, "maximum": 50}),
    ("latitude", "number", "Latitude of the location", [], "none", {"minimum": -90, "maximum": 90}),
    ("longitude", "number", "Longitude of the location", [], "none", {"minimum": -180, "maximum": 180}),
    ("min_amount", "number", "Smallest amount to include", [], "none", {"minimum": 0}),
    ("max_price", "number", "Highest price to include", [], "none", {"minimum": 0, "maximum": 1000000}),
    ("language", "string", "Language of the labels", ["en", "de", "fr", "es", "ja"], "none", {}),
    ("units", "string", "Unit system of measurements", ["metric", "imperial"], "none", {}),
    ("query", "string", "Free-text search terms", [], "none", {}),
    ("category_ids", "array", "Categories to include", [], "integer", {"min_items": 1, "max_items": 20}),
    ("dry_run", "boolean", "Validate the request without applying it", [], "none", {}),
    ("granularity", "string", "Time bucket of aggregated values", ["hour", "day", "week", "month"], "none", {}),
    ("threshold", "number", "Score above which an item is flagged", [], "none", {"minimum": 0, "maximum": 1}),
    ("callback_url", "string", "URL notified when the work is done", [], "none", {"format": "uri"}),
    ("request_id", "string", "Idempotency key of the request", [], "none", {"format": "uuid"}),
    ("max_results", "integer", "Upper bound on returned records", [], "none", {"minimum": 1, "maximum": 500}),
    ("fields", "array", "Fields to include in each item", [], "string", {"min_items": 1, "max_items": 12}),
    ("time_zone", "string", "IANA time zone for dates", [], "none", {"pattern": "^[A-Za-z_]+/[A-Za-z_]+$"}),
    ("priority", "string", "Priority level", ["low", "normal", "high", "urgent"], "none", {}),
    ("notify", "boolean", "Whether the owner gets a notification", [], "none", {}),
    ("quantity", "integer", "Number of units", [], "none", {"minimum": 1, "maximum": 999}),
    ("format", "string", "Output format", ["json", "csv", "pdf"], "none", {}),
    ("weights", "array", "Relative weights of the criteria", [], "number", {"min_items": 2, "max_items": 6}),
    ("customer_ref", "string", "Reference of the customer", [], "none", {"pattern": "^C[0-9]{6}$"}),
]
NESTED = [("line_items", "array_of_objects", "Items of the request, one object each"),
          ("filters", "object", "Structured filter on several fields"),
          ("recipients", "array_of_objects", "People who receive the result"),
          ("stops", "array_of_objects", "Ordered stops along the way"),
          ("attachments", "array_of_objects", "Files attached to the request"),
          ("schedule", "object", "When and how often the job runs"),
          ("address", "object", "Postal address used for the request"),
          ("rules", "array_of_objects", "Rules applied in order")]
NESTED_FIELDS = [("name", "string", "Display name"), ("quantity", "integer", "Number of units"),
                 ("unit_price", "number", "Price of one unit"), ("email", "string", "Contact email address"),
                 ("labels", "array", "Free labels"), ("active", "boolean", "Whether the entry is active"),
                 ("position", "integer", "Order of the entry"), ("note", "string", "Free-text note"),
                 ("days", "array", "Days of the week it applies to"), ("weight_kg", "number", "Weight in kg")]
RESULTS = [("items", "array", "Matching records", "object"), ("total", "integer", "Number of matches", "none"),
           ("next_page", "string", "Cursor of the next page", "none"), ("status", "string", "Outcome", "none"),
           ("summary", "string", "Short text summary", "none"), ("score", "number", "Overall score", "none"),
           ("updated_at", "string", "Time of the last change", "none"), ("ids", "array", "Affected ids", "string"),
           ("warnings", "array", "Problems found", "string"), ("amount", "number", "Total amount", "none"),
           ("url", "string", "Link to the result", "none"), ("ok", "boolean", "Whether it succeeded", "none")]

# ------------------------------------------------------------------------------------------ synthetic tree


def synthetic_documents(domains: int, seed: int) -> list[MinedDocument]:
    """One mined document per (domain, sub-domain), listing 4-6 functionality leaves."""
    rng = random.Random(f"{seed}:tree")
    names = [f"{scope} {sector}" for sector in SECTORS for scope in SCOPES]
    if domains > len(names):
        raise SystemExit(f"--domains is at most {len(names)} with these word lists")
    rng.shuffle(names)
    docs: list[MinedDocument] = []
    for domain in names[:domains]:
        for facet in rng.sample(FACETS, k=rng.randint(3, 5)):
            leaves = {f"{verb} {obj}" for (verb, _), obj in zip(rng.sample(VERBS, 6), rng.sample(OBJECTS, 6),
                                                                   strict=True)}
            docs.append(MinedDocument(doc_id=f"doc-{len(docs)}", source="synthetic", title=f"{domain} {facet}",
                                      domain=domain, subdomains=[facet], functionalities=sorted(leaves)[:5]))
    return docs


# ------------------------------------------------------------------------------------------ scripted answers

MODELS = {m.__name__: m for m in (GeneratedAPI, ConstrainedAPI, NestedAPI, ConstrainedNestedAPI)}
THIRD = dict(VERBS)


def _line(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return ""


def _example(text: str) -> dict[str, Any] | None:
    raw = re.search(r"Example of an earlier API[^:]*: (\{.*\})\s*$", text, re.MULTILINE)
    try:
        return json.loads(raw.group(1)) if raw else None
    except json.JSONDecodeError:
        return None


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;") + "."


def _param(entry: tuple[str, str, str, list[str], str, dict[str, Any]], required: bool,
           constrained: bool) -> dict[str, Any]:
    name, type_, description, enum, item_type, limits = entry
    param: dict[str, Any] = {"name": name, "type": type_, "description": description, "required": required,
                             "enum": enum, "item_type": item_type}
    if constrained:
        param.update({"minimum": limits.get("minimum"), "maximum": limits.get("maximum"),
                      "pattern": limits.get("pattern"), "format": limits.get("format", "none"),
                      "min_items": limits.get("min_items"), "max_items": limits.get("max_items")})
    return param


def _nested(rng: random.Random) -> dict[str, Any]:
    name, kind, description = rng.choice(NESTED)
    fields = [{"name": f, "type": t, "description": d, "required": rng.random() < 0.5,
               "item_type": ("string" if f == "labels" else "integer") if t == "array" else "none"}
              for f, t, d in rng.sample(NESTED_FIELDS, k=rng.randint(2, 4))]
    return {"name": name, "kind": kind, "description": description, "required": rng.random() < 0.6,
            "fields": fields}


def fresh_answer(rng: random.Random, path: list[str], functionalities: list[str], constrained: bool,
                 nested: bool) -> dict[str, Any]:
    """A new API from the sampled subtree, its parts picked with ``rng``."""
    domain = path[0] if path else "General Services"
    facet = path[-1] if len(path) > 1 else "Records"
    words = (functionalities[0] if functionalities else "list records").split()
    verb, obj = words[0], " ".join(words[1:]) or "records"
    thing = SINGULAR.get(obj, obj[:-1] if obj.endswith("s") else obj)
    sector = next((domain[len(s) + 1:] for s in SCOPES if domain.startswith(f"{s} ")), domain)
    token = re.sub(r"[^a-z]+", "_", sector.lower()).strip("_")
    qualifier, qualifier_text = rng.choice(QUALIFIERS)
    modifier, modifier_text = rng.choice(MODIFIERS)
    third = THIRD.get(verb, verb.capitalize())
    if len(functionalities) > 1:  # a broad API: several sibling leaves
        other = functionalities[1].split()[-1]
        core = f"{thing}_and_{SINGULAR.get(other, other.removesuffix('s'))}"
        action = f"{third} {obj} and also can {' and '.join(functionalities[1:])}"
    else:
        core = thing
        action = f"{third} {obj} {qualifier_text}"
    names = [f"{verb}_{modifier}_{token}_{core}_{qualifier}", f"{verb}_{modifier}_{core}_{qualifier}",
             f"{verb}_{modifier}_{core}", f"{verb}_{core}"[:40]]
    name = next(n for n in names if len(n) <= 40)
    description = _clip(f"{action}, {modifier_text}, in {domain.lower()} {facet.lower()} for "
                        f"{rng.choice(AUDIENCES)}, {rng.choice(FEATURES)}.", 160)
    chosen = rng.sample(PARAMS, k=rng.randint(1, 3))
    params = [_param(p, rng.random() < 0.4, constrained) for p in chosen]
    if rng.random() < 0.6:
        id_param = (f"{thing.replace(' ', '_')}_id", "string", f"Identifier of the {thing}", [], "none",
                    {"pattern": "^[A-Za-z0-9-]{4,36}$"})
        params.insert(0, _param(id_param, True, constrained))
    result = [{"name": n, "type": t, "description": d, "item_type": i}
              for n, t, d, i in rng.sample(RESULTS, k=rng.randint(1, 4))]
    answer: dict[str, Any] = {"name": name, "description": description, "parameters": params[:4], "result": result}
    if nested:
        answer["nested_parameter"] = _nested(rng)
    return answer


def params_from_schema(parameters: dict[str, Any], constrained: bool) -> tuple[list[dict[str, Any]],
                                                                             dict[str, Any] | None]:
    """The answer's parameters (and nested one) back from an example's JSON Schema, as far as they map."""
    required = set(parameters.get("required") or [])
    params: list[dict[str, Any]] = []
    nested: dict[str, Any] | None = None
    for key, schema in (parameters.get("properties") or {}).items():
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        fields = items.get("properties") if schema.get("type") == "array" else schema.get("properties")
        if fields:
            field_required = set((items if schema.get("type") == "array" else schema).get("required") or [])
            nested = {"name": key, "kind": "array_of_objects" if schema.get("type") == "array" else "object",
                      "description": schema.get("description") or "Structured value", "required": key in required,
                      "fields": [{"name": f, "type": s["type"], "description": s.get("description") or f,
                                  "required": f in field_required,
                                  "item_type": (s.get("items") or {}).get("type", "none")} for f, s in fields.items()]}
            continue
        limits = {"minimum": schema.get("minimum"), "maximum": schema.get("maximum"),
                  "pattern": schema.get("pattern"), "format": schema.get("format", "none"),
                  "min_items": schema.get("minItems"), "max_items": schema.get("maxItems")}
        entry = (key, schema.get("type", "string"), schema.get("description") or key, schema.get("enum") or [],
                 items.get("type", "none") if schema.get("type") == "array" else "none", limits)
        params.append(_param(entry, key in required, constrained))
    return params[:4], nested


def copied_answer(rng: random.Random, mode: str, example: dict[str, Any], fresh: dict[str, Any],
                  constrained: bool, nested: bool) -> dict[str, Any]:
    """What an LLM that leans on the prompt's example writes: its name, its signature, or a rewording of it."""
    if mode == "same_name":
        return {**fresh, "name": example["name"]}
    params, example_nested = params_from_schema(example.get("parameters") or {}, constrained)
    answer = {**fresh, "description": example["description"], "parameters": params or fresh["parameters"]}
    if nested:
        answer["nested_parameter"] = example_nested or fresh["nested_parameter"]
    if mode == "reworded":
        old, new = rng.choice([r for r in REWORDINGS if r[0] in example["description"]] or [(".", " quickly.")])
        answer["description"] = _clip(example["description"].replace(old, new, 1), 160)
        answer["name"] = f"{example['name'][:32]}_{rng.choice(['v2', 'plus', 'lookup', 'api', 'query'])}"
    return answer


class APIAnswers:
    """The scripted rule for the API-generation schemas; counts how each answer was made."""

    def __init__(self, copy_name: float = 0.015, copy_signature: float = 0.01, reword: float = 0.015) -> None:
        self.modes = (("same_name", copy_name), ("same_signature", copy_signature), ("reworded", reword))
        self.made: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> dict[str, Any] | None:
        model = MODELS.get(schema_name(body) or "")
        if model is None:
            return None
        text = last_user_text(body)
        rng = random.Random(f"{body.get('seed', 0)}|{text}")
        constrained, nested = model.__name__.startswith("Constrained"), "nested_parameter" in model.model_fields
        path = [p.strip() for p in _line(text, "Domain path:").split(">") if p.strip()]
        functionalities = [f.strip() for f in _line(text, "Functionalities the API must provide:").split(";")
                           if f.strip()]
        fresh = fresh_answer(rng, path, functionalities, constrained, nested)
        example, draw, mode = _example(text), rng.random(), "fresh"
        if example and example.get("name") and example.get("description"):
            for candidate, share in self.modes:
                if draw < share:
                    mode = candidate
                    break
                draw -= share
        answer = fresh if mode == "fresh" else copied_answer(rng, mode, example or {}, fresh, constrained, nested)
        self.made[mode] += 1
        return {"json": model.model_validate(answer).model_dump(mode="json")}


# ------------------------------------------------------------------------------------------------ measuring


class TimedIndex(NearDuplicateIndex):
    """The flow's index, with the time spent in lookups and insertions counted; it keeps a copy of the vectors
    added (outside the timing) so that :func:`missed_near_duplicates` can compare it with an exact scan."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups, self.lookup_s, self.add_s = 0, 0.0, 0.0
        self.added: list[np.ndarray] = []

    def nearest(self, vector: np.ndarray) -> Any:
        started = time.perf_counter()
        try:
            return super().nearest(vector)
        finally:
            self.lookups += 1
            self.lookup_s += time.perf_counter() - started

    def add_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        started = time.perf_counter()
        try:
            super().add_many(keys, vectors)
        finally:
            self.add_s += time.perf_counter() - started
        self.added.append(np.array(vectors, dtype=np.float32, ndmin=2))


def missed_near_duplicates(vectors: np.ndarray, threshold: float, chunk: int = 2048) -> int:
    """Accepted APIs whose embedding is at least ``threshold`` similar to an API accepted before them: what an
    exact scan of every pair would have rejected and the index let through (rows are in admission order)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    missed = 0
    for start in range(1, len(unit), chunk):
        rows = unit[start:start + chunk]
        sims = rows @ unit[:start + len(rows)].T
        sims[np.arange(len(rows))[:, None] <= np.arange(start + len(rows))[None, :] - start] = -1.0  # earlier only
        missed += int((sims.max(axis=1) >= threshold).sum())
    return missed


class Stopwatch:
    """Seconds and calls of a wrapped function (timing only: arguments and results pass through)."""

    def __init__(self) -> None:
        self.seconds, self.calls, self.items = 0.0, 0, 0

    def wrap(self, function: Any) -> Any:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
                self.items += len(args[0]) if args and isinstance(args[0], list | tuple) else 1

        return timed


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def quiet_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


HEADER = (f"{'pool':>7}{'APIs':>6}{'tried':>6}{'secs':>7}{'APIs/s':>8}{'req/s':>7}{'LLM s':>7}{'-fmt':>6}"
          f"{'-chk':>6}{'-rule':>6}{'embed':>7}{'index':>7}{'other':>7}{'emb/s':>6}{'ms/lookup':>10}"
          f"{'cand/lookup':>12}")
LEGEND = """columns per segment: pool size at its end, APIs accepted and attempted in it, wall seconds, accepted APIs/s,
LLM requests/s; seconds in synthesize_apis (LLM round trips through the in-process scripted server), of which
-fmt building response_format schemas (client), -chk check_definition, -rule the server's scripted answers;
seconds embedding, in index lookups + insertions, and the rest (planning, examples, admission checks);
texts embedded per second; milliseconds per index lookup; mean index candidates examined per lookup."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apis", type=int, default=30000)
    parser.add_argument("--domains", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--segment", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_logs()
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")

    started = time.perf_counter()
    nodes = build_tree(synthetic_documents(args.domains, args.seed))
    shape = tree_shape(nodes)
    print(f"context tree: {shape['domains']} domains, {shape['nodes']} nodes, {shape['leaves']} functionality "
          f"leaves ({time.perf_counter() - started:.1f} s)")
    started = time.perf_counter()
    embedder = shared_embedder()
    embedder.embed(["warm up"])
    print(f"embedder: all-MiniLM-L6-v2 on {embedder.device}, {torch_threads()} torch threads "
          f"({time.perf_counter() - started:.1f} s to load)")

    # Stopwatches only time the calls; the functions and their results are the flow's own.
    embed_w, format_w, check_w, rule_w = Stopwatch(), Stopwatch(), Stopwatch(), Stopwatch()
    gateway_module.response_format_for = format_w.wrap(gateway_module.response_format_for)
    api_synthesis.check_definition = check_w.wrap(api_synthesis.check_definition)
    answers = APIAnswers()
    index = TimedIndex(embedder.dim, NEAR_DUPLICATE_THRESHOLD, seed=args.seed)
    grower = PoolGrower(TreeSampler(nodes), args.apis, embed_w.wrap(embedder.embed), index, random.Random(args.seed),
                        broad_share=0.4, nested_share=0.3, max_domain_share=0.25)
    max_attempts = args.apis * MAX_ATTEMPT_FACTOR
    apis: list[APISpec] = []
    rates: list[tuple[int, float]] = []  # (APIs accepted, APIs/s) per segment
    llm_total = 0.0
    with ScriptedLLMServer(latency=0.0) as server, asyncio.Runner() as runner:
        server.script(rule_w.wrap(answers))
        gateway = LLMGateway(GatewaySettings(base_url=server.base_url, model=DEFAULT_MODEL,
                                             concurrency=args.concurrency, cache_dir=None))

        def counters() -> dict[str, float]:
            stats = gateway.stats.get(STAGE)
            return {"accepted": grower.accepted, "planned": grower.planned,
                    "requests": stats.requests if stats else 0, "fmt": format_w.seconds, "chk": check_w.seconds,
                    "rule": rule_w.seconds, "embed": embed_w.seconds, "texts": embed_w.items,
                    "index": index.lookup_s + index.add_s, "lookups": index.lookups,
                    "candidates": index.candidates_examined}

        print(f"growing {args.apis} APIs: batch {args.batch}, concurrency {args.concurrency}, domain cap "
              f"{grower.domain_cap}, near-duplicate threshold {NEAR_DUPLICATE_THRESHOLD}, scripted server at "
              f"{server.base_url}\n")
        print(LEGEND)
        print(HEADER)
        run_started = seg_started = time.perf_counter()
        seg, seg_llm, next_mark = counters(), 0.0, args.segment
        while grower.accepted < args.apis and grower.planned < max_attempts:
            want = min(args.batch, args.apis - grower.accepted, max_attempts - grower.planned)
            plans = grower.next_plans(want)
            if not plans:
                print(f"every domain reached its cap of {grower.domain_cap} new APIs")
                break
            examples = grower.examples(plans)
            llm_started = time.perf_counter()
            specs = runner.run(synthesize_apis(plans, gateway, examples))
            seg_llm += time.perf_counter() - llm_started
            server.clear_requests()  # the test server logs every request body: not part of the pipeline's memory
            apis.extend(grower.admit(plans, specs))
            if grower.accepted < next_mark and grower.accepted < args.apis and grower.planned < max_attempts:
                continue
            now, end = time.perf_counter(), counters()
            d = {key: end[key] - seg[key] for key in end}
            secs = now - seg_started
            rates.append((d["accepted"], d["accepted"] / secs))
            other = secs - seg_llm - d["embed"] - d["index"]
            lookups = max(d["lookups"], 1)
            print(f"{grower.accepted:>7}{d['accepted']:>6}{d['planned']:>6}{secs:>7.1f}{rates[-1][1]:>8.1f}"
                  f"{d['requests'] / secs:>7.1f}{seg_llm:>7.1f}{d['fmt']:>6.1f}{d['chk']:>6.1f}{d['rule']:>6.1f}"
                  f"{d['embed']:>7.1f}{d['index']:>7.2f}{other:>7.1f}{d['texts'] / max(d['embed'], 1e-9):>6.0f}"
                  f"{1000 * d['index'] / lookups:>10.3f}{d['candidates'] / lookups:>12.1f}", flush=True)
            llm_total += seg_llm
            seg, seg_started, seg_llm = end, now, 0.0
            while next_mark <= grower.accepted:
                next_mark += args.segment
        wall = time.perf_counter() - run_started
        runner.run(gateway.aclose())
        rule_errors = len(server.errors)
    stats = gateway.stats.get(STAGE)
    requests = stats.requests if stats else 0
    report = pool_report(apis)
    rejected = report["rejected_by"]
    print()
    print(f"APIs accepted: {grower.accepted} of {args.apis} wanted; attempts: {grower.planned} (max {max_attempts})")
    print(f"rejections: {sum(rejected.values())} {json.dumps(rejected)}")
    same_name = sum((a.reason or "").startswith("an accepted API is already named") for a in apis)
    print(f"exact duplicates: {same_name} by name, "
          f"{rejected.get(api_synthesis.DUPLICATE_CHECK, 0) - same_name} by signature (description + parameters)")
    print(f"duplicate rate (exact + near, of defined APIs): {report['duplicate_rate']:.2%}; scripted answers by "
          f"kind: {json.dumps(dict(answers.made.most_common()))}")
    print(f"pool: {report['domains']} domains, max domain share {report['max_domain_share']:.2%}, nested "
          f"{report['nesting_share']:.1%}, constrained {report['constraint_share']:.1%}, broad "
          f"{report['broad_share']:.1%}")
    print(f"LLM: {requests} requests, {stats.retries if stats else 0} retries, {stats.failures if stats else 0} "
          f"failures, scripted rule errors: {rule_errors}")
    print(f"wall time: {wall:.1f} s; synthesize_apis {llm_total:.1f} s (response_format {format_w.seconds:.1f} s, "
          f"check_definition {check_w.seconds:.1f} s, scripted rule {rule_w.seconds:.1f} s); embedding "
          f"{embed_w.seconds:.1f} s for {embed_w.items} texts; index {index.lookup_s + index.add_s:.1f} s for "
          f"{index.lookups} lookups, {index.candidates_examined / max(index.lookups, 1):.1f} candidates per lookup")
    print(f"overall: {grower.accepted / wall:.1f} APIs/s, {requests / wall:.1f} LLM requests/s")
    full = [rate for count, rate in rates if count >= args.segment / 2] or [rate for _, rate in rates]
    if len(full) > 1 and full[0] > 0:
        print(f"last segment / first segment APIs/s: {full[-1] / full[0]:.2f} (segments of at least "
              f"{args.segment // 2} APIs)")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"peak RSS: {peak_rss_mib():.0f} MiB; process CPU time {usage.ru_utime + usage.ru_stime:.0f} s "
          f"(whole benchmark)")
    started = time.perf_counter()
    missed = missed_near_duplicates(np.concatenate(index.added), index.threshold) if index.added else 0
    found = rejected.get(api_synthesis.NEAR_DUPLICATE_CHECK, 0)
    print(f"index vs exact scan: the index rejected {found} near duplicates; an exact scan of all pairs finds "
          f"{missed} more among the accepted APIs (recall {found / max(found + missed, 1):.1%}; scan "
          f"{time.perf_counter() - started:.1f} s)")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average at the end "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
