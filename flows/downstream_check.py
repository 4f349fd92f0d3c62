"""The downstream check flow: fine-tune a base model on a published run's dataset with a fixed budget, score
the base and the tuned model on BFCL items the same way, and store both figures as a new version beside the run
(``<out>/downstream/<run-id>/<check-id>/``: the published run is never written again) and as Prefect artifacts.
With ``seeds`` > 1 the training is repeated with that many seeds and every tuned model is scored. The logic is in
:mod:`tasks.evaluation.downstream`, :mod:`tasks.training.fine_tuning`, :mod:`tasks.evaluation.model_serving` and
:mod:`tasks.evaluation.bfcl_eval`; this module only composes them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.evaluation import bfcl_eval, downstream, model_serving
from tasks.evaluation.bfcl_data import BfclItem
from tasks.storage import run_storage
from tasks.training import fine_tuning


@task(name="fine-tune-on-run")
def train_task(config: fine_tuning.TrainConfig) -> dict[str, Any]:
    logger = get_run_logger()
    return asdict(fine_tuning.train(config, log=logger.info))


@task(name="bfcl-score")
def score_task(config: downstream.DownstreamConfig, model: str, items: dict[str, list[BfclItem]],
               output: str, is_base: bool = False) -> list[bfcl_eval.CategoryScore]:
    logger = get_run_logger()
    return downstream.score_model(config, model, items, output, log=logger.info, is_base=is_base)


@flow(name="toolace-downstream-check", log_prints=True)
def downstream_check(config: downstream.DownstreamConfig) -> dict[str, Any]:
    """Train on the run's dataset, score base vs tuned, record both in a new check beside the run."""
    with run_storage.s3_endpoint(config.s3_endpoint_url):  # fsspec's S3 endpoint for the check's length
        return _check(config)


def _check(config: downstream.DownstreamConfig) -> dict[str, Any]:
    logger = get_run_logger()
    run_url, manifest = downstream.resolve_run(config.run)
    run_id = str(manifest.get("run_id") or run_url.rsplit("/", 1)[-1])
    dataset = downstream.dataset_url(run_url, manifest)
    items = bfcl_eval.load_items(config.categories, config.limit)  # bad categories fail before any training
    # the engine is settled (and a missing llama-cpp-python reported) before any training
    config = config.model_copy(update={"engine": model_serving.resolve_engine(config.engine)})
    downstream.check_fc_base(config)  # FC mode: a base its template cannot offer tools is refused before training
    trained: list[tuple[int, Any, dict[str, Any], bool]] = []  # seed, tuned folder, training record, reused
    for seed in config.seed_list():
        seed_config = config.for_seed(seed)
        tuned_dir = downstream.tuned_model_dir(seed_config, run_id)
        training = downstream.reusable_training(tuned_dir, seed_config, dataset)
        reused = training is not None
        if training is None:
            training = train_task(fine_tuning.TrainConfig(
                dataset=dataset, out=str(tuned_dir), base=config.base, steps=config.steps, lr=config.lr,
                lora_r=config.lora_r, batch_size=config.batch_size, seed=seed, calls_only=config.calls_only,
                format=config.train_format, chat_template=config.chat_template))
        else:
            logger.info("reusing the model tuned earlier on this dataset with the same budget (seed %d): %s", seed,
                        tuned_dir)
        trained.append((seed, tuned_dir, training, reused))
    check = downstream.start_check(run_url, run_id)  # a new version beside the run, never in it
    base = score_task(config, config.base, items, check.file(downstream.ANSWERS["base"]), is_base=True)
    runs = []
    for seed, tuned_dir, training, reused in trained:
        answers = downstream.tuned_answers_name(seed, config.seeds)
        scores = score_task(config, str(tuned_dir), items, check.file(answers))
        runs.append(downstream.SeedRun(seed, str(tuned_dir), training, reused, scores, answers))
    first = runs[0]
    record = downstream.downstream_record(config, check, trained[0][1], first.training, first.reused, base,
                                          first.scores)
    record = downstream.with_seeds(record, base, runs)
    downstream.publish_check(check, record)
    table = downstream.report_table(record)
    create_table_artifact(table, key="toolace-downstream", description=f"BFCL accuracy, base vs tuned, run {run_id}")
    lines = "\n".join(f"| {r['category']} | {r['items']} | {r['base_accuracy']:.1%} | {r['tuned_accuracy']:.1%} | "
                      f"{r['delta']:+.1%} |" for r in table)
    budget = config.budget()
    mode_name = "function-calling" if config.mode == "fc" else "prompt"
    seeds_line = record.get("seeds", {}).get("across_seeds", {}).get("overall", {}).get("line", "")
    create_markdown_artifact(
        f"# Downstream check of run `{run_id}`\n\n`{config.base}` fine-tuned on the run's dataset "
        f"({first.training.get('examples')} examples, {budget['steps']} steps, batch {budget['batch_size']}, lr "
        f"{budget['lr']:g}, {'LoRA r=' + str(budget['lora_r']) if budget['lora_r'] else 'full'}), scored on BFCL "
        f"in {mode_name} mode.\n\n| category | items | base | tuned | delta |\n|---|---|---|---|---|\n{lines}\n\n"
        f"{record['paired'].get('overall', {}).get('line', '')}\n" + (f"{seeds_line}\n" if seeds_line else ""),
        key="toolace-downstream-summary", description=f"Downstream check of run {run_id}")
    logger.info("downstream check of run %s: overall accuracy %.1f%% -> %.1f%%, written to %s", run_id,
                100 * record["base"]["overall"]["accuracy"], 100 * record["tuned"]["overall"]["accuracy"],
                check.folder)
    return record
