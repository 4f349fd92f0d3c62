"""The downstream check flow: fine-tune a base model on a published run's dataset with a fixed budget, score
the base and the tuned model on BFCL items the same way, and store both figures as a new version beside the run
(``<out>/downstream/<run-id>/<check-id>/``: the published run is never written again) and as Prefect artifacts.
The logic is in :mod:`tasks.evaluation.downstream`, :mod:`tasks.training.fine_tuning` and
:mod:`tasks.evaluation.bfcl_eval`; this module only composes them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.evaluation import bfcl_eval, downstream
from tasks.evaluation.bfcl_data import BfclItem
from tasks.storage import run_storage
from tasks.training import fine_tuning


@task(name="fine-tune-on-run")
def train_task(config: fine_tuning.TrainConfig) -> dict[str, Any]:
    logger = get_run_logger()
    return asdict(fine_tuning.train(config, log=logger.info))


@task(name="bfcl-score")
def score_task(model: str, items: dict[str, list[BfclItem]], max_new_tokens: int, batch_size: int,
               output: str) -> list[bfcl_eval.CategoryScore]:
    source = bfcl_eval.LocalModelAnswers(model, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return bfcl_eval.evaluate(items, source, output)


@flow(name="toolace-downstream-check", log_prints=True)
def downstream_check(config: downstream.DownstreamConfig) -> dict[str, Any]:
    """Train on the run's dataset, score base vs tuned, record both in a new check beside the run."""
    logger = get_run_logger()
    run_storage.configure_s3(config.s3_endpoint_url)
    run_url, manifest = downstream.resolve_run(config.run)
    run_id = str(manifest.get("run_id") or run_url.rsplit("/", 1)[-1])
    dataset = downstream.dataset_url(run_url, manifest)
    items = bfcl_eval.load_items(config.categories, config.limit)  # bad categories fail before any training
    tuned_dir = downstream.tuned_model_dir(config, run_id)
    training = downstream.reusable_training(tuned_dir, config, dataset)
    reused = training is not None
    if training is None:
        training = train_task(fine_tuning.TrainConfig(
            dataset=dataset, out=str(tuned_dir), base=config.base, steps=config.steps, lr=config.lr,
            lora_r=config.lora_r, batch_size=config.batch_size, seed=config.seed, calls_only=config.calls_only))
    else:
        logger.info("reusing the model tuned earlier on this dataset with the same budget: %s", tuned_dir)
    check = downstream.start_check(run_url, run_id)  # a new version beside the run, never in it
    base = score_task(config.base, items, config.max_new_tokens, config.eval_batch_size,
                      check.file(downstream.ANSWERS["base"]))
    tuned = score_task(str(tuned_dir), items, config.max_new_tokens, config.eval_batch_size,
                       check.file(downstream.ANSWERS["tuned"]))
    record = downstream.downstream_record(config, check, tuned_dir, training, reused, base, tuned)
    downstream.publish_check(check, record)
    table = downstream.report_table(record)
    create_table_artifact(table, key="toolace-downstream", description=f"BFCL accuracy, base vs tuned, run {run_id}")
    lines = "\n".join(f"| {r['category']} | {r['items']} | {r['base_accuracy']:.1%} | {r['tuned_accuracy']:.1%} | "
                      f"{r['delta']:+.1%} |" for r in table)
    budget = config.budget()
    create_markdown_artifact(
        f"# Downstream check of run `{run_id}`\n\n`{config.base}` fine-tuned on the run's dataset "
        f"({training.get('examples')} examples, {budget['steps']} steps, batch {budget['batch_size']}, lr "
        f"{budget['lr']:g}, {'LoRA r=' + str(budget['lora_r']) if budget['lora_r'] else 'full'}), scored on BFCL "
        f"in prompt mode.\n\n| category | items | base | tuned | delta |\n|---|---|---|---|---|\n{lines}\n\n"
        f"{record['paired'].get('overall', {}).get('line', '')}\n",
        key="toolace-downstream-summary", description=f"Downstream check of run {run_id}")
    logger.info("downstream check of run %s: overall accuracy %.1f%% -> %.1f%%, written to %s", run_id,
                100 * record["base"]["overall"]["accuracy"], 100 * record["tuned"]["overall"]["accuracy"],
                check.folder)
    return record
