"""The ``toolace`` application: every command registered in one place.

Each command lives in its own module and knows nothing of this one: the modules import only
:mod:`toolace.cli.errors` (the one error handler and the exit statuses) and :mod:`toolace.cli.prefect_env`, and
this module imports them, so there is no import cycle.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

from toolace.cli.cache import cache_app
from toolace.cli.datasets import convert, import_apis, verify
from toolace.cli.deploy import deploy
from toolace.cli.downstream import downstream_check
from toolace.cli.errors import EXIT_STATUS_HELP
from toolace.cli.evaluate import eval_command
from toolace.cli.mcp import serve_mcp
from toolace.cli.models import fetch_models, serve_llm
from toolace.cli.run import run
from toolace.cli.train import train

DISTRIBUTION = "toolace-platform"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Make function-calling training data the ToolACE way, as Prefect flows.",
                  epilog=f"{EXIT_STATUS_HELP}\n\nLLM endpoints take their key from OPENAI_API_KEY (never from a "
                         "flag or a config file); OPENAI_BASE_URL is the endpoint when none is given.")


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"toolace {version()}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help=f"Print the installed {DISTRIBUTION} version and exit")] = False,
) -> None:
    """Make function-calling training data the ToolACE way, as Prefect flows."""


app.command()(run)
app.command("import-apis")(import_apis)
app.command()(verify)
app.command()(convert)
app.command("serve-llm")(serve_llm)
app.command("serve-mcp")(serve_mcp)
app.command("fetch-models")(fetch_models)
app.command()(deploy)
app.command("eval")(eval_command)
app.command("train")(train)
app.command("downstream-check")(downstream_check)
app.add_typer(cache_app, name="cache")


def main() -> None:
    app()
