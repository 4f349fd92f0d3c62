"""``toolace run``: the whole pipeline, from a corpus to a published dataset."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from toolace.cli.errors import user_errors
from toolace.cli.prefect_env import Verbose, prepare_prefect_env
from toolace.config import RunConfig, embedded_settings, load_run_config
from toolace.errors import UserError


class TaskRunner(enum.StrEnum):
    thread = "thread"
    dask = "dask"


def _default(field: str) -> str:
    """The default of a RunConfig field as --help shows it, with the embedded model's own when it has one.

    The options default to None in the signature so that a config-file value wins unless the flag is given;
    their help shows the effective default instead."""
    value = RunConfig.model_fields[field].default
    shown = {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value
    embedded = embedded_settings().get(field)
    return f"{shown}; {embedded} with the embedded model" if embedded is not None else str(shown)


def run(
    ctx: typer.Context,
    corpus: Annotated[str | None, typer.Option(
        help="Folder or file (text/Markdown/HTML, JSONL, parquet), local or fsspec URL such as s3://bucket/prefix",
        show_default="the bundled sample corpus")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text field of JSONL/parquet corpora",
                                                    show_default=_default("text_column"))] = None,
    reuse_mined: Annotated[bool | None, typer.Option(
        "--reuse-mined/--remine", help="Reuse mining results of earlier runs under --out",
        show_default="reuse")] = None,
    out: Annotated[str | None, typer.Option(help="Output root, local path or URL such as s3://bucket/prefix",
                                            show_default=_default("out"))] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(
        help="S3-compatible endpoint for s3:// paths (MinIO, moto); credentials from the AWS_* variables",
        show_default="AWS_ENDPOINT_URL, else AWS")] = None,
    apis: Annotated[int | None, typer.Option(help="APIs to synthesise", show_default=_default("apis"))] = None,
    pool: Annotated[str | None, typer.Option(help="API pool (.jsonl/.parquet) to start from and grow, "
                                             "e.g. one filled by `toolace import-apis`",
                                             show_default="none")] = None,
    dialogs: Annotated[int | None, typer.Option(help="Accepted dialogs to make",
                                                show_default=_default("dialogs"))] = None,
    llm_base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint (vLLM, SGLang, OpenAI...); its key is read from OPENAI_API_KEY, never "
             "from a flag or the config. OPENAI_BASE_URL applies when neither this flag nor --config sets one",
        envvar="OPENAI_BASE_URL", show_envvar=True, show_default="the embedded SmolLM2 model")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at the endpoint",
                                                  show_default="the one model the endpoint serves")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Maximum LLM requests in flight",
                                                    show_default=_default("concurrency"))] = None,
    target_model: Annotated[str | None, typer.Option(
        help="Model whose loss measures complexity: HF id, local path, .gguf, or 'none'",
        show_default=_default("target_model"))] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML file setting any option; flags override it",
                                                show_default="none")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run folder name; reuse it to resume",
                                               show_default="a new id from the date and time")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed", show_default=_default("seed"))] = None,
    task_runner: Annotated[TaskRunner | None, typer.Option(
        help="thread (batch tasks in this process) or dask (on Dask workers, via prefect-dask)",
        show_default=_default("task_runner"))] = None,
    dask_address: Annotated[str | None, typer.Option(
        help="Existing Dask scheduler, e.g. tcp://10.0.0.5:8786", show_default="a local cluster for the run")]
    = None,
    verbose: Verbose = False,
) -> None:
    """Run the whole pipeline and publish a dataset under OUT/runs/RUN_ID/. With no endpoint, the embedded
    model's settings (8 APIs, 10 dialogs, one decision sample, no self-guidance, no LLM judges) apply to every
    option not set by a flag or the config file."""
    source = ctx.get_parameter_source("llm_base_url")  # Typer's own (vendored) Click enum: compared by name
    if source is not None and source.name == "ENVIRONMENT":
        llm_base_url = None  # OPENAI_BASE_URL comes after the config file's llm_base_url (load_run_config)
    overrides: dict[str, Any] = {
        "corpus": corpus, "text_column": text_column, "reuse_mined": reuse_mined, "out": out,
        "s3_endpoint_url": s3_endpoint_url, "apis": apis,
        "pool": pool, "dialogs": dialogs, "llm_base_url": llm_base_url,
        "llm_model": llm_model, "concurrency": concurrency, "target_model": target_model, "run_id": run_id,
        "seed": seed, "task_runner": task_runner.value if task_runner else None, "dask_address": dask_address,
    }
    with user_errors():
        cfg, note = load_run_config(config, overrides)
        if note:
            typer.secho(note, fg=typer.colors.YELLOW, err=True)
        prepare_prefect_env(verbose)  # before Prefect is imported: its logging reads the environment once
        _run(cfg)


def _run(cfg: Any) -> None:
    from rich.console import Console

    from tasks.storage.run_storage import s3_endpoint

    with s3_endpoint(cfg.s3_endpoint_url):  # fsspec's S3 endpoint for this command's length
        _checked_run(cfg, Console(stderr=True))


def _checked_run(cfg: Any, console: Any) -> None:
    from tasks.corpus.reading import iter_documents
    from tasks.storage.run_storage import check_storage
    from toolace.llm.endpoint import llm_endpoint

    check_storage(cfg.out)  # fail fast on storage that cannot be written, before the model starts
    next(iter_documents(cfg.corpus, cfg.text_column, batch_size=1))  # fail fast on a bad corpus
    if cfg.pool:
        from tasks.apis.importing import read_pool

        read_pool(cfg.pool)  # fail fast on a pool that is not one
    if cfg.target_model and cfg.target_model.endswith(".gguf") and not Path(cfg.target_model).is_file():
        raise UserError(f"target model file {cfg.target_model} does not exist: fix --target-model or pass 'none'")
    from toolace.config import DEFAULT_TARGET_MODEL
    from toolace.model_files import needed_for_run, require

    require(*needed_for_run(cfg.llm_base_url, cfg.target_model, cfg.embedding_model, DEFAULT_TARGET_MODEL))
    from flows.toolace_pipeline import new_run_id, toolace_pipeline
    from toolace.cli.progress_bar import RichProgress
    from toolace.progress import ProgressTo

    cfg = cfg.model_copy(update={"run_id": cfg.run_id or new_run_id()})
    if not cfg.llm_base_url:
        console.print("[yellow]No LLM endpoint configured: starting the embedded SmolLM2-135M model. It is for "
                      "trying the platform; its data is poor. Use --llm-base-url for real data.[/yellow]",
                      soft_wrap=True)
    with llm_endpoint(cfg.llm_base_url, cfg.llm_model) as endpoint:
        cfg = cfg.model_copy(update={"llm_model": endpoint.model})
        with RichProgress(console) as bar:
            summary = _with_run_results(toolace_pipeline, cfg)(cfg, endpoint, ProgressTo(sink=bar))
    _print_summary(console, summary)


def _with_run_results(pipeline: Any, cfg: Any) -> Any:
    """The flow with its own result storage under a local --out (its failure record included; its batch tasks
    keep their results there in any case, see flows.result_storage); its summary is not persisted."""
    from flows.result_storage import flow_result_path

    path = flow_result_path(cfg.out, cfg.run_id)
    return pipeline if path is None else pipeline.with_options(result_storage=path, persist_result=False)


def _print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {escape(str(summary['run_id']))}")
    for column in ("stage", "in", "accepted", "rejected", "reused", "LLM req", "tokens in/out", "cache hits",
                   "time s"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for name, s in summary["stages"].items():
        table.add_row(name, str(s["items_in"]), str(s["accepted"]), str(s["rejected"]), str(s["reused"]),
                      str(s["llm_requests"]),
                      f"{s['tokens_in']}/{s['tokens_out']}", str(s["cache_hits"]), f"{s['wall_time_s']:.1f}")
    console.print(table)
    console.print(f"{summary['accepted_dialogs']} accepted dialogs: {summary['run_dir']}/dataset/"
                  "{toolace,openai}.jsonl", markup=False)  # the folder is the user's: it may hold [...]
