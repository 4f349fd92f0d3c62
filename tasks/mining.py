"""Document mining: a cheap relevance score for every document, then LLM extraction for candidates.

The score and the keep/drop decision are separate: ``relevance_score`` only measures, and
``mine_documents`` decides with a threshold, recording the reason for every document either way.
"""

from __future__ import annotations

import asyncio
import re

from schemas.llm_outputs import DocumentExtraction
from schemas.records import Document, MinedDocument
from toolace.llm.gateway import LLMGateway

RELEVANCE_CHECK = "relevance_heuristic_v1"
LLM_RELEVANCE_CHECK = "llm_relevance_v1"
FUNCTIONALITY_CHECK = "functionality_extraction_v1"
STAGE = "mining"

# Groups of cues that a document describes operable functionality; each group counts once. Cues match
# whole words (plural allowed): "api" does not match inside "rapid", nor "rest" inside "forest".
_CUES: tuple[tuple[str, ...], ...] = (
    ("api", "endpoint", "sdk", "rest", "webhook", "graphql"),
    ("parameter", "argument", "field", "query string", "header"),
    ("returns", "response", "result", "output", "json"),
    ("get", "post", "put", "delete", "request"),
    ("function", "feature", "command", "method", "operation"),
    ("app", "device", "service", "platform", "dashboard", "software"),
    ("user can", "users can", "you can", "allows", "lets you", "supports", "enable"),
    ("configure", "settings", "install", "set up", "schedule", "upload", "search", "track"),
    ("string", "integer", "boolean", "enum", "format", "iso", "required", "optional"),
)
_CUE_PATTERNS = tuple(
    re.compile(r"\b(?:" + "|".join(re.escape(c) for c in group) + r")(?:s|es|d|ed)?\b") for group in _CUES
)


def relevance_score(text: str) -> float:
    """Share of cue groups present in the text (0 to 1). Cheap, explainable, no model."""
    lowered = text.lower()
    hits = sum(1 for pattern in _CUE_PATTERNS if pattern.search(lowered))
    return round(hits / len(_CUES), 4)


def extraction_messages(doc: Document, max_chars: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You catalogue the software functionality that documents describe."},
        {"role": "user", "content": (
            f"{doc.text[:max_chars]}\n\nGive this document's domain, narrower sub-domains, and each "
            "functionality it describes as a short verb phrase (e.g. 'get hourly forecast for a city')."
        )},
    ]


def _clean(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        text = " ".join(item.split()).strip(" .;,")
        if 2 <= len(text) <= 120 and text.lower() not in seen:
            seen[text.lower()] = text
    return list(seen.values())


async def mine_document(doc: Document, gateway: LLMGateway, threshold: float, max_chars: int) -> MinedDocument:
    score = relevance_score(doc.text)
    record = MinedDocument(doc_id=doc.doc_id, source=doc.source, title=doc.title, relevance_score=score)
    if score < threshold:
        record.reject(RELEVANCE_CHECK, f"relevance score {score:.2f} below threshold {threshold:.2f}")
        return record
    answer = await gateway.structured(DocumentExtraction, extraction_messages(doc, max_chars), stage=STAGE,
                                      temperature=0.2)
    record.raw_outputs = answer.raw_outputs
    if answer.value is None:
        record.reject(answer.check or LLM_RELEVANCE_CHECK, answer.error or "no answer")
        return record
    extraction = answer.value
    record.domain = " ".join(extraction.domain.split()).strip(" .").title() or None
    record.subdomains = _clean(extraction.subdomains)
    record.functionalities = _clean(extraction.functionalities)
    if not extraction.describes_functionality:
        record.reject(LLM_RELEVANCE_CHECK, "the LLM judged that the document describes no functionality")
    elif not record.domain or not record.functionalities:
        record.reject(FUNCTIONALITY_CHECK, "no domain or no functionality extracted")
    return record


async def mine_documents(docs: list[Document], gateway: LLMGateway, threshold: float,
                         max_chars: int) -> list[MinedDocument]:
    return list(await asyncio.gather(*(mine_document(d, gateway, threshold, max_chars) for d in docs)))
