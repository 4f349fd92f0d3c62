"""Stages 5-7, dialogs: each batch is generated, scored by the target model (complexity loss), guided into the loss
bounds and verified (rules, then the model judges), then written at once (tables, dataset files, shards): only
per-row figures stay in memory.

As many batches generate at once as keep the gateway's concurrency busy (at least two,
:func:`flows.scheduler.batches_in_flight`): the older one's dialogs go first (their requests wait with the plan index as
priority), and the newer one fills the slots the older batch's last, longest dialogs leave idle; each batch is
then verified while the next ones generate. Dialogs generating or verifying count as accepted when the next
batch is planned, so no more are generated than the target can use. Dialogs are planned type by type against
quotas of accepted dialogs (:mod:`tasks.dialogs.quotas`): the mix asked for is the mix published, and a type that
cannot reach its share is said as soon as that is known (``mix_shortfall``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from prefect import flow, get_run_logger

from flows.batch_tasks import agentic_dialog_batch, complexity_batch, generate_dialog_batch, verify_batch
from flows.scheduler import BatchStream, Submitted, batches_in_flight, on_runner, submit_batch
from flows.stages.calibration import offered_apis
from flows.stages.run_context import MAX_ATTEMPT_FACTOR, Carried, RunContext, StageResult, workers_watched
from schemas.records import APISpec, Dialog, StageStats, TreeNode
from schemas.suites import SuiteBounds
from tasks.dataset.stream import DialogStream
from tasks.dialogs import generation as dialog_generation
from tasks.dialogs.quotas import MixPlanner, type_quotas
from tasks.dialogs.self_guidance import (
    GuidanceRecord,
    LossBounds,
    apply_record,
    guidance_instruction,
    start_record,
)
from tasks.environments.agentic_dialogs import AgenticSettings
from tasks.environments.agentic_guidance import AgenticSteering, merge_counts
from tasks.mcp.execution import ExecutionPolicy
from toolace.errors import UserError
from toolace.stall_watchdog import items_of

OUT_OF_BAND_CHECK = "complexity_bounds_v1"
AGENTIC = "agentic_multi_turn"
STAGES = ("dialog_generation", "complexity_loss", "verification")


def suite_bounds(run: RunContext) -> SuiteBounds:
    config = run.config
    return SuiteBounds.from_config(config, mix_tolerance=config.mix_tolerance,
                                   min_acceptance_rate=config.min_acceptance_rate)


def reject_out_of_band(dialog: Dialog, record: GuidanceRecord, bounds: LossBounds, keep_out_of_band: bool) -> None:
    """After the last guidance round: a dialog still too easy or too hard for the target model is rejected by
    :data:`OUT_OF_BAND_CHECK` (unless ``keep_out_of_band``), naming its loss, the verdict and the bounds."""
    if keep_out_of_band or record.final_verdict not in ("too_easy", "too_hard"):
        return
    dialog.reject(OUT_OF_BAND_CHECK, f"loss {dialog.complexity_loss} still {record.final_verdict} "
                                     f"after {dialog.guidance_rounds} rounds "
                                     f"(bounds {bounds.lower:.3f}-{bounds.upper:.3f})")


def make_dialogs(run: RunContext, all_apis: list[APISpec], bounds: LossBounds | None,
                 bounds_for_suite: SuiteBounds, nodes: list[TreeNode] | None = None) -> StageResult[Any]:
    """Generate, score, guide and verify dialogs until ``config.dialogs`` are accepted (bounded attempts), writing
    each batch as it is decided. ``report``: the stream's tally, shards and verification report (and the agentic
    counts when the mix asks for ``agentic_multi_turn``, made first: :func:`_agentic`)."""
    config, sink, watchdog = run.config, run.sink, run.watchdog
    gen, loss, ver = StageStats(), StageStats(), StageStats()
    apis_by_id = {a.api_id: a for a in all_apis}
    sink.stage("dialogs", config.dialogs)
    run.collector.freeze()  # the API pool and the dialog plans live until the run ends
    gate = run.template_gate
    depth = batches_in_flight(config.concurrency, config.batch_size)
    agentic_quota = type_quotas(config.dialog_mix, config.dialogs).get(AGENTIC, 0) \
        if config.dialog_mix.get(AGENTIC, 0) > 0 else 0
    rest_mix = {t: w for t, w in config.dialog_mix.items() if t != AGENTIC and w > 0}
    agentic_report: dict[str, Any] | None = None

    with DialogStream(run.run_url, bounds_for_suite, publish_reasoning=config.publish_reasoning,
                      template_rows=config.template_check_rows if gate.active else 0, seed=config.seed) as stream:
        made = 0
        if agentic_quota:
            made, agentic_report, (gen, loss, ver) = _agentic(run, all_apis, nodes or [], agentic_quota, stream,
                                                               (gen, loss, ver), bounds)
        rest = config.dialogs - made
        planner = MixPlanner(all_apis, rest, rest_mix, config.candidate_tools, config.seed, config.max_segments,
                             MAX_ATTEMPT_FACTOR, config.mix_tolerance, overfill=config.mix_shortfall == "warn") \
            if rest > 0 and rest_mix else None

        def start(reserved: int) -> Submitted[dialog_generation.DialogPlan] | None:
            """The next batch's generation: the planner's plans for the types furthest below their quotas (it
            counts the dialogs generating or verifying as accepted itself), so no more are generated than the
            target can use."""
            batch_plans = planner.next_plans(config.batch_size) if planner is not None else []
            if not batch_plans:
                return None
            offered = offered_apis(apis_by_id, batch_plans)
            return Submitted(batch_plans, submit_batch(generate_dialog_batch, run.scope, batch_plans, offered,
                                                       run.settings, config.seed, config.decision_samples,
                                                       ExecutionPolicy.from_config(config)),
                             (offered, time.perf_counter()))

        generation_clock = 0.0  # when the last batch finished: generation's wall time counts overlapping batches once
        for batch in BatchStream("dialogs", start, depth, watchdog):
            assert planner is not None  # a batch started only from the planner's plans
            batch_plans, (offered, started) = batch.plans, batch.extra
            generated, llm = batch.result
            gen = _count_generation(gen, generated, llm, max(started, generation_clock))
            generation_clock = time.perf_counter()
            generated, loss = _score(run, generated, loss)
            if bounds is not None:
                generated, gen, loss = _guide(run, offered, batch_plans, generated, bounds, gen, loss)
            decided, ver = _verify_and_write(run, generated, stream, ver, batch_plans[0].index, items_of(batch_plans))
            planner.record(batch_plans, decided)
            _say_shortfalls(planner, config.mix_shortfall, run.run_id)
        if planner is not None:  # planning stopped: a mix that cannot be completed within the suite's shares is said
            _say_shortfalls(planner, config.mix_shortfall, run.run_id)
    sink.finish("dialogs")
    stats = dict(zip(STAGES, (gen, loss, ver), strict=True))
    return StageResult(stats=stats, files=["tables/dialogs.parquet", "tables/verdicts.parquet", "dataset/"],
                       report={"tally": stream.tally, "shards": stream.shards,
                               "verification": stream.verification.report(), "agentic": agentic_report})


def _verify_and_write(run: RunContext, generated: list[Dialog], stream: DialogStream, ver: StageStats,
                      priority: int, batch: str) -> tuple[list[Dialog], StageStats]:
    """A batch's verification (rules, then the model judges), its verdicts and dialogs written at once."""
    config = run.config
    t0 = time.perf_counter()
    ready_ids = {d.dialog_id for d in generated if d.accepted}
    verifying = submit_batch(verify_batch, run.scope, generated, run.settings, config.max_assistant_chars,
                             config.model_checks, config.judge_votes, priority)
    (decided, batch_verdicts), llm = run.watchdog.wait(verifying, "verification", batch)
    ver = ver.add(llm)
    ver.count([d for d in decided if d.dialog_id in ready_ids])
    ver.wall_time_s = round(ver.wall_time_s + time.perf_counter() - t0, 3)
    stream.write(decided, batch_verdicts)
    run.sink.advance("dialogs", sum(d.accepted for d in decided))
    return decided, ver


def _agentic(run: RunContext, apis: list[APISpec], nodes: list[TreeNode], quota: int, stream: DialogStream,
             stats: tuple[StageStats, StageStats, StageStats],
             bounds: LossBounds | None = None) -> tuple[int, dict[str, Any],
                                                        tuple[StageStats, StageStats, StageStats]]:
    """The mix's ``agentic_multi_turn`` share, made before the other types: environments (the config's
    ``agentic_mcp_servers`` first, then synthesised ones), blueprints and trajectories verified by execution (one
    batch task), then the target model's loss, loss steering when ``bounds`` are in force (:func:`_steer_agentic`),
    and the same verification and writing as every dialog. A share it cannot reach is a shortfall like any type's
    (``mix_shortfall``)."""
    config = run.config
    gen, loss, ver = stats
    settings = AgenticSettings(dialogs=quota, model_checks=config.model_checks, judge_votes=config.judge_votes,
                               max_assistant_chars=config.max_assistant_chars, seed=config.seed,
                               mcp_environments=tuple(config.agentic_mcp_servers))
    started = time.perf_counter()
    batch, llm = on_runner(agentic_dialog_batch, run.scope, [a for a in apis if a.accepted], nodes, run.settings,
                           settings)
    generated, report = list(batch.dialogs), batch.report
    gen = _count_generation(gen, generated, llm, started)
    generated, loss = _score(run, generated, loss)
    if bounds is not None:
        generated, report, gen, loss = _steer_agentic(run, settings, batch.environments, generated, report, bounds,
                                                      gen, loss)
    decided, ver = _verify_and_write(run, generated, stream, ver, 0, f"of {quota} agentic dialogs")
    made = sum(d.accepted for d in decided)
    weights = {t: w for t, w in config.dialog_mix.items() if w > 0}
    floor = max(0, math.floor(round((weights[AGENTIC] / sum(weights.values()) - config.mix_tolerance)
                                    * config.dialogs, 9)))
    if made < floor:
        rejected = Counter(d.rejected_by or "unknown" for d in decided if not d.accepted)
        rejected.update(report.get("rejected_by", {}))
        check = rejected.most_common(1)[0][0] if rejected else "none"
        line = (f"dialog type {AGENTIC} cannot reach its share of the mix: {made} of {quota} accepted "
                f"({report.get('environments_accepted', 0)} of {report.get('environments_proposed', 0)} environments "
                f"and {report.get('blueprints_accepted', 0)} of {report.get('blueprints_proposed', 0)} blueprints "
                f"accepted), mostly rejected by {check}; the expectation suite needs {floor} "
                f"(mix_tolerance {config.mix_tolerance})")
        get_run_logger().warning("%s", line)
        if config.mix_shortfall == "fail":
            raise MixShortfall(f"run {run.run_id}: {line}; lower its weight in dialog_mix or raise mix_tolerance "
                               "(mix_shortfall: warn makes the rest all the same, for the expectation suite to judge)")
    return made, report, (gen, loss, ver)


def _steer_agentic(run: RunContext, settings: AgenticSettings, environments: list[Any], generated: list[Dialog],
                   report: dict[str, Any], bounds: LossBounds, gen: StageStats,
                   loss: StageStats) -> tuple[list[Dialog], dict[str, Any], StageStats, StageStats]:
    """Loss steering of agentic dialogs (:mod:`tasks.environments.agentic_guidance`), the counterpart of
    :func:`_guide`: for at most ``guidance_rounds`` rounds, each accepted dialog still too easy or too hard gets a
    replacement blueprint for its environment, proposed with guidance, executed, reviewed and run as a trajectory
    (one batch task per round), then scored; the version kept after the last round meets the same out-of-band rule
    (:func:`reject_out_of_band`). Replaced versions and failed replacements are returned as rejected rows; the
    round figures join the agentic report (``guidance``), the rounds' work its counts and the stage stats."""
    steering = AgenticSteering.start(generated, bounds, [e.env_id for e in environments])
    for round_no in range(1, run.config.guidance_rounds + 1):
        requests = steering.requests(round_no)
        if not requests:
            break
        wanted = {r.env_id for r in requests}
        started = time.perf_counter()
        guided, llm = on_runner(agentic_dialog_batch, run.scope, [], [], run.settings, settings, requests,
                                [e for e in environments if e.env_id in wanted])
        made = [o.dialog for o in guided.outcomes if o.dialog is not None]
        gen = _count_generation(gen, made, llm, started)
        made, loss = _score(run, made, loss)
        steering.settle(round_no, requests, guided.outcomes, made)
        report = merge_counts(report, guided.report)
    dialogs = steering.finish()
    for dialog, record in steering.kept():
        reject_out_of_band(dialog, record, bounds, run.config.keep_out_of_band)
    return dialogs, {**report, "guidance": steering.report()}, gen, loss


class MixShortfall(UserError):
    """A dialog type cannot reach its share of the mix: the run stops as soon as that is known (``mix_shortfall:
    fail``), its finished batches kept for a rerun with other settings."""


def _say_shortfalls(planner: MixPlanner, policy: str, run_id: str) -> None:
    """Log each type found unable to reach its share; with ``policy`` "fail", stop the run with the first."""
    lines = planner.shortfalls()
    if not lines:
        return
    logger = get_run_logger()
    for line in lines:
        logger.warning("%s", line)
    if policy == "fail":
        raise MixShortfall(f"run {run_id}: {lines[0]}; lower its weight in dialog_mix or raise mix_tolerance "
                           "(mix_shortfall: warn makes the rest all the same, for the expectation suite to judge)")


def _count_generation(gen: StageStats, generated: list[Dialog], llm: StageStats, started: float) -> StageStats:
    gen = gen.add(llm)
    gen.count(generated)
    gen.wall_time_s = round(gen.wall_time_s + time.perf_counter() - started, 3)
    return gen


def _score(run: RunContext, generated: list[Dialog], loss: StageStats) -> tuple[list[Dialog], StageStats]:
    """The target model's loss of each generated dialog (a score; a dialog longer than the model's context is
    rejected here with that reason)."""
    if not run.config.target_model:
        return generated, loss
    t0 = time.perf_counter()
    ready = {d.dialog_id for d in generated if d.accepted}
    generated = on_runner(complexity_batch, run.scope, generated, run.config.target_model)
    loss.count([d for d in generated if d.dialog_id in ready])
    for dialog in generated:
        if dialog.dialog_id in ready:
            dialog.losses = [dialog.complexity_loss]
    loss.wall_time_s = round(loss.wall_time_s + time.perf_counter() - t0, 3)
    return generated, loss


def _generate_and_score(run: RunContext, apis: list[APISpec], plans: list[dialog_generation.DialogPlan],
                        gen: StageStats, loss: StageStats) -> tuple[list[Dialog], StageStats, StageStats]:
    """One batch of dialogs from the agents, then the target model's loss."""
    started = time.perf_counter()
    generated, llm = on_runner(generate_dialog_batch, run.scope, plans, apis, run.settings, run.config.seed,
                               run.config.decision_samples, ExecutionPolicy.from_config(run.config))
    gen = _count_generation(gen, generated, llm, started)
    generated, loss = _score(run, generated, loss)
    return generated, gen, loss


def _guide(run: RunContext, apis: list[APISpec], plans: list[dialog_generation.DialogPlan],
           generated: list[Dialog], bounds: LossBounds, gen: StageStats,
           loss: StageStats) -> tuple[list[Dialog], StageStats, StageStats]:
    """Self-guidance: a dialog the target model finds too easy (loss under the lower bound) or too hard
    (over the upper bound) is regenerated with an instruction for the user agent, for at most
    ``guidance_rounds`` rounds. A round that fails keeps the previous version; every round is recorded."""
    by_plan = {d.dialog_id: (p, d) for p, d in zip(plans, generated, strict=True)}
    records: dict[str, GuidanceRecord] = {}
    for _, dialog in by_plan.values():
        if dialog.accepted:
            records[dialog.dialog_id] = start_record(bounds, dialog.complexity_loss)
    for round_no in range(1, run.config.guidance_rounds + 1):
        todo = [(plan, dialog) for plan, dialog in by_plan.values()
                if dialog.dialog_id in records
                and records[dialog.dialog_id].final_verdict in ("too_easy", "too_hard")]
        if not todo:
            break
        new_plans = [plan.model_copy(update={"round": round_no, "guidance": guidance_instruction(
            records[dialog.dialog_id].final_verdict, plan.dialog_type, [t.name for t in dialog.tools])})
            for plan, dialog in todo]
        regenerated, gen, loss = _generate_and_score(run, apis, new_plans, gen, loss)
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
            reject_out_of_band(dialog, record, bounds, run.config.keep_out_of_band)
        out.append(dialog)
    return out, gen, loss


@flow(name="dialogs", validate_parameters=False, persist_result=False)
def dialogs_stage(run: RunContext, apis: Carried[APISpec], bounds: Carried[LossBounds],
                  bounds_for_suite: SuiteBounds, nodes: Carried[TreeNode] | None = None) -> StageResult[Any]:
    """Stages 5-7 as one subflow (generation, loss and verification interleave batch by batch); ``nodes``: the
    context tree, which groups the APIs into the families agentic environments are made for."""
    with workers_watched(run.watchdog):
        return make_dialogs(run, list(apis.items), bounds.items[0] if bounds.items else None, bounds_for_suite,
                            list(nodes.items) if nodes is not None else None)
