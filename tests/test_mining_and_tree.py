"""Tests for tasks.corpus.mining (relevance score, mine_document with a fake gateway) and
tasks.context_tree.building."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas.llm_outputs import DocumentExtraction
from schemas.records import Document, MinedDocument, TreeNode
from tasks.context_tree.building import build_tree, domain_of, normalise_name, tree_nested, tree_shape
from tasks.corpus.mining import (
    FUNCTIONALITY_CHECK,
    LLM_RELEVANCE_CHECK,
    RELEVANCE_CHECK,
    STAGE,
    combine,
    first_pass,
    heuristic_score,
    mine_document,
    mine_documents,
    relevance_score,
    settled_by_heuristic,
)
from tasks.corpus.reading import document_id
from toolace.config import SAMPLE_CORPUS
from toolace.llm.gateway import STRUCTURED_OUTPUT_CHECK, Structured

API_DOC = """# SkyCast Weather API

The SkyCast REST API lets you get current conditions for any city.
Send a GET request to /v1/current with the query string parameter `city` (string, required)
and the optional `units` field (enum: metric, imperial). The response is JSON: it returns
temperature, humidity and wind speed. Developers can configure webhooks in the dashboard.
"""

POEM = """The moon climbs slowly over quiet hills,
and silver light on sleeping water spills.
My grandmother sang of rivers long ago,
of winter nights and softly falling snow."""


# --------------------------------------------------------------------------------------------- relevance score


def test_api_doc_scores_higher_than_poem() -> None:
    api, poem = relevance_score(API_DOC), relevance_score(POEM)
    assert api > poem
    assert api >= 0.5
    assert poem < 0.15  # below the default relevance_threshold


@pytest.mark.parametrize("text", ["", POEM, API_DOC, "api " * 1000, "API ENDPOINT PARAMETER RETURNS", "\n\t  "])
def test_score_in_unit_interval(text: str) -> None:
    score = relevance_score(text)
    assert 0.0 <= score <= 1.0


def test_score_counts_each_group_once() -> None:
    assert relevance_score("api") == relevance_score("api api endpoint sdk rest")
    assert relevance_score("") == 0.0


def test_score_is_case_and_whitespace_insensitive() -> None:
    assert relevance_score("The API\nreturns\tJSON") == relevance_score("the api returns json")


def test_score_reaches_one_with_every_group() -> None:
    text = ("api parameter returns request function app you can configure string")
    assert relevance_score(text) == 1.0


def test_sample_corpus_ranks_api_doc_above_history() -> None:
    root = Path(SAMPLE_CORPUS)
    api = relevance_score((root / "01-skycast-current-conditions-api.md").read_text(encoding="utf-8"))
    history = relevance_score((root / "09-history-of-hollowbrook-mill.md").read_text(encoding="utf-8"))
    assert api > history


def test_poem_with_everyday_words_stays_below_threshold() -> None:
    """Cue words are meant as words: 'forest', 'happy', 'rapid' hold no API cue ('rest', 'app', 'api')."""
    poem = ("A happy wind runs through the forest,\n"
            "the rapid river sings of interest in the capital of spring.")
    assert relevance_score(poem) < 0.15


# --------------------------------------------------------------------------------------------- mine_document


class FakeGateway:
    """Stands in for LLMGateway.structured: records calls and replies with a preset Structured."""

    def __init__(self, answer: Structured[Any]) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def structured(self, output: type, messages: list[dict[str, str]], *, stage: str,
                         temperature: float | None = None, max_tokens: int | None = None,
                         sample: int = 0) -> Structured[Any]:
        self.calls.append({"output": output, "messages": messages, "stage": stage, "temperature": temperature})
        return self.answer


def make_doc(text: str, title: str = "Doc") -> Document:
    return Document(doc_id=document_id(text), source="mem://doc", title=title, text=text)


def extraction(**overrides: Any) -> DocumentExtraction:
    values: dict[str, Any] = {
        "describes_functionality": True,
        "domain": "  weather  ",
        "subdomains": ["Forecasts"],
        "functionalities": ["get current conditions.", "Get current conditions", "set  alert  threshold"],
    }
    values.update(overrides)
    return DocumentExtraction(**values)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_below_threshold_rejected_without_llm() -> None:
    gateway = FakeGateway(Structured(value=extraction(), raw_outputs=["{}"]))
    doc = make_doc(POEM)
    record = run(mine_document(doc, gateway, threshold=0.15, max_chars=2000))  # type: ignore[arg-type]
    assert not record.accepted
    assert record.rejected_by == RELEVANCE_CHECK == "relevance_prefilter_v2"
    assert "below threshold" in (record.reason or "")
    assert record.relevance_score == relevance_score(POEM)
    assert gateway.calls == []
    assert record.doc_id == doc.doc_id and record.source == doc.source and record.title == doc.title


def test_accepted_extraction_is_cleaned() -> None:
    raw = '{"describes_functionality": true}'
    gateway = FakeGateway(Structured(value=extraction(), raw_outputs=[raw]))
    doc = make_doc(API_DOC, title="SkyCast")
    record = run(mine_document(doc, gateway, threshold=0.15, max_chars=40))  # type: ignore[arg-type]
    assert record.accepted
    assert record.rejected_by is None
    assert record.domain == "Weather"
    assert record.subdomains == ["Forecasts"]
    # trailing punctuation and duplicate spacing cleaned, duplicates (case-insensitive) dropped
    assert record.functionalities == ["get current conditions", "set alert threshold"]
    assert record.raw_outputs == [raw]
    assert len(gateway.calls) == 1
    call = gateway.calls[0]
    assert call["output"] is DocumentExtraction
    assert call["stage"] == STAGE
    user_message = call["messages"][-1]["content"]
    assert "SkyCast" in user_message
    assert API_DOC[:40] in user_message and API_DOC[:41] not in user_message  # max_chars respected


def test_llm_says_no_functionality_rejected_with_raw_output() -> None:
    raw = '{"describes_functionality": false, "domain": "Weather"}'
    gateway = FakeGateway(Structured(value=extraction(describes_functionality=False), raw_outputs=[raw]))
    record = run(mine_document(make_doc(API_DOC), gateway, threshold=0.1, max_chars=2000))  # type: ignore[arg-type]
    assert not record.accepted
    assert record.rejected_by == LLM_RELEVANCE_CHECK == "llm_relevance_v1"
    assert record.raw_outputs == [raw]
    assert len(gateway.calls) == 1


def test_structured_failure_rejected_with_its_check() -> None:
    raws = ["not json", "still not json"]
    answer: Structured[Any] = Structured(value=None, raw_outputs=raws, error="invalid JSON after repair",
                                         check=STRUCTURED_OUTPUT_CHECK)
    gateway = FakeGateway(answer)
    record = run(mine_document(make_doc(API_DOC), gateway, threshold=0.1, max_chars=2000))  # type: ignore[arg-type]
    assert not record.accepted
    assert record.rejected_by == "structured_output_v1"
    assert record.reason == "invalid JSON after repair"
    assert record.raw_outputs == raws


def test_structured_failure_other_check_name() -> None:
    answer: Structured[Any] = Structured(value=None, raw_outputs=[], error="timeout", check="llm_request_v1")
    record = run(mine_document(make_doc(API_DOC), FakeGateway(answer), 0.1, 2000))  # type: ignore[arg-type]
    assert record.rejected_by == "llm_request_v1"
    assert record.reason == "timeout"


def test_structured_failure_without_check_falls_back() -> None:
    answer: Structured[Any] = Structured(value=None, raw_outputs=["x"])
    record = run(mine_document(make_doc(API_DOC), FakeGateway(answer), 0.1, 2000))  # type: ignore[arg-type]
    assert record.rejected_by == LLM_RELEVANCE_CHECK
    assert record.reason == "no answer"


def test_no_usable_functionality_rejected() -> None:
    value = extraction(functionalities=[" . ", ";;;"])  # nothing left after cleaning
    gateway = FakeGateway(Structured(value=value, raw_outputs=["r"]))
    record = run(mine_document(make_doc(API_DOC), gateway, 0.1, 2000))  # type: ignore[arg-type]
    assert record.rejected_by == FUNCTIONALITY_CHECK


def test_mine_documents_keeps_order_and_every_document() -> None:
    gateway = FakeGateway(Structured(value=extraction(), raw_outputs=["r"]))
    docs = [make_doc(POEM), make_doc(API_DOC)]
    records = run(mine_documents(docs, gateway, 0.15, 2000))  # type: ignore[arg-type]
    assert [r.doc_id for r in records] == [d.doc_id for d in docs]
    assert [r.accepted for r in records] == [False, True]
    assert len(gateway.calls) == 1


# ------------------------------------------------------------------------------ first pass: embed only if needed


class CountingEmbed:
    """A fake embedder: each text's vector is its cosine to every prototype (set per text), counting texts."""

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines, self.embedded = cosines, list[str]()

    def __call__(self, texts: Any) -> Any:
        import numpy as np

        from tasks.corpus.mining import PROTOTYPES

        rows = []
        for text in texts:
            if text in PROTOTYPES:
                rows.append([1.0, 0.0])
            else:
                self.embedded.append(text)
                cosine = self.cosines[text]
                rows.append([cosine, (1 - cosine**2) ** 0.5])
        return np.array(rows)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.2, 0.2001, 0.35, 0.5, 0.55, 0.7, 1.0])
def test_heuristic_bound_decides_exactly_as_the_embedding_would(threshold: float) -> None:
    heuristics = [round(k / 9, 4) for k in range(10)]  # every value the nine cue groups can give
    cosines = [-0.3, 0.0, 0.05, 0.1, 0.2, 0.225, 0.3, 0.4, 0.9]
    for h in heuristics:
        bound = settled_by_heuristic(h, threshold)
        decisions = {combine(h, c) >= threshold for c in cosines}
        if bound is None:  # the embedding can still move it either way
            assert combine(h, 0.05) < threshold <= combine(h, 0.40)
            continue
        assert decisions == {bound >= threshold}  # every embedding agrees with the bound
        assert bound == (combine(h, 0.05) if bound >= threshold else combine(h, 0.40))


def test_first_pass_embeds_only_undecided_documents() -> None:
    api, poem, middling = make_doc(API_DOC), make_doc(POEM), make_doc("You can search the app.")
    assert heuristic_score(api.text) >= 0.4 and heuristic_score(poem.text) < 0.4  # 0.4 decides alone at 0.2
    embed = CountingEmbed({api.text: 0.3, poem.text: 0.1, middling.text: 0.25})
    scores = first_pass([api, poem, middling], embed, threshold=0.2)
    assert embed.embedded == [poem.text, middling.text]
    assert scores[0].bound and scores[0].embedding is None
    assert scores[0].combined == combine(heuristic_score(api.text), 0.05) >= 0.2
    assert not scores[1].bound and scores[1].embedding == pytest.approx(0.1, abs=1e-4)

    every = CountingEmbed(embed.cosines)
    full = first_pass([api, poem, middling], every)
    assert len(every.embedded) == 3 and not any(s.bound for s in full)
    assert [s.combined >= 0.2 for s in full] == [s.combined >= 0.2 for s in scores]  # same decisions


def test_mined_record_says_when_the_heuristic_alone_decided() -> None:
    gateway = FakeGateway(Structured(value=extraction(), raw_outputs=["r"]))
    api, poem = make_doc(API_DOC), make_doc(POEM)
    embed = CountingEmbed({api.text: 0.3, poem.text: 0.0})
    records = run(mine_documents([api, poem], gateway, 0.2, 2000, embed))  # type: ignore[arg-type]
    assert records[0].accepted and records[0].embedding_score is None
    assert "at least" in (records[0].reason or "") and "heuristic" in (records[0].reason or "")
    assert records[1].rejected_by == RELEVANCE_CHECK and records[1].embedding_score is not None
    every = run(mine_documents([api, poem], gateway, 0.2, 2000, CountingEmbed(embed.cosines),  # type: ignore[arg-type]
                               embed_every=True))
    assert every[0].embedding_score is not None and every[0].accepted
    assert "at least" not in (every[0].reason or "")


# --------------------------------------------------------------------------------------------- context tree


def mined(doc_id: str, domain: str | None, subdomains: list[str], functionalities: list[str],
          rejected: bool = False) -> MinedDocument:
    record = MinedDocument(doc_id=doc_id, source=f"{doc_id}.md", title=doc_id, relevance_score=0.5, domain=domain,
                           subdomains=subdomains, functionalities=functionalities)
    if rejected:
        record.reject("llm_relevance_v1", "no")
    return record


@pytest.mark.parametrize(("a", "b"), [
    ("Weather", "weather"),
    ("Forecasts", "forecast"),
    ("Get hourly forecasts", "get hourly forecast"),
    ("Weather & Climate", "weather climate"),
    ("The Forecast of the Week", "forecast week"),
    ("Smart-Home Devices", "smart home device"),
])
def test_normalise_name_merges(a: str, b: str) -> None:
    assert normalise_name(a) == normalise_name(b)


def test_normalise_name_values() -> None:
    assert normalise_name("Weather") == "weather"
    assert normalise_name("Hourly Forecasts!") == "hourly forecast"
    assert normalise_name("Address") == "address"  # 'ss' is not a plural
    assert normalise_name("bus") == "bus"  # short words untouched
    assert normalise_name("  The  ") == ""


def test_normalise_keeps_different_names_apart() -> None:
    assert normalise_name("Weather") != normalise_name("Finance")
    assert normalise_name("get forecast") != normalise_name("set forecast")


@pytest.fixture()
def docs() -> list[MinedDocument]:
    return [
        mined("d1", "Weather", ["Forecasts"], ["Get hourly forecast", "Get daily forecast"]),
        mined("d2", "weather", ["forecast"], ["get hourly forecasts", "Get UV index"]),
        mined("d3", "Weather", [], ["Get current conditions"]),
        mined("d4", "Finance", ["Currencies", "Exchange rates"], ["Convert currency"]),
        mined("d5", "Poetry", ["Sonnets"], ["Write sonnet"], rejected=True),
        mined("d6", None, [], ["Do something"]),
    ]


def by_name(nodes: list[TreeNode]) -> dict[str, TreeNode]:
    return {normalise_name(n.name): n for n in nodes}


def test_build_tree_merges_and_keeps_doc_ids(docs: list[MinedDocument]) -> None:
    nodes = build_tree(docs)
    names = [normalise_name(n.name) for n in nodes]
    assert len(names) == len(set(names))  # every name here lives under one path only
    index = by_name(nodes)
    assert index["weather"].doc_ids == ["d1", "d2", "d3"]
    assert index["weather"].name == "Weather"  # first spelling kept
    assert index["forecast"].doc_ids == ["d1", "d2"]
    assert index["get hourly forecast"].doc_ids == ["d1", "d2"]
    assert index["get daily forecast"].doc_ids == ["d1"]
    assert index["get uv index"].doc_ids == ["d2"]
    assert index["get current condition"].doc_ids == ["d3"]
    assert index["convert currency"].doc_ids == ["d4"]


def test_build_tree_ignores_rejected_and_domainless(docs: list[MinedDocument]) -> None:
    nodes = build_tree(docs)
    all_ids = {d for n in nodes for d in n.doc_ids}
    assert all_ids == {"d1", "d2", "d3", "d4"}
    names = {normalise_name(n.name) for n in nodes}
    assert not names & {"poetry", "sonnet", "write sonnet", "do something"}


def test_build_tree_empty_and_all_rejected() -> None:
    assert build_tree([]) == []
    assert build_tree([mined("x", "Weather", [], ["Get forecast"], rejected=True)]) == []


def test_parent_links_and_levels(docs: list[MinedDocument]) -> None:
    nodes = build_tree(docs)
    ids = {n.node_id: n for n in nodes}
    assert len(ids) == len(nodes)
    seen: set[str] = set()
    for node in nodes:  # parents-first order
        if node.parent_id is None:
            assert node.level == 0
            assert not node.is_functionality
        else:
            assert node.parent_id in ids
            assert node.parent_id in seen
            assert node.level == ids[node.parent_id].level + 1
            assert not ids[node.parent_id].is_functionality
        seen.add(node.node_id)
    assert [n.level for n in nodes] == sorted(n.level for n in nodes)

    index = by_name(nodes)
    assert index["weather"].level == 0
    assert index["forecast"].level == 1
    assert index["get hourly forecast"].level == 2 and index["get hourly forecast"].is_functionality
    assert index["get current condition"].level == 1  # d3 had no sub-domain
    assert index["get current condition"].parent_id == index["weather"].node_id
    assert index["exchange rate"].parent_id == index[normalise_name("Currencies")].node_id
    assert index["convert currency"].level == 3
    assert domain_of(index["convert currency"], ids).name == "Finance"


def test_node_ids_stable(docs: list[MinedDocument]) -> None:
    first = {n.name: n.node_id for n in build_tree(docs)}
    second = {n.name: n.node_id for n in build_tree(list(reversed(docs)))}
    assert {normalise_name(k): v for k, v in first.items()} == {normalise_name(k): v for k, v in second.items()}


def test_subdomain_repeating_domain_is_skipped() -> None:
    nodes = build_tree([mined("d1", "Weather", ["weather", "Forecasts"], ["Get forecast"])])
    index = by_name(nodes)
    assert index["forecast"].level == 1
    assert index["forecast"].parent_id == index["weather"].node_id
    assert len(nodes) == 3


def test_tree_shape(docs: list[MinedDocument]) -> None:
    nodes = build_tree(docs)
    shape = tree_shape(nodes)
    assert shape["domains"] == 2
    assert shape["nodes"] == len(nodes) == 10
    assert shape["leaves"] == 5
    assert shape["depth"] == 4  # Finance > Currencies > Exchange rates > Convert currency
    assert shape["leaves_per_domain"] == {"Weather": 4, "Finance": 1}
    assert list(shape["leaves_per_domain"]) == ["Weather", "Finance"]  # most leaves first


def test_tree_shape_empty() -> None:
    assert tree_shape([]) == {"domains": 0, "nodes": 0, "leaves": 0, "depth": 0, "leaves_per_domain": {}}


def test_tree_nested(docs: list[MinedDocument]) -> None:
    nodes = build_tree(docs)
    nested = tree_nested(nodes)
    assert [root["name"] for root in nested] == ["Weather", "Finance"]

    def count(items: list[dict[str, Any]]) -> int:
        return sum(1 + count(i["children"]) for i in items)

    assert count(nested) == len(nodes)
    weather = nested[0]
    assert weather["functionality"] is False
    assert weather["doc_ids"] == ["d1", "d2", "d3"]
    children = {c["name"]: c for c in weather["children"]}
    assert set(children) == {"Forecasts", "Get current conditions"}
    forecast_leaves = {c["name"] for c in children["Forecasts"]["children"]}
    assert forecast_leaves == {"Get hourly forecast", "Get daily forecast", "Get UV index"}
    assert all(c["functionality"] and c["children"] == [] for c in children["Forecasts"]["children"])
    ids = {n.node_id for n in nodes}
    assert weather["id"] in ids


# ------------------------------------------------------------------------------ merging near-synonyms (real model)


@pytest.fixture(scope="module")
def embed() -> Any:
    from tasks.embedding.text_embedding import shared_embedder

    return shared_embedder().embed


def test_near_synonymous_nodes_merge_by_embedding(embed: Any) -> None:
    docs = [
        mined("a", "Weather", ["Forecasts"], ["get hourly forecast for a city", "get severe weather alerts"]),
        mined("b", "Meteorology", ["Forecast services"], ["fetch the hourly weather forecast of a city",
                                                          "get rainfall totals"]),
        mined("c", "Finance", ["Currencies"], ["convert currency", "get exchange rates"]),
        mined("e", "Travel", ["Flights"], ["search flights", "book a flight"]),
    ]
    plain = build_tree(docs)
    assert tree_shape(plain)["domains"] == 4  # names alone cannot merge Weather and Meteorology
    nodes = build_tree(docs, embed, category_threshold=0.75, leaf_threshold=0.85)
    roots = {n.name: n for n in nodes if n.parent_id is None}
    assert len(roots) == 3
    weather = next(n for n in roots.values() if {n.name, *n.aliases} == {"Weather", "Meteorology"})
    assert sorted(weather.doc_ids) == ["a", "b"]
    forecast = next(n for n in nodes if n.parent_id == weather.node_id)
    assert {forecast.name, *forecast.aliases} == {"Forecasts", "Forecast services"}
    leaves = [n for n in nodes if n.parent_id == forecast.node_id]
    hourly = [n for n in leaves if "hourly" in n.name]
    assert len(hourly) == 1 and sorted(hourly[0].doc_ids) == ["a", "b"] and hourly[0].aliases
    assert len(leaves) == 3  # hourly (merged), alerts, rainfall
    assert {n.name for n in nodes if n.parent_id is None} >= {"Finance", "Travel"}
    nested = tree_nested(nodes)
    assert any(root["aliases"] for root in nested)
    # the same documents in another order give the same tree
    again = build_tree(list(reversed(docs)), embed, 0.75, 0.85)
    assert sorted(n.node_id for n in again) == sorted(n.node_id for n in nodes)


def test_mining_ledger_round_trip_and_fingerprint(tmp_path: Path) -> None:
    from tasks.corpus.mining_ledger import MiningLedger, mining_fingerprint

    base = mining_fingerprint("m", 0.2, 1500, None)
    assert base == mining_fingerprint("m", 0.2, 1500, None)
    assert len({base, mining_fingerprint("m", 0.3, 1500, None), mining_fingerprint("other", 0.2, 1500, None),
                mining_fingerprint("m", 0.2, 800, None), mining_fingerprint("m", 0.2, 1500, None, True)}) == 5
    assert base == mining_fingerprint("m", 0.2, 1500, None, False)  # the default keeps earlier ledgers
    ledger = MiningLedger(str(tmp_path), base)
    assert ledger.load() == {}
    first = mined("d1", "Weather", [], ["Get forecast"])
    ledger.append("run-1", 0, [first, mined("d2", None, [], [], rejected=True)])
    ledger.append("run-2", 0, [first.model_copy(update={"title": "newer"})])
    ledger.append("run-3", 0, [])
    loaded = ledger.load()
    assert set(loaded) == {"d1", "d2"}
    assert loaded["d1"][0] == "run-2" and loaded["d1"][1].title == "newer"
    assert loaded["d2"][1].rejected_by == "llm_relevance_v1"
    assert MiningLedger(str(tmp_path), mining_fingerprint("m", 0.5, 1500, None)).load() == {}


def test_documents_the_heuristic_decides_reach_the_llm_while_the_others_are_embedded() -> None:
    import threading

    api, middling = make_doc(API_DOC), make_doc("You can search the app.")
    asked = threading.Event()

    class SignallingGateway(FakeGateway):
        async def structured(self, *args: Any, **kwargs: Any) -> Structured[Any]:
            asked.set()
            return await super().structured(*args, **kwargs)

    class SlowEmbed(CountingEmbed):
        def __call__(self, texts: list[str]) -> Any:
            self.saw_llm_first = asked.wait(timeout=10)  # runs in a worker thread: the event loop goes on
            return super().__call__(texts)

    gateway = SignallingGateway(Structured(value=extraction(), raw_outputs=["r"]))
    embed = SlowEmbed({api.text: 0.3, middling.text: 0.3})
    records = run(mine_documents([middling, api], gateway, 0.2, 2000, embed))  # type: ignore[arg-type]
    assert embed.saw_llm_first and embed.embedded == [middling.text]
    assert [r.doc_id for r in records] == [middling.doc_id, api.doc_id]  # the batch's order
    assert records[0].embedding_score is not None and records[1].embedding_score is None
    assert gateway.calls[0]["messages"][1]["content"].count(API_DOC[:40]) == 1  # the settled one went first
