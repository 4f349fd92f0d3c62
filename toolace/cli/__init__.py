"""The ``toolace`` command line (the console script ``toolace = "toolace.cli:app"``).

:mod:`toolace.cli.app` registers the commands of the modules beside it; :mod:`toolace.cli.errors` holds the one
error handler and the exit statuses.
"""

from toolace.cli.app import app, main

__all__ = ["app", "main"]
