"""``toolace deploy``: apply the Prefect deployments of a prefect.yaml (the work is :mod:`toolace.deploy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolace.cli.errors import user_errors
from toolace.cli.prefect_env import prepare_prefect_env


def deploy(
    prefect_file: Annotated[Path, typer.Option(help="prefect.yaml to apply (relative paths also tried from the "
                                               "repository root)")] = Path("deployments/prefect.yaml"),
    name: Annotated[list[str] | None, typer.Option(help="Deployment to apply (repeatable)", show_default="all")]
    = None,
    pool: Annotated[str | None, typer.Option(help="Work pool for every applied deployment, created as a process "
                                             "pool if missing",
                                             show_default="each deployment's own, toolace-process")] = None,
    api_url: Annotated[str | None, typer.Option(help="Prefect API URL", envvar="PREFECT_API_URL", show_envvar=True,
                                                show_default="the active Prefect profile's")] = None,
) -> None:
    """Apply the Prefect deployments (scheduled refresh included) to a running Prefect server or Cloud."""
    prepare_prefect_env()
    from toolace.deploy import deploy as apply_deployments
    from toolace.deploy import summary_lines

    with user_errors():
        result = apply_deployments(prefect_file, name, pool, api_url)
    for line in summary_lines(result):
        typer.echo(line)
