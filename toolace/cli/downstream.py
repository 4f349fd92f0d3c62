"""``toolace downstream-check``: train on a run's dataset and score base vs tuned (the work is the
``toolace-downstream-check`` flow)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from toolace.cli.errors import fail, user_errors
from toolace.cli.prefect_env import Verbose, prepare_prefect_env


def downstream_check(
    run: Annotated[str, typer.Argument(help="Published run folder (.../runs/<run-id>, local or URL), or an "
                                       "output root: its latest run")],
    base: Annotated[str, typer.Option(help="Base model: smollm2, a Hugging Face id or a local folder")] = "smollm2",
    steps: Annotated[int, typer.Option(help="Optimizer steps")] = 60,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Examples per step")] = 1,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank", show_default="none: full fine-tuning")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (the first one with --seeds)")] = 0,
    seeds: Annotated[int, typer.Option(help="Train this many times, with seeds --seed, --seed+1, ...; score each "
                                            "tuned model and report the mean and spread across seeds")] = 1,
    calls_only: Annotated[bool, typer.Option(help="Train on assistant turns with calls only")] = False,
    category: Annotated[list[str] | None, typer.Option(help="BFCL category, repeatable",
                                                       show_default="simple_python")] = None,
    limit: Annotated[int | None, typer.Option(help="First N items of each category")] = 100,
    max_tokens: Annotated[int, typer.Option(help="Answer length cap in tokens")] = 128,
    models_dir: Annotated[str | None, typer.Option(help="Where tuned models are kept",
                                                   show_default="~/.cache/toolace/downstream")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// runs",
                                                        show_default="AWS_ENDPOINT_URL, else AWS")] = None,
    engine: Annotated[str | None, typer.Option(
        help="How the models answer: 'llama-server' (the embedded llama.cpp server; tuned folders are converted to "
             "GGUF) or 'transformers'", show_default="llama-server when llama-cpp-python is installed")] = None,
    slots: Annotated[int | None, typer.Option(help="llama-server: parallel slots",
                                              show_default="the CPU count")] = None,
    mode: Annotated[str, typer.Option(
        help="prompt: train on ToolACE's call lists, score in BFCL's prompt mode; fc: train in the base's own chat "
             "template (native tool calls), score in BFCL's function-calling mode")] = "prompt",
    chat_template: Annotated[str | None, typer.Option(
        help="--mode fc: a family's real template (qwen2.5, ...) for a base whose own renders no tools (SmolLM2 "
             "takes qwen2.5): trained and asked through it", show_default="the base's own")] = None,
    verbose: Verbose = False,
) -> None:
    """Fine-tune a base model on a run's dataset with a fixed budget, score the base and the tuned model on BFCL
    the same way, and store both figures beside the run (<out>/downstream/<run-id>/<check-id>/, a new version
    each time: the published run is never written) and as Prefect artifacts."""
    from pydantic import ValidationError

    prepare_prefect_env(verbose)
    with user_errors():
        try:
            from flows.downstream_check import downstream_check as flow
            from tasks.evaluation.downstream import DownstreamConfig

            config = DownstreamConfig(run=run, base=base, steps=steps, lr=lr, batch_size=batch_size, lora_r=lora_r,
                                      seed=seed, calls_only=calls_only, categories=category or ["simple_python"],
                                      limit=limit, max_new_tokens=max_tokens, models_dir=models_dir,
                                      s3_endpoint_url=s3_endpoint_url, engine=engine, slots=slots, seeds=seeds,
                                      mode=mode, chat_template=chat_template)
            from tasks.evaluation.downstream import dataset_url, resolve_run
            from tasks.storage.run_storage import s3_endpoint

            with s3_endpoint(s3_endpoint_url):
                dataset_url(*resolve_run(run))  # a missing or empty run fails here, before Prefect starts
            from tasks.evaluation.model_serving import resolve_engine

            resolve_engine(engine)  # llama-server without llama-cpp-python: refused before Prefect starts too
            from tasks.evaluation.downstream import check_fc_base

            check_fc_base(config)  # --mode fc with a base its template cannot offer tools: refused here as well
            record = flow(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = f"--{str(first['loc'][0]).replace('_', '-')}: " if first["loc"] else ""
            fail(f"{where}{first['msg'].removeprefix('Value error, ')}")
    for name, base_score in record["base"].items():
        tuned_score = record["tuned"][name]
        base_ci, tuned_ci = record["ci95"]["base"][name], record["ci95"]["tuned"][name]
        typer.echo(f"{name:<20} {base_score['items']:>5} items  base {base_score['accuracy']:6.1%} "
                   f"[{base_ci[0]:.1%}, {base_ci[1]:.1%}]  tuned {tuned_score['accuracy']:6.1%} "
                   f"[{tuned_ci[0]:.1%}, {tuned_ci[1]:.1%}]  ({record['delta_accuracy'][name]:+.1%})")
    if "overall" in record["paired"]:
        typer.echo(record["paired"]["overall"]["line"])
    _echo_seeds(record)
    typer.echo(f"written to {record['results']}")


def _echo_seeds(record: dict[str, Any]) -> None:
    """With several seeds: each seed's tuned accuracy and paired difference (the lines above are the first seed's),
    then per category the mean across seeds with its spread."""
    report = record.get("seeds")
    if not report:
        return
    typer.echo(f"seeds {', '.join(str(s) for s in report['seeds'])} (the lines above: seed {report['seeds'][0]})")
    for run in report["per_seed"]:
        overall = run["tuned"]["overall"]
        typer.echo(f"  seed {run['seed']:<5} tuned {overall['accuracy']:6.1%}  "
                   f"{run['paired'].get('overall', {}).get('line', '')}")
    for name, entry in report["across_seeds"].items():
        tuned, delta = entry["tuned_accuracy"], entry["delta"]
        typer.echo(f"{name:<20} tuned mean {tuned['mean']:6.1%} (sd {tuned['sd']:.1%}, {tuned['min']:.1%} to "
                   f"{tuned['max']:.1%}), delta mean {delta['mean']:+.1%} (sd {delta['sd']:.1%})")
        if "line" in entry:
            typer.echo(f"  {entry['line']}")
