"""The exit statuses of ``toolace`` and the one way a command reports an error: one red line on stderr,
``error: <what is wrong and how to fix it>``, no traceback.

- 0: done (``toolace verify``: the input was read, whatever the verdicts).
- 1: a user error. The command line was understood, but what it points at is wrong (a missing file, a bad config,
  an unreachable endpoint, a missing model file) or the command refused an option's value: every
  :class:`toolace.errors.UserError`.
- 2: a usage error, reported by Typer/Click itself: an unknown option, a missing argument, a value that is not of
  the option's type or one of its choices.
- 3: the run made its dataset, but the dataset failed its expectation suite
  (``flows.toolace_pipeline.DatasetRejected``): it stays in staging, not promoted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from toolace.errors import UserError

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2  # Click's own status for usage errors; toolace never uses it for anything else
EXIT_DATASET_REJECTED = 3

EXIT_STATUS_HELP = "\n\n".join([  # paragraphs: one line each in --help
    "Exit status:",
    f"{EXIT_OK}  done (verify: the input was read, whatever the verdicts)",
    f"{EXIT_USER_ERROR}  user error: a missing file, a bad config or option value, an unreachable endpoint, a missing "
    "model file (one line on stderr)",
    f"{EXIT_USAGE}  usage error: an unknown option, a missing argument, a value not of the option's type or choices",
    f"{EXIT_DATASET_REJECTED}  the dataset failed its expectation suite: the run stays in staging, not promoted",
])


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``error: message`` in one red line on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def exit_code(error: UserError) -> int:
    """3 for a dataset rejected by its expectation suite, else 1."""
    # Looked up, not imported: importing the flows starts Prefect, and a DatasetRejected can only have been
    # raised once its module is loaded.
    rejected = getattr(sys.modules.get("flows.toolace_pipeline"), "DatasetRejected", None)
    return EXIT_DATASET_REJECTED if rejected is not None and isinstance(error, rejected) else EXIT_USER_ERROR


@contextmanager
def user_errors() -> Iterator[None]:
    """A :class:`~toolace.errors.UserError` raised inside ends the command through :func:`fail`."""
    try:
        yield
    except UserError as error:
        fail(str(error), exit_code(error))
