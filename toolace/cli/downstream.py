"""``toolace downstream-check``: train on a run's dataset and score base vs tuned (the work is the
``toolace-downstream-check`` flow)."""

from __future__ import annotations

from typing import Annotated

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
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    calls_only: Annotated[bool, typer.Option(help="Train on assistant turns with calls only")] = False,
    category: Annotated[list[str] | None, typer.Option(help="BFCL category, repeatable",
                                                       show_default="simple_python")] = None,
    limit: Annotated[int | None, typer.Option(help="First N items of each category")] = 100,
    max_tokens: Annotated[int, typer.Option(help="Answer length cap in tokens")] = 128,
    models_dir: Annotated[str | None, typer.Option(help="Where tuned models are kept",
                                                   show_default="~/.cache/toolace/downstream")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// runs",
                                                        show_default="AWS_ENDPOINT_URL, else AWS")] = None,
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
                                      s3_endpoint_url=s3_endpoint_url)
            from tasks.evaluation.downstream import dataset_url, resolve_run
            from tasks.storage.run_storage import configure_s3

            configure_s3(s3_endpoint_url)
            dataset_url(*resolve_run(run))  # a missing or empty run fails here, before Prefect starts
            record = flow(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            fail(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
    for name, base_score in record["base"].items():
        tuned_score = record["tuned"][name]
        base_ci, tuned_ci = record["ci95"]["base"][name], record["ci95"]["tuned"][name]
        typer.echo(f"{name:<20} {base_score['items']:>5} items  base {base_score['accuracy']:6.1%} "
                   f"[{base_ci[0]:.1%}, {base_ci[1]:.1%}]  tuned {tuned_score['accuracy']:6.1%} "
                   f"[{tuned_ci[0]:.1%}, {tuned_ci[1]:.1%}]  ({record['delta_accuracy'][name]:+.1%})")
    if "overall" in record["paired"]:
        typer.echo(record["paired"]["overall"]["line"])
    typer.echo(f"written to {record['results']}")
