"""Stage 1, mining: the corpus streamed in batches; each document read is kept or dropped with its reason.

Every document, read or not, is written to the documents table as its batch finishes; only the accepted ones
stay in memory (for the context tree). A document whose text was seen earlier in this corpus is rejected as a
duplicate; one the mining ledger already holds (same text, same mining settings, an earlier run) is reused, not
mined again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from prefect import flow, get_run_logger

from flows.batch_tasks import mine_batch
from flows.scheduler import BatchStream, Submitted, batches_in_flight, submit_batch
from flows.stages.run_context import RunContext, StageResult, workers_watched
from schemas.frames import DocumentsFrame
from schemas.records import Document, MinedDocument, StageStats
from tasks.corpus.mining_ledger import MiningLedger, mining_fingerprint
from tasks.corpus.reading import iter_documents
from tasks.storage.writers import TableWriter

STAGE = "mining"
DUPLICATE_DOC_CHECK = "corpus_duplicate_v1"
DOCUMENTS_TABLE = "tables/documents.parquet"


@dataclass
class Triage:
    """A batch of read documents sorted before any LLM call: those to mine, and those already decided
    (duplicates of an earlier document, results reused from the ledger)."""

    fresh: list[Document] = field(default_factory=list)
    decided: list[MinedDocument] = field(default_factory=list)
    reused: int = 0


def triage(documents: list[Document], seen: dict[str, str],
           known: Mapping[str, tuple[str, MinedDocument]]) -> Triage:
    """Sort ``documents``: a text seen before in this corpus (``seen``: doc id -> where it was first read, updated
    here) is rejected by :data:`DUPLICATE_DOC_CHECK`; one the ledger holds (``known``: doc id -> (earlier run,
    its record)) is reused with its new source and the run it came from; the rest are mined."""
    out = Triage()
    for doc in documents:
        if doc.doc_id in seen:
            record = MinedDocument(doc_id=doc.doc_id, source=doc.source, title=doc.title, chars=len(doc.text),
                                   decided_by=DUPLICATE_DOC_CHECK)
            record.reject(DUPLICATE_DOC_CHECK, f"same text as {seen[doc.doc_id]}")
            out.decided.append(record)
        elif doc.doc_id in known:
            earlier_run, earlier = known[doc.doc_id]
            out.decided.append(earlier.model_copy(update={"source": doc.source, "reused_from": earlier_run}))
            out.reused += 1
        else:
            out.fresh.append(doc)
        seen.setdefault(doc.doc_id, doc.source)
    return out


def mine_corpus(run: RunContext) -> StageResult[MinedDocument]:
    """Mine the run's corpus; the records are the accepted documents."""
    config, sink, watchdog = run.config, run.sink, run.watchdog
    t0, kept, stage = time.perf_counter(), list[MinedDocument](), StageStats()
    ledger = MiningLedger(config.out, mining_fingerprint(run.endpoint.model, config.relevance_threshold,
                                                         config.max_doc_chars, config.embedding_model,
                                                         config.embed_every_document))
    known = ledger.load() if config.reuse_mined else {}
    seen: dict[str, str] = {}
    sink.stage(STAGE, 0)
    # Several batches are in flight (at least two: the next batch's first pass, embedding on the CPU, overlaps this
    # batch's LLM calls); each is written as soon as it and those before it are done.
    batches = enumerate(iter_documents(config.corpus, config.text_column, config.batch_size, config.max_doc_bytes))
    reused = 0

    def start(reserved: int) -> Submitted[Document] | None:
        nonlocal reused
        read = next(batches, None)
        if read is None:
            return None
        part, batch = read
        sorted_ = triage(batch.documents, seen, known)
        reused += sorted_.reused
        mining = submit_batch(mine_batch, run.scope, sorted_.fresh, run.settings, config.relevance_threshold,
                              config.max_doc_chars, config.embedding_model,
                              config.embed_every_document) if sorted_.fresh else None
        return Submitted(sorted_.fresh, mining, (part, list(batch.rejected) + sorted_.decided), label=part + 1)

    with TableWriter(f"{run.run_url}/{DOCUMENTS_TABLE}", MinedDocument, DocumentsFrame, "documents") as table:
        depth = batches_in_flight(config.concurrency, config.batch_size)
        for done_batch in BatchStream(STAGE, start, depth, watchdog):
            part, done = done_batch.extra
            if done_batch.future is not None:
                records, llm = done_batch.result
                ledger.append(run.run_id, part, records)
                stage = stage.add(llm)
                done.extend(records)
            table.write(done)
            stage.count(done)
            kept.extend(r for r in done if r.accepted)
            sink.advance(STAGE, len(done))
    stage.reused += reused
    sink.finish(STAGE)
    stage.wall_time_s = round(time.perf_counter() - t0, 3)
    return StageResult(records=kept, stats={STAGE: stage}, files=[DOCUMENTS_TABLE])


@flow(name="mining", validate_parameters=False, persist_result=False)
def mining_stage(run: RunContext) -> StageResult[MinedDocument]:
    """Stage 1 as a subflow (its own state, duration, logs in the Prefect UI)."""
    with workers_watched(run.watchdog):
        result = mine_corpus(run)
    stage = result.stats[STAGE]
    get_run_logger().info("mining: %d documents read, %d kept, %d reused from earlier runs", stage.items_in,
                          stage.accepted, stage.reused)
    return result
