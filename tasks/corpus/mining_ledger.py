"""The mining ledger: every document's mining result, kept under ``<out>/state/mining/<fingerprint>/``
across runs, so reruns and incremental refreshes of a corpus mine only documents they have not seen.

Documents are keyed by their content hash (``doc_id``). The fingerprint covers everything that changes
a mining result (model, threshold, prompt size, embedding model, check versions and the extraction
schema), so changing any of them starts a fresh ledger instead of reusing stale decisions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import fsspec

from schemas.llm_outputs import DocumentExtraction
from schemas.records import MinedDocument
from tasks.corpus import mining
from toolace.llm.response_format import schema_for


def mining_fingerprint(model: str, threshold: float, max_chars: int, embedding_model: str | None,
                       embed_every: bool = False) -> str:
    """The settings a mining result depends on. Skipping the embedding where the heuristic decides changes
    no decision, so ``embed_every`` counts only when set (a run that asks for every embedding score does not
    reuse records that lack it), and ledgers written before that option keep their fingerprint."""
    parts = [model, threshold, max_chars, embedding_model or "all-MiniLM-L6-v2", mining.RELEVANCE_CHECK,
             mining.LLM_RELEVANCE_CHECK, mining.FUNCTIONALITY_CHECK, mining.PROTOTYPES,
             schema_for(DocumentExtraction)]
    if embed_every:
        parts.append("embed-every-document")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class MiningLedger:
    def __init__(self, out: str, fingerprint: str) -> None:
        self.root = f"{out.rstrip('/')}/state/mining/{fingerprint}"
        self.fs, self.path = fsspec.core.url_to_fs(self.root)

    def _files(self) -> list[str]:
        if not self.fs.exists(self.path):
            return []
        return sorted(f for f in self.fs.find(self.path) if f.endswith(".jsonl"))

    def records(self) -> Iterator[tuple[str, MinedDocument]]:
        """(run id, record) for every mined document, oldest file first."""
        for file in self._files():
            run_id = file.rsplit("/", 1)[-1].rsplit("-part", 1)[0]
            with self.fs.open(file, "r", encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield run_id, MinedDocument.model_validate_json(line)

    def load(self) -> dict[str, tuple[str, MinedDocument]]:
        """doc id -> (run id, record); a later record of the same document wins."""
        return {record.doc_id: (run_id, record) for run_id, record in self.records()}

    def append(self, run_id: str, part: int, records: list[MinedDocument]) -> None:
        """One file per batch, written whole: a crash never leaves half a line behind."""
        if not records:
            return
        self.fs.makedirs(self.path, exist_ok=True)
        with self.fs.open(f"{self.path}/{run_id}-part{part:06d}.jsonl", "w", encoding="utf-8") as handle:
            handle.write("".join(r.model_dump_json() + "\n" for r in records))
