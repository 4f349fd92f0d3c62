"""Stage 3, API synthesis: batches of APIs until the requested number is admitted (bounded attempts).

A pool, when given, seeds the example buffer, the duplicate index and the dialogs' tool sets, and receives the
new accepted APIs. The next batches are generated while this one is admitted (embedded, compared with the pool); its
plans count the batches generating and the one being admitted as if all of them were accepted, so the target
is never overshot. As many batches generate at once as keep the gateway's concurrency busy
(:func:`flows.scheduler.batches_in_flight`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_image_artifact, create_markdown_artifact

from flows.batch_tasks import synthesize_batch
from flows.scheduler import BatchStream, Submitted, batches_in_flight, submit_batch
from flows.stages.run_context import MAX_ATTEMPT_FACTOR, Carried, RunContext, StageResult, seeded, workers_watched
from schemas.frames import APIsFrame
from schemas.records import APISpec, StageStats, TreeNode
from tasks.apis import synthesis as api_synthesis
from tasks.apis.importing import merge_into_pool, read_pool
from tasks.apis.near_duplicates import NearDuplicateIndex
from tasks.dataset.charts import domain_chart_png, png_data_uri
from tasks.embedding.text_embedding import shared_embedder
from tasks.storage.writers import write_bytes, write_json, write_validated

STAGE = "api_synthesis"


def synthesize(run: RunContext, nodes: list[TreeNode], pooled: list[APISpec]) -> StageResult[APISpec]:
    """The new APIs, accepted or rejected; ``report``: the pool report, and the pool's counts when one is grown."""
    config, sink, watchdog, logger = run.config, run.sink, run.watchdog, get_run_logger()
    t0, apis, stage = time.perf_counter(), list[APISpec](), StageStats()
    embedder = shared_embedder(config.embedding_model)
    grower = api_synthesis.PoolGrower(
        api_synthesis.TreeSampler(nodes), config.apis, embedder.embed,
        NearDuplicateIndex(embedder.dim, config.near_duplicate_threshold, seed=config.seed),
        seeded(config.seed, "apis"), config.broad_api_share, config.nested_api_share, config.max_domain_share)
    grower.seed(pooled)
    max_attempts = config.apis * MAX_ATTEMPT_FACTOR
    sink.stage(STAGE, config.apis)
    capped = False

    def start(reserved: int) -> Submitted[api_synthesis.APIPlan] | None:
        """The next batch; ``reserved`` APIs (generating, or generated and not yet admitted) count as accepted, so
        the target is never overshot. None when there is nothing more to plan."""
        nonlocal capped
        want = min(config.batch_size, config.apis - grower.accepted - reserved, max_attempts - grower.planned)
        if want <= 0:
            return None
        batch_plans = grower.next_plans(want)
        if not batch_plans:
            capped = True
            return None
        return Submitted(batch_plans, submit_batch(synthesize_batch, run.scope, batch_plans, run.settings,
                                                   grower.examples(batch_plans)))

    for batch in BatchStream(STAGE, start, batches_in_flight(config.concurrency, config.batch_size), watchdog):
        specs, llm = batch.result
        before = grower.accepted
        apis.extend(grower.admit(batch.plans, specs))
        stage = stage.add(llm)
        sink.advance(STAGE, grower.accepted - before)
    if capped and grower.accepted < config.apis:
        logger.warning("every domain reached its cap of %d new APIs: raise max_domain_share or add documents",
                       grower.domain_cap)
    sink.finish(STAGE)
    stage.count(apis)
    stage.wall_time_s = round(time.perf_counter() - t0, 3)
    write_validated(apis, APISpec, APIsFrame, f"{run.run_url}/tables/apis.parquet", "apis")
    pool_counts = merge_into_pool(config.pool, [a for a in apis if a.accepted]) if config.pool else None
    report = api_synthesis.pool_report(apis)
    report["domain_cap"] = grower.domain_cap
    chart = domain_chart_png(report["apis_per_domain"], f"New APIs per domain (run {run.run_id})")
    write_json(report, f"{run.run_url}/reports/api_pool.json")
    write_bytes(chart, f"{run.run_url}/reports/api_domains.png")
    _report_pool(run.run_id, report, chart)
    return StageResult(records=apis, stats={STAGE: stage},
                       files=["tables/apis.parquet", "reports/api_pool.json", "reports/api_domains.png"],
                       report={"api_report": report, "pool_counts": pool_counts})


def pooled_apis(pool: str | None) -> list[APISpec]:
    """The accepted APIs of the pool the run starts from (none without a pool)."""
    return [a for a in read_pool(pool) if a.accepted] if pool else []


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


@flow(name="api-synthesis", validate_parameters=False, persist_result=False)
def api_synthesis_stage(run: RunContext, nodes: Carried[TreeNode], pooled: Carried[APISpec]) -> StageResult[APISpec]:
    with workers_watched(run.watchdog):
        return synthesize(run, list(nodes.items), list(pooled.items))
