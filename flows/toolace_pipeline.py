"""The main flow: mining -> context tree -> API synthesis -> dialogs -> complexity loss -> verification
-> publish. Each stage runs as Prefect tasks over batches; every item ends accepted or rejected."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from flows.batch_tasks import (
    build_tree,
    complexity_batch,
    generate_dialog_batch,
    mine_batch,
    probe_batch,
    synthesize_batch,
    verify_batch,
)
from flows.result_storage import results_beside_run
from flows.run_progress import PrefectProgress
from schemas.frames import APIsFrame, DocumentsFrame, TreeNodesFrame
from schemas.records import APISpec, Dialog, MinedDocument, StageStats, TreeNode
from schemas.suites import SuiteBounds
from tasks.apis import synthesis as api_synthesis
from tasks.apis.importing import merge_into_pool, read_pool
from tasks.apis.near_duplicates import NearDuplicateIndex
from tasks.context_tree.building import tree_nested, tree_shape
from tasks.corpus.mining_ledger import MiningLedger, mining_fingerprint
from tasks.corpus.reading import iter_documents
from tasks.dataset import card as dataset_card
from tasks.dataset import provenance
from tasks.dataset.charts import dialog_type_chart_png, domain_chart_png, loss_histogram_png, png_data_uri
from tasks.dataset.stream import DatasetTally, DialogStream
from tasks.dialogs import generation as dialog_generation
from tasks.dialogs.self_guidance import (
    GuidanceRecord,
    LossBounds,
    apply_record,
    calibrate_bounds,
    fixed_bounds,
    guidance_instruction,
    start_record,
)
from tasks.embedding.text_embedding import shared_embedder
from tasks.storage import frames, run_storage, writers
from tasks.verification.expectations import SuiteOutcome, check_records, prefetch_great_expectations
from tasks.verification.template_gate import TemplateGate
from toolace import dask_progress, progress
from toolace.config import RunConfig, redact_url
from toolace.errors import UserError
from toolace.garbage_collection import fewer_collector_pauses, freeze_long_lived
from toolace.llm.endpoint import Endpoint, llm_endpoint
from toolace.llm.gateway import GatewaySettings, gateway_settings_from
from toolace.llm.response_cache import cache_dir_for as llm_cache_dir
from toolace.llm.response_cache import prune_cache
from toolace.stall_watchdog import CURRENT_WATCHDOG, StallWatchdog, items_of

DUPLICATE_DOC_CHECK = "corpus_duplicate_v1"
MAX_ATTEMPT_FACTOR = 3  # at most 3x the requested APIs/dialogs are attempted to reach the target
STAGES = ("mining", "context_tree", "api_synthesis", "calibration", "dialog_generation", "complexity_loss",
          "verification", "publish")
GENERATION_BATCHES = 2  # dialog batches generating at once
PROBE_INDEX = 1_000_000  # probe plans are numbered apart from the dialogs' plans
OUT_OF_BAND_CHECK = "complexity_bounds_v1"


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def seeded(seed: int, *parts: object) -> random.Random:
    """A random generator per purpose, so adding draws in one stage never shifts another's."""
    return random.Random(f"{seed}:" + ":".join(map(str, parts)))


def cache_dir_for(out: str) -> str:
    """LLM responses are cached on local disk, beside the runs when ``--out`` is local."""
    return llm_cache_dir(out)


def submit_batch(task: Any, *args: Any) -> Any:
    """Submit one batch task on the flow's task runner (threads, or Dask workers).

    On the thread runner, collections go in under Prefect's ``quote``: they hold records, never futures, and
    walking every field of every record of a batch looking for upstream futures (twice per task run) was
    about a tenth of the flow's CPU. The task receives them unwrapped and its cache key (the inputs) is the
    same. Dask ships parameters through its own graph, which turns the annotation back into a plain tuple,
    so there they go as they are."""
    context = FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, ThreadPoolTaskRunner):
        return task.submit(*args)
    return task.submit(*(quote(a) if isinstance(a, (list, dict, tuple, BaseModel)) else a for a in args))


def on_runner(task: Any, *args: Any) -> Any:
    """Run one batch task on the flow's task runner and wait for its result, watched by the run's stall
    watchdog when there is one: the CPU tasks (context tree, loss, probes) report each step they finish, the
    LLM tasks each answer; nothing for ``stall_timeout_s`` fails the run in one line naming the task."""
    future = submit_batch(task, *args)
    watchdog = CURRENT_WATCHDOG.get()
    if watchdog is None:
        return future.result()
    return watchdog.wait(future, task.name, "(all of it)")


def dask_runner(config: RunConfig) -> Any:
    """A Dask task runner: an existing cluster at ``dask_address``, or a local cluster of ``dask_workers``
    worker processes started for the run."""
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": config.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


@flow(name="toolace-pipeline-on-dask", log_prints=True)
def _pipeline_on_dask(config: RunConfig, endpoint: Endpoint) -> dict[str, Any]:
    """The same stages with the batch tasks on Dask (the task runner is set by ``with_options``)."""
    return run_stages(config, endpoint)


@flow(name="toolace-pipeline", log_prints=True)
def toolace_pipeline(config: RunConfig, endpoint: Endpoint | None = None) -> dict[str, Any]:
    """Make a function-calling dataset from a corpus.

    ``endpoint`` is an LLM endpoint already resolved by the caller (the CLI starts the embedded model
    before the flow, so start-up errors are plain user errors); without it the flow checks the
    configured endpoint, or starts the embedded model itself for the length of the run.
    """
    run_id = config.run_id or new_run_id()
    config = config.model_copy(update={"run_id": run_id})
    run_storage.configure_s3(config.s3_endpoint_url)
    run_storage.check_storage(config.out)  # wrong credentials, no bucket, no endpoint: fail before any work
    location = run_storage.RunLocation(config.out, run_id)
    if run_storage.is_published(location):  # a published run is never written again
        manifest = run_storage.read_json(f"{location.published}/manifest.json")
        get_run_logger().info("run %s is already published at %s: nothing to do", run_id, location.published)
        return {"run_id": run_id, "run_dir": location.published, "accepted_dialogs": manifest["dataset"]["dialogs"],
                "stages": manifest["stages"], "already_published": True}
    # the chat-template gate's templates (and the target model's) load before any work: a missing templates
    # folder, or a chosen target model whose template renders no tools, stops the run here in one line
    gate = TemplateGate.from_config(config)
    if gate.active:
        gate.preflight()
    if endpoint is not None:
        return _stages(config, endpoint)
    # a deployed run takes the endpoint from the worker's environment, like the CLI does
    with llm_endpoint(config.llm_base_url or os.environ.get("OPENAI_BASE_URL"), config.llm_model) as resolved:
        return _stages(config, resolved)


def _stages(config: RunConfig, endpoint: Endpoint) -> dict[str, Any]:
    # full collections of this process's large heap stalled the LLM loop for up to 0.9 s; the batch tasks' results
    # persist under <out>/state/prefect-results/<run-id>/ (not ~/.prefect): a rerun resumes from any machine
    with fewer_collector_pauses(), results_beside_run(config.out, str(config.run_id), config.s3_endpoint_url):
        if config.task_runner == "dask":
            return _pipeline_on_dask.with_options(task_runner=dask_runner(config))(config, endpoint)
        return run_stages(config, endpoint)


def run_stages(config: RunConfig, endpoint: Endpoint) -> dict[str, Any]:
    """The stages; the run's stall watchdog (set by :func:`_run_stages`) reaches the batch tasks of this process
    through :data:`CURRENT_WATCHDOG`, reset when the run ends."""
    token = CURRENT_WATCHDOG.set(None)
    try:
        return _run_stages(config, endpoint)
    finally:
        CURRENT_WATCHDOG.reset(token)


def _run_stages(config: RunConfig, endpoint: Endpoint) -> dict[str, Any]:
    logger = get_run_logger()
    run_id = str(config.run_id)
    location = run_storage.RunLocation(config.out, run_id)
    run_url = location.staging  # everything is written here; promoted to runs/<run-id>/ at the end
    settings = gateway_settings_from(config, endpoint.base_url, endpoint.model, cache_dir_for(config.out))
    scope = f"{run_url}:{endpoint.model}"  # the Prefect cache key: this run folder and model only
    sink = PrefectProgress(progress.sink(), run_id)  # the CLI's bar (if any) and the Prefect UI's
    # every wait on a batch is watched: no progress for stall_timeout_s fails the run in one line (resumable);
    # on Dask the workers relay their tasks' progress to this watchdog as Dask events (toolace.dask_progress)
    watchdog = StallWatchdog(config.stall_timeout_s, on_stall=sink.stall, logger=logger,
                             hint=f"resume with --run-id {run_id}")
    CURRENT_WATCHDOG.set(watchdog)
    with _worker_progress(watchdog):
        return _run_watched_stages(config, endpoint, watchdog, sink, settings, scope, location, logger)


@contextlib.contextmanager
def _worker_progress(watchdog: StallWatchdog) -> Iterator[None]:
    """On Dask, the workers' progress events on this flow run's topic reach ``watchdog``; elsewhere nothing."""
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if context is None or context.flow_run is None or isinstance(runner, ThreadPoolTaskRunner) or \
            not hasattr(runner, "client"):
        yield
        return
    with dask_progress.listening(runner.client, dask_progress.progress_topic(context.flow_run.id),
                                 watchdog.progress):
        yield


def _run_watched_stages(config: RunConfig, endpoint: Endpoint, watchdog: StallWatchdog, sink: PrefectProgress,
                        settings: Any, scope: str, location: run_storage.RunLocation, logger: Any) -> dict[str, Any]:
    run_id = str(config.run_id)
    run_url = location.staging
    stats: dict[str, StageStats] = {}
    started_at = dt.datetime.now(dt.UTC).isoformat()
    logger.info("run %s: model %s at %s, writing to %s", run_id, endpoint.model,
                redact_url(endpoint.base_url), run_url)
    if settings.cache_dir:  # the LLM response cache kept within its age and size bounds (oldest entries first)
        logger.info("%s", prune_cache(settings.cache_dir, config.llm_cache_max_age_days,
                                      config.llm_cache_max_bytes).summary())
    template_gate = TemplateGate.from_config(config)  # checked before any work by toolace_pipeline

    # 1. mining, streamed over the corpus in batches. Every document, read or not, is written to the
    # documents table as its batch finishes; only the accepted ones stay in memory (for the tree).
    # Documents the ledger already holds (same text, same mining settings) are reused, not re-mined.
    t0, kept, stage = time.perf_counter(), list[MinedDocument](), StageStats()
    ledger = MiningLedger(config.out, mining_fingerprint(endpoint.model, config.relevance_threshold,
                                                         config.max_doc_chars, config.embedding_model,
                                                         config.embed_every_document))
    known = ledger.load() if config.reuse_mined else {}
    seen: dict[str, str] = {}
    sink.stage("mining", 0)
    # Two batches are in flight: the next batch's first pass (embedding, CPU) overlaps this batch's LLM calls.
    in_flight: deque[tuple[int, list[MinedDocument], Any]] = deque()
    with writers.TableWriter(f"{run_url}/tables/documents.parquet", MinedDocument,
                             DocumentsFrame, "documents") as documents_table:

        def finish_oldest() -> None:
            nonlocal stage
            part, done, mining = in_flight.popleft()
            if mining is not None:
                records, llm = watchdog.wait(mining, "mining", part + 1)
                ledger.append(run_id, part, records)
                stage = stage.add(llm)
                done.extend(records)
            documents_table.write(done)
            stage.count(done)
            kept.extend(r for r in done if r.accepted)
            sink.advance("mining", len(done))

        for part, batch in enumerate(iter_documents(config.corpus, config.text_column, config.batch_size,
                                                    config.max_doc_bytes)):
            fresh, done = [], list(batch.rejected)
            for doc in batch.documents:
                if doc.doc_id in seen:
                    record = MinedDocument(doc_id=doc.doc_id, source=doc.source, title=doc.title,
                                           chars=len(doc.text), decided_by=DUPLICATE_DOC_CHECK)
                    record.reject(DUPLICATE_DOC_CHECK, f"same text as {seen[doc.doc_id]}")
                    done.append(record)
                elif doc.doc_id in known:
                    earlier_run, earlier = known[doc.doc_id]
                    done.append(earlier.model_copy(update={"source": doc.source, "reused_from": earlier_run}))
                    stage.reused += 1
                else:
                    fresh.append(doc)
                seen.setdefault(doc.doc_id, doc.source)
            mining = submit_batch(mine_batch, scope, fresh, settings, config.relevance_threshold,
                                  config.max_doc_chars, config.embedding_model,
                                  config.embed_every_document) if fresh else None
            in_flight.append((part, done, mining))
            if len(in_flight) > 1:
                finish_oldest()
        while in_flight:
            finish_oldest()
    sink.finish("mining")
    stage.wall_time_s = round(time.perf_counter() - t0, 3)
    stats["mining"] = stage
    freeze_long_lived()  # the embedding model and the kept documents live for the rest of the run

    # 2. context tree
    t0 = time.perf_counter()
    nodes = on_runner(build_tree, scope, kept, config.embedding_model, config.tree_merge_threshold,
                       config.leaf_merge_threshold)
    shape = tree_shape(nodes)
    in_tree = {d for n in nodes for d in n.doc_ids}
    stats["context_tree"] = StageStats(items_in=stage.accepted, accepted=len(in_tree),
                                       rejected=stage.accepted - len(in_tree),
                                       wall_time_s=round(time.perf_counter() - t0, 3))
    writers.write_validated(nodes, TreeNode, TreeNodesFrame, f"{run_url}/tables/context_tree_nodes.parquet",
                            "context_tree_nodes")
    writers.write_json(tree_nested(nodes), f"{run_url}/context_tree.json")
    logger.info("context tree: %s", shape)

    # 3. API synthesis, in batches until the requested number is admitted (bounded attempts). A pool,
    # when given, seeds the example buffer, the duplicate index and the dialogs' tool sets, and
    # receives the new accepted APIs.
    pooled = [a for a in read_pool(config.pool) if a.accepted] if config.pool else []
    t0, apis, stage = time.perf_counter(), list[APISpec](), StageStats()
    embedder = shared_embedder(config.embedding_model)
    grower = api_synthesis.PoolGrower(
        api_synthesis.TreeSampler(nodes), config.apis, embedder.embed,
        NearDuplicateIndex(embedder.dim, config.near_duplicate_threshold, seed=config.seed),
        seeded(config.seed, "apis"), config.broad_api_share, config.nested_api_share, config.max_domain_share)
    grower.seed(pooled)
    max_attempts = config.apis * MAX_ATTEMPT_FACTOR
    sink.stage("api_synthesis", config.apis)
    # The next batch is generated while this one is admitted (embedded, compared with the pool); its plans
    # count the batch being admitted as if all of it were accepted, so the target is never overshot.
    api_batches: deque[tuple[list[api_synthesis.APIPlan], Any]] = deque()
    capped = False

    def start_api_batch(reserved: int) -> None:
        nonlocal capped
        want = min(config.batch_size, config.apis - grower.accepted - reserved, max_attempts - grower.planned)
        if want <= 0:
            return
        batch_plans = grower.next_plans(want)
        if not batch_plans:
            capped = True
            return
        api_batches.append((batch_plans, submit_batch(synthesize_batch, scope, batch_plans, settings,
                                                      grower.examples(batch_plans))))

    start_api_batch(0)
    while api_batches:
        batch_plans, synthesis = api_batches.popleft()
        specs, llm = watchdog.wait(synthesis, "api_synthesis", items_of(batch_plans))
        start_api_batch(len(batch_plans))
        before = grower.accepted
        apis.extend(grower.admit(batch_plans, specs))
        stage = stage.add(llm)
        sink.advance("api_synthesis", grower.accepted - before)
        if not api_batches:
            start_api_batch(0)
    if capped and grower.accepted < config.apis:
        logger.warning("every domain reached its cap of %d new APIs: raise max_domain_share or add documents",
                       grower.domain_cap)
    sink.finish("api_synthesis")
    stage.count(apis)
    stage.wall_time_s = round(time.perf_counter() - t0, 3)
    stats["api_synthesis"] = stage
    writers.write_validated(apis, APISpec, APIsFrame, f"{run_url}/tables/apis.parquet", "apis")
    pool_counts = merge_into_pool(config.pool, [a for a in apis if a.accepted]) if config.pool else None
    api_report = api_synthesis.pool_report(apis)
    api_report["domain_cap"] = grower.domain_cap
    chart = domain_chart_png(api_report["apis_per_domain"], f"New APIs per domain (run {run_id})")
    writers.write_json(api_report, f"{run_url}/reports/api_pool.json")
    writers.write_bytes(chart, f"{run_url}/reports/api_domains.png")
    _report_pool(run_id, api_report, chart)

    # 4. self-guidance bounds: fixed, or calibrated on a probe set the target model answers itself
    all_apis = pooled + apis
    t0 = time.perf_counter()
    bounds, guidance_note, calibration = _loss_bounds(config, scope, settings, all_apis, run_url)
    stats["calibration"] = calibration
    stats["calibration"].wall_time_s = round(time.perf_counter() - t0, 3)
    logger.info("self-guidance: %s", guidance_note)

    # 5-7. dialogs: each batch is generated, scored, guided into the loss bounds and verified before the
    # next, then written at once (tables, dataset files, shards): only per-row figures stay in memory.
    gen, loss, ver = StageStats(), StageStats(), StageStats()
    suite_bounds = SuiteBounds.from_config(config, mix_tolerance=config.mix_tolerance,
                                           min_acceptance_rate=config.min_acceptance_rate)
    apis_by_id = {a.api_id: a for a in all_apis}
    all_dialog_plans = dialog_generation.plan_dialogs(
        all_apis, config.dialogs * MAX_ATTEMPT_FACTOR, config.dialog_mix, config.candidate_tools,
        seeded(config.seed, "dialogs"), config.max_segments)
    sink.stage("dialogs", config.dialogs)
    # Great Expectations is needed at publish: it is imported while the dialogs wait on the LLM (the interpreter is
    # far from busy then), instead of stalling publish for its 4 s import
    prefetch_great_expectations()
    freeze_long_lived()  # the API pool and the dialog plans live until the run ends
    cursor = 0

    def start_dialogs(reserved: int) -> tuple[list[dialog_generation.DialogPlan], list[APISpec], Any, float] | None:
        """Submit the next batch's generation; ``reserved`` dialogs (generating or generated, not yet verified)
        count as accepted, so no more are generated than the target can use."""
        nonlocal cursor
        need = config.dialogs - stream.tally.accepted - reserved
        if need <= 0 or cursor >= len(all_dialog_plans):
            return None
        batch_plans = all_dialog_plans[cursor:cursor + min(config.batch_size, need)]
        cursor += len(batch_plans)
        offered = offered_apis(apis_by_id, batch_plans)
        generating = submit_batch(generate_dialog_batch, scope, batch_plans, offered, settings, config.seed,
                                  config.decision_samples)
        return batch_plans, offered, generating, time.perf_counter()

    with DialogStream(run_url, suite_bounds, publish_reasoning=config.publish_reasoning,
                      template_rows=config.template_check_rows if template_gate.active else 0,
                      seed=config.seed) as stream:
        # GENERATION_BATCHES batches generate at once: the older one's dialogs go first (their requests wait with
        # the plan index as priority), and the newer one fills the slots the older batch's last, longest dialogs
        # leave idle; each batch is then verified while the next ones generate.
        generating_batches: deque[tuple[list[dialog_generation.DialogPlan], list[APISpec], Any, float]] = deque()
        generation_clock = 0.0  # when the last batch finished: generation's wall time counts overlapping batches once

        def top_up(verifying: int) -> None:
            """Keep GENERATION_BATCHES batches generating; the dialogs of the batches generating and the
            ``verifying`` ones count as accepted, so no more are generated than the target can use."""
            while len(generating_batches) < GENERATION_BATCHES:
                started = start_dialogs(verifying + sum(len(b[0]) for b in generating_batches))
                if started is None:
                    return
                generating_batches.append(started)

        top_up(0)
        while generating_batches:
            batch_plans, offered, generating, started = generating_batches.popleft()
            generated, llm = watchdog.wait(generating, "dialogs", items_of(batch_plans))
            gen = _count_generation(gen, generated, llm, max(started, generation_clock))
            generation_clock = time.perf_counter()
            generated, loss = _score(config, scope, generated, loss)
            if bounds is not None:
                generated, gen, loss = _guide(config, scope, settings, offered, batch_plans, generated, bounds,
                                              gen, loss)
            t0 = time.perf_counter()
            ready_ids = {d.dialog_id for d in generated if d.accepted}
            verifying = submit_batch(verify_batch, scope, generated, settings, config.max_assistant_chars,
                                     config.model_checks, config.judge_votes, batch_plans[0].index)
            top_up(len(ready_ids))  # the next batch starts generating while this one is verified
            (decided, batch_verdicts), llm = watchdog.wait(verifying, "verification", items_of(batch_plans))
            ver = ver.add(llm)
            ver.count([d for d in decided if d.dialog_id in ready_ids])
            ver.wall_time_s = round(ver.wall_time_s + time.perf_counter() - t0, 3)
            stream.write(decided, batch_verdicts)
            sink.advance("dialogs", sum(d.accepted for d in decided))
            top_up(0)  # fewer were accepted than counted on: more to generate
    sink.finish("dialogs")
    stats["dialog_generation"], stats["complexity_loss"], stats["verification"] = gen, loss, ver
    verification_report = stream.verification.report()
    tally = stream.tally

    # 7. publish: the dataset files are written; the expectation suite, the card, the charts and the
    # manifest (written last: it lists every other file); then promote the staging folder, the latest
    # pointer written last of all
    t0 = time.perf_counter()
    dataset_url = f"{run_url}/dataset"
    charts = _charts(run_id, run_url, config, tally, bounds)
    suite = check_records(tally.suite_records, tally.suite_problems,
                          {"generated": tally.generated, "accepted": tally.accepted}, suite_bounds,
                          f"{dataset_url}/data_docs", chat_problems=tally.chat_problems,
                          chat_rows=tally.chat_sample.sorted(),
                          templates=template_gate if template_gate.active else None)
    writers.write_json(suite.model_dump(mode="json"), f"{dataset_url}/expectations.json")
    stats["publish"] = StageStats(items_in=tally.accepted, accepted=tally.accepted,
                                  wall_time_s=round(time.perf_counter() - t0, 3))
    manifest = {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "config": config.public_dict(),
        "llm_endpoint": {"base_url": redact_url(endpoint.base_url), "model": endpoint.model,
                         "embedded": endpoint.embedded},
        "packages": provenance.package_versions(),
        "stages": {name: stats[name].model_dump() for name in STAGES},
        "context_tree": shape,
        "api_report": api_report,
        "self_guidance": {"bounds": bounds.model_dump() if bounds else None, "note": guidance_note,
                          "rounds": config.guidance_rounds},
        "api_pool": {"url": config.pool, "apis_before": len(pooled), **pool_counts} if pool_counts else None,
        "verification": verification_report,
        "loss": tally.loss_summary(),
        "charts": charts,
        "dataset": {"dialogs": tally.accepted, "toolace": "dataset/toolace.jsonl",
                    "openai": "dataset/openai.jsonl",
                    "parquet": [f"dataset/{p}" for p in stream.shards], "card": "dataset/README.md"},
        "expectations": {"success": suite.success, "failed": suite.failed, "acceptance_rate": suite.acceptance_rate,
                         "results": "dataset/expectations.json",
                         "data_docs": "dataset/data_docs/index.html" if suite.data_docs_index else None},
    }
    card = dataset_card.dataset_card(manifest, tally.types, tally.domains, stream.shards,
                                     templates=suite.chat_templates)
    writers.write_bytes(card.encode(), f"{dataset_url}/README.md")
    manifest["files"] = writers.file_listing(run_url)
    manifest["status"] = "promoted" if suite.success else "failed"
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2, default=str).encode()
    writers.write_bytes(manifest_bytes, f"{run_url}/manifest.json")
    if not suite.success:  # the dataset is not promoted: it stays in staging, marked failed
        marker = run_storage.mark_failed(location, {"reason": "expectation suite failed", "failed": suite.failed})
        _report_expectations(run_id, suite, run_url)
        _report(run_id, run_url, stats, tally.accepted, verification_report)
        raise DatasetRejected(f"run {run_id}: the published-dataset expectation suite failed "
                              f"({', '.join(suite.failed)}); the run stays in {run_url} ({marker}), not promoted")
    pointer = run_storage.promote(location, hashlib.sha256(manifest_bytes).hexdigest())
    logger.info("run %s promoted to %s; %s points at it", run_id, location.published, location.latest)
    _report_expectations(run_id, suite, location.published)
    _report(run_id, location.published, stats, tally.accepted, verification_report)
    return {"run_id": run_id, "run_dir": pointer["url"], "accepted_dialogs": tally.accepted,
            "stages": {name: stats[name].model_dump() for name in STAGES}}


class DatasetRejected(UserError):
    """The dataset failed its expectation suite: the run is kept in staging, marked failed."""


def _report_expectations(run_id: str, suite: SuiteOutcome, run_url: str) -> None:
    """The suite's results as a table artifact and a link to its Data Docs where the run now lives."""
    create_table_artifact(suite.table(), key="toolace-expectations",
                          description=f"Expectation suite results of run {run_id}")
    if suite.data_docs_index:
        index = f"{run_url}/dataset/data_docs/index.html"
        link = index if "://" in index else f"file://{Path(index).resolve()}"
        create_link_artifact(link, link_text="Great Expectations Data Docs", key="toolace-data-docs",
                             description=f"Data Docs of run {run_id}")


def _charts(run_id: str, run_url: str, config: RunConfig, tally: DatasetTally,
            bounds: LossBounds | None) -> dict[str, str]:
    """The dialog-type mix and the loss distribution as PNGs in reports/ and as Prefect image artifacts."""
    types, losses = dict(tally.types), tally.losses
    pngs = {
        "dialog_types": dialog_type_chart_png(types, config.dialog_mix, f"Dialog types (run {run_id})"),
        "loss": loss_histogram_png(losses, (bounds.lower, bounds.upper) if bounds else None,
                                   f"Complexity loss (run {run_id})"),
    }
    paths = {}
    for name, png in pngs.items():
        paths[name] = f"reports/{name}.png"
        writers.write_bytes(png, f"{run_url}/{paths[name]}")
        create_image_artifact(png_data_uri(png), key=f"toolace-{name.replace('_', '-')}",
                              description=f"{name.replace('_', ' ')} of run {run_id}")
    return paths


def _report(run_id: str, run_url: str, stats: dict[str, StageStats], accepted: int,
            verification_report: dict[str, Any]) -> None:
    """Prefect artifacts for the UI: a stage table, failures per check and a short markdown summary."""
    rows = [{"stage": name, **{k: v for k, v in stats[name].model_dump().items() if k != "rejected_by"},
             "rejected_by": ", ".join(f"{c}={n}" for c, n in stats[name].rejected_by.items())}
            for name in STAGES]
    create_table_artifact(rows, key="toolace-stages", description=f"Stage counts of run {run_id}")
    failures = verification_report["failures_per_check"]
    create_table_artifact([{"check": c, **v} for c, v in failures.items()] or [{"check": "(none)", "dialogs": 0}],
                          key="toolace-verification", description=f"Verification failures per check, run {run_id}")
    lines = "\n".join(f"| `{c}` | {v['layer']} | {v['dialogs']} |" for c, v in failures.items())
    create_markdown_artifact(
        f"# ToolACE run `{run_id}`\n\n**{accepted}** accepted dialogs in `{run_url}/dataset/`.\n\n"
        f"## Verification\n\n{verification_report['dialogs_checked']} dialogs checked: "
        f"{verification_report['rules_passed']} passed the rules, {verification_report['model_judged']} were "
        f"judged by the model layer, {verification_report['passed']} passed both.\n\n"
        f"| check | layer | dialogs failing |\n|---|---|---|\n{lines}\n",
        key="toolace-summary", description="Run summary")


def _report_pool(run_id: str, report: dict[str, Any], chart: bytes) -> None:
    """The API pool's diversity figures and domain chart, as Prefect artifacts."""
    create_image_artifact(png_data_uri(chart), key="toolace-api-domains",
                          description=f"New APIs per domain, run {run_id}")
    types = ", ".join(f"{k} {v}" for k, v in report["parameter_types"].items())
    domains = "\n".join(f"| {d} | {n} |" for d, n in report["apis_per_domain"].items())
    create_markdown_artifact(
        f"# API pool of run `{run_id}`\n\n"
        f"- APIs accepted: **{report['apis']}** in {report['domains']} domains "
        f"(largest share {report['max_domain_share']:.0%}, cap {report['domain_cap']} per domain)\n"
        f"- nesting share {report['nesting_share']:.0%}, constraint share {report['constraint_share']:.0%}, "
        f"broad share {report['broad_share']:.0%}\n"
        f"- duplicate rate {report['duplicate_rate']:.0%}\n- parameter types: {types}\n\n"
        f"| domain | APIs |\n|---|---|\n{domains}\n",
        key="toolace-api-pool", description=f"API pool report, run {run_id}")


def offered_apis(apis_by_id: dict[str, APISpec], plans: list[dialog_generation.DialogPlan]) -> list[APISpec]:
    """The APIs a batch of plans offers (a batch task gets these, not the whole pool: its inputs are hashed
    for the cache key and shipped to Dask workers)."""
    wanted = dict.fromkeys(api_id for plan in plans for api_id in plan.offered)
    return [apis_by_id[api_id] for api_id in wanted if api_id in apis_by_id]


def _count_generation(gen: StageStats, generated: list[Dialog], llm: StageStats, started: float) -> StageStats:
    gen = gen.add(llm)
    gen.count(generated)
    gen.wall_time_s = round(gen.wall_time_s + time.perf_counter() - started, 3)
    return gen


def _score(config: RunConfig, scope: str, generated: list[Dialog], loss: StageStats) -> tuple[list[Dialog], StageStats]:
    """The target model's loss of each generated dialog (a score; a dialog longer than the model's context is
    rejected here with that reason)."""
    if not config.target_model:
        return generated, loss
    t0 = time.perf_counter()
    ready = {d.dialog_id for d in generated if d.accepted}
    generated = on_runner(complexity_batch, scope, generated, config.target_model)
    loss.count([d for d in generated if d.dialog_id in ready])
    for dialog in generated:
        if dialog.dialog_id in ready:
            dialog.losses = [dialog.complexity_loss]
    loss.wall_time_s = round(loss.wall_time_s + time.perf_counter() - t0, 3)
    return generated, loss


def _generate_and_score(config: RunConfig, scope: str, settings: GatewaySettings, apis: list[APISpec],
                        plans: list[dialog_generation.DialogPlan], gen: StageStats,
                        loss: StageStats) -> tuple[list[Dialog], StageStats, StageStats]:
    """One batch of dialogs from the agents, then the target model's loss."""
    started = time.perf_counter()
    generated, llm = on_runner(generate_dialog_batch, scope, plans, apis, settings, config.seed,
                               config.decision_samples)
    gen = _count_generation(gen, generated, llm, started)
    generated, loss = _score(config, scope, generated, loss)
    return generated, gen, loss


def _loss_bounds(config: RunConfig, scope: str, settings: GatewaySettings, apis: list[APISpec],
                 run_url: str) -> tuple[LossBounds | None, str, StageStats]:
    """The self-guidance bounds and a note saying where they came from (or why guidance is off)."""
    stats = StageStats()
    if not config.target_model:
        return None, "off: no target model (--target-model none)", stats
    if config.guidance_rounds == 0:
        return None, "off: guidance_rounds is 0", stats
    if config.loss_bounds:
        bounds = fixed_bounds(*config.loss_bounds)
        return bounds, f"fixed bounds [{bounds.lower}, {bounds.upper}]", stats
    plans = dialog_generation.plan_dialogs(apis, config.probe_size, {"single": 1.0}, config.candidate_tools,
                                           seeded(config.seed, "probe"))
    plans = [p.model_copy(update={"index": PROBE_INDEX + p.index}) for p in plans]
    offered = offered_apis({a.api_id: a for a in apis}, plans)
    probes, llm = on_runner(generate_dialog_batch, scope, plans, offered, settings, config.seed,
                            config.decision_samples)
    stats = stats.add(llm)
    probes = on_runner(complexity_batch, scope, probes, config.target_model)
    stats.count(probes)
    rows = on_runner(probe_batch, scope, [d for d in probes if d.accepted and d.complexity_loss is not None],
                       config.target_model)
    writers.write_table(frames.records_frame_dicts(rows) if rows else frames.records_frame([]),
                        f"{run_url}/tables/probes.parquet")
    try:
        bounds = calibrate_bounds([r["loss"] for r in rows], [r["correct"] for r in rows])
    except ValueError as exc:
        return None, f"off: calibration failed ({exc}); set loss_bounds to guide with fixed bounds", stats
    note = f"calibrated on {len(rows)} probes: [{bounds.lower:.3f}, {bounds.upper:.3f}] ({bounds.method})"
    return bounds, note, stats


def _guide(config: RunConfig, scope: str, settings: GatewaySettings, apis: list[APISpec],
           plans: list[dialog_generation.DialogPlan], generated: list[Dialog], bounds: LossBounds,
           gen: StageStats, loss: StageStats) -> tuple[list[Dialog], StageStats, StageStats]:
    """Self-guidance: a dialog the target model finds too easy (loss under the lower bound) or too hard
    (over the upper bound) is regenerated with an instruction for the user agent, for at most
    ``guidance_rounds`` rounds. A round that fails keeps the previous version; every round is recorded."""
    by_plan = {d.dialog_id: (p, d) for p, d in zip(plans, generated, strict=True)}
    records: dict[str, GuidanceRecord] = {}
    for _, dialog in by_plan.values():
        if dialog.accepted:
            records[dialog.dialog_id] = start_record(bounds, dialog.complexity_loss)
    for round_no in range(1, config.guidance_rounds + 1):
        todo = [(plan, dialog) for plan, dialog in by_plan.values()
                if dialog.dialog_id in records
                and records[dialog.dialog_id].final_verdict in ("too_easy", "too_hard")]
        if not todo:
            break
        new_plans = [plan.model_copy(update={"round": round_no, "guidance": guidance_instruction(
            records[dialog.dialog_id].final_verdict, plan.dialog_type, [t.name for t in dialog.tools])})
            for plan, dialog in todo]
        regenerated, gen, loss = _generate_and_score(config, scope, settings, apis, new_plans, gen, loss)
        for (_, old), plan, new in zip(todo, new_plans, regenerated, strict=True):
            if new.accepted:
                by_plan[old.dialog_id] = (plan, new)
                records[old.dialog_id].add_round(new.complexity_loss, plan.guidance)
            else:
                records[old.dialog_id].add_round(new.complexity_loss, plan.guidance,
                                                 verdict=f"rejected ({new.rejected_by}): previous version kept")
    out: list[Dialog] = []
    for _, dialog in by_plan.values():
        record = records.get(dialog.dialog_id)
        if record is not None:
            apply_record(dialog, record)
            if not config.keep_out_of_band and record.final_verdict in ("too_easy", "too_hard"):
                dialog.reject(OUT_OF_BAND_CHECK, f"loss {dialog.complexity_loss} still {record.final_verdict} "
                                                 f"after {dialog.guidance_rounds} rounds "
                                                 f"(bounds {bounds.lower:.3f}-{bounds.upper:.3f})")
        out.append(dialog)
    return out, gen, loss
