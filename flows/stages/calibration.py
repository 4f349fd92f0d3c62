"""Stage 4, calibration: the self-guidance loss bounds, fixed or calibrated on a probe set the target model
answers itself (each probe scored the way ``toolace eval`` scores BFCL items)."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.batch_tasks import complexity_batch, generate_dialog_batch, probe_batch
from flows.scheduler import on_runner
from flows.stages.run_context import Carried, RunContext, StageResult, seeded, workers_watched
from schemas.records import APISpec, StageStats
from tasks.dialogs import generation as dialog_generation
from tasks.dialogs.self_guidance import LossBounds, calibrate_bounds, fixed_bounds
from tasks.storage.frames import records_frame, records_frame_dicts
from tasks.storage.writers import write_table

STAGE = "calibration"
PROBE_INDEX = 1_000_000  # probe plans are numbered apart from the dialogs' plans
PROBES_TABLE = "tables/probes.parquet"


def offered_apis(apis_by_id: dict[str, APISpec], plans: list[dialog_generation.DialogPlan]) -> list[APISpec]:
    """The APIs a batch of plans offers (a batch task gets these, not the whole pool: its inputs are hashed
    for the cache key and shipped to Dask workers)."""
    wanted = dict.fromkeys(api_id for plan in plans for api_id in plan.offered)
    return [apis_by_id[api_id] for api_id in wanted if api_id in apis_by_id]


def loss_bounds(run: RunContext, apis: list[APISpec]) -> tuple[LossBounds | None, str, StageStats, list[str]]:
    """The self-guidance bounds, a note saying where they came from (or why guidance is off), the stage's
    counts and the files written."""
    config, stats = run.config, StageStats()
    if not config.target_model:
        return None, "off: no target model (--target-model none)", stats, []
    if config.guidance_rounds == 0:
        return None, "off: guidance_rounds is 0", stats, []
    if config.loss_bounds:
        bounds = fixed_bounds(*config.loss_bounds)
        return bounds, f"fixed bounds [{bounds.lower}, {bounds.upper}]", stats, []
    plans = dialog_generation.plan_dialogs(apis, config.probe_size, {"single": 1.0}, config.candidate_tools,
                                           seeded(config.seed, "probe"))
    plans = [p.model_copy(update={"index": PROBE_INDEX + p.index}) for p in plans]
    offered = offered_apis({a.api_id: a for a in apis}, plans)
    probes, llm = on_runner(generate_dialog_batch, run.scope, plans, offered, run.settings, config.seed,
                            config.decision_samples)
    stats = stats.add(llm)
    probes = on_runner(complexity_batch, run.scope, probes, config.target_model)
    stats.count(probes)
    rows = on_runner(probe_batch, run.scope, [d for d in probes if d.accepted and d.complexity_loss is not None],
                     config.target_model)
    write_table(records_frame_dicts(rows) if rows else records_frame([]), f"{run.run_url}/{PROBES_TABLE}")
    try:
        bounds = calibrate_bounds([r["loss"] for r in rows], [r["correct"] for r in rows])
    except ValueError as exc:
        return None, f"off: calibration failed ({exc}); set loss_bounds to guide with fixed bounds", stats, \
            [PROBES_TABLE]
    note = f"calibrated on {len(rows)} probes: [{bounds.lower:.3f}, {bounds.upper:.3f}] ({bounds.method})"
    return bounds, note, stats, [PROBES_TABLE]


@flow(name="calibration", validate_parameters=False, persist_result=False)
def calibration_stage(run: RunContext, apis: Carried[APISpec]) -> StageResult[LossBounds]:
    """Stage 4 as a subflow; the records are the bounds (none when guidance is off), ``report["note"]`` says why."""
    t0 = time.perf_counter()
    with workers_watched(run.watchdog):
        bounds, note, stats, files = loss_bounds(run, list(apis.items))
    stats.wall_time_s = round(time.perf_counter() - t0, 3)
    get_run_logger().info("self-guidance: %s", note)
    return StageResult(records=[bounds] if bounds else [], stats={STAGE: stats}, files=files,
                       report={"note": note})
