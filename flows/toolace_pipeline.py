"""The ToolACE pipeline as one Prefect flow of stage subflows: mining, context tree, API synthesis, calibration,
dialogs (generation, complexity loss, self-guidance, verification) and publish (``flows/stages/``).

The flow creates the run's :class:`~flows.stages.run_context.RunContext` (settings, storage, progress, the stall
watchdog, the task runner) and hands each stage its result's records; everything a stage decides is in its module.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from typing import Any

from prefect import flow, get_run_logger

from flows.result_storage import results_beside_run
from flows.run_progress import PrefectProgress
from flows.stages.api_synthesis import api_synthesis_stage, pooled_apis
from flows.stages.calibration import calibration_stage
from flows.stages.context_tree import context_tree_stage
from flows.stages.dialogs import dialogs_stage, suite_bounds
from flows.stages.mining import mining_stage
from flows.stages.publishing import STAGES, DatasetRejected, publish_stage
from flows.stages.run_context import Carried, RunContext, StageResult, run_stage, stage_task_runner
from tasks.storage import run_storage
from tasks.verification.expectations import great_expectations_prefetched
from tasks.verification.template_gate import TemplateGate
from toolace.config import RunConfig, redact_url
from toolace.garbage_collection import CollectorPauses
from toolace.llm.endpoint import Endpoint, llm_endpoint
from toolace.llm.gateway import gateway_settings_from
from toolace.llm.response_cache import cache_dir_for as llm_cache_dir
from toolace.llm.response_cache import prune_cache
from toolace.llm.shared_loop import CURRENT_LLM, LlmRuntime
from toolace.progress import ProgressTo
from toolace.stall_watchdog import CURRENT_WATCHDOG, StallWatchdog

__all__ = ["STAGES", "DatasetRejected", "cache_dir_for", "new_run_id", "toolace_pipeline"]


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def cache_dir_for(out: str) -> str:
    """LLM responses are cached on local disk, beside the runs when ``--out`` is local."""
    return llm_cache_dir(out)


@flow(name="toolace-pipeline", log_prints=True)
def toolace_pipeline(config: RunConfig, endpoint: Endpoint | None = None,
                     progress: ProgressTo | None = None) -> dict[str, Any]:
    """Make a function-calling dataset from a corpus.

    ``endpoint`` is an LLM endpoint already resolved by the caller (the CLI starts the embedded model
    before the flow, so start-up errors are plain user errors); without it the flow checks the
    configured endpoint, or starts the embedded model itself for the length of the run. ``progress``: where the
    run reports its stages besides the Prefect UI (the CLI's bar).
    """
    run_id = config.run_id or new_run_id()
    config = config.model_copy(update={"run_id": run_id})
    with run_storage.s3_endpoint(config.s3_endpoint_url):
        return _run(config, endpoint, progress or ProgressTo())


def _run(config: RunConfig, endpoint: Endpoint | None, progress: ProgressTo) -> dict[str, Any]:
    run_id = str(config.run_id)
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
        return _stages(config, endpoint, gate, progress)
    # a deployed run takes the endpoint from the worker's environment, like the CLI does
    with llm_endpoint(config.llm_base_url or os.environ.get("OPENAI_BASE_URL"), config.llm_model) as resolved:
        return _stages(config, resolved, gate, progress)


def _stages(config: RunConfig, endpoint: Endpoint, gate: TemplateGate, progress: ProgressTo) -> dict[str, Any]:
    # full collections of this process's large heap stalled the LLM loop for up to 0.9 s (toolace.garbage_collection);
    # the batch tasks' results persist under <out>/state/prefect-results/<run-id>/ (not ~/.prefect): a rerun resumes
    # from any machine
    collector, llm = CollectorPauses(), LlmRuntime()
    with collector, llm.loop, results_beside_run(config.out, str(config.run_id), config.s3_endpoint_url), \
            stage_task_runner(config) as task_runner:
        run = new_run_context(config, endpoint, gate, task_runner, progress,
                              {"collector": collector, "llm": llm})
        watching, serving = CURRENT_WATCHDOG.set(None), CURRENT_LLM.set(llm)
        try:
            return run_stages(run)
        finally:
            CURRENT_LLM.reset(serving)
            CURRENT_WATCHDOG.reset(watching)


def new_run_context(config: RunConfig, endpoint: Endpoint, gate: TemplateGate, task_runner: Any,
                    progress: ProgressTo | None = None, services: dict[str, Any] | None = None) -> RunContext:
    """The run's context; ``services`` the run's own LLM runtime and collector settings when the caller has
    opened them (else new ones, unopened)."""
    run_id = str(config.run_id)
    location = run_storage.RunLocation(config.out, run_id)
    sink = PrefectProgress((progress or ProgressTo()).resolved(), run_id)  # the CLI's bar (if any) and the UI's
    # every wait on a batch is watched: no progress for stall_timeout_s fails the run in one line (resumable);
    # on Dask the workers relay their tasks' progress to this watchdog as Dask events (toolace.dask_progress)
    watchdog = StallWatchdog(config.stall_timeout_s, on_stall=sink.stall, logger=get_run_logger(),
                             hint=f"resume with --run-id {run_id}")
    return RunContext(config=config, endpoint=endpoint,
                      settings=gateway_settings_from(config, endpoint.base_url, endpoint.model,
                                                     cache_dir_for(config.out)),
                      scope=f"{location.staging}:{endpoint.model}", location=location, sink=sink, watchdog=watchdog,
                      template_gate=gate, started_at=RunContext.now(), task_runner=task_runner, **(services or {}))


def run_stages(run: RunContext) -> dict[str, Any]:
    """The stages in order, each a subflow; the run's stall watchdog reaches the batch tasks of this process
    through :data:`CURRENT_WATCHDOG`."""
    config, logger = run.config, get_run_logger()
    CURRENT_WATCHDOG.set(run.watchdog)
    logger.info("run %s: model %s at %s, writing to %s", run.run_id, run.endpoint.model,
                redact_url(run.endpoint.base_url), run.run_url)
    if run.settings.cache_dir:  # the LLM response cache kept within its age and size bounds (oldest entries first)
        logger.info("%s", prune_cache(run.settings.cache_dir, config.llm_cache_max_age_days,
                                      config.llm_cache_max_bytes).summary())
    mining = run_stage(mining_stage, run)
    run.collector.freeze()  # the embedding model and the kept documents live for the rest of the run
    tree = run_stage(context_tree_stage, run, Carried(items=mining.records))
    # Great Expectations (publish) is imported in a thread while the LLM-bound stages run, not beside the CPU-bound ones
    with great_expectations_prefetched():
        pooled = pooled_apis(config.pool)
        apis = run_stage(api_synthesis_stage, run, Carried(items=tree.records), Carried(items=pooled))
        all_apis = pooled + apis.records
        calibration = run_stage(calibration_stage, run, Carried(items=all_apis))
        bounds_for_suite = suite_bounds(run)
        dialogs = run_stage(dialogs_stage, run, Carried(items=all_apis), Carried(items=calibration.records),
                            bounds_for_suite, Carried(items=tree.records))
        results = {"pooled": StageResult(records=pooled), "context_tree": tree, "api_synthesis": apis,
                   "calibration": calibration, "dialogs": dialogs}
        stats = {name: value for result in (mining, tree, apis, calibration, dialogs)
                 for name, value in result.stats.items()}
        return run_stage(publish_stage, run, stats, bounds_for_suite, results)
