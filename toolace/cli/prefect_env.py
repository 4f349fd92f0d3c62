"""The Prefect environment of a ``toolace`` command that runs flows, set before Prefect is imported.

Flow and task run logs go to the Prefect API at INFO (``PREFECT_LOGGING_LEVEL`` is left alone), so a finished
run opened in the Prefect UI shows them; only Prefect's console handler is raised to WARNING
(``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``, an override of ``handlers.console.level`` in Prefect's
``logging.yml``), so the terminal shows the progress bar, warnings and errors. ``--verbose`` shows INFO there
too. Variables the user set win, except the console level under ``--verbose``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Annotated

import typer

CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    CONSOLE_LEVEL: "WARNING",
}

Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", help=f"Show the flow's INFO logs on the terminal too (they always reach the Prefect API and "
                            f"UI); sets {CONSOLE_LEVEL}=INFO")]


def prepare_prefect_env(verbose: bool = False, environ: MutableMapping[str, str] | None = None) -> None:
    """Offline-friendly defaults and a quiet console for a local run (the user's own settings win)."""
    environ = os.environ if environ is None else environ
    for key, value in DEFAULTS.items():
        environ.setdefault(key, value)
    if verbose:
        environ[CONSOLE_LEVEL] = "INFO"
