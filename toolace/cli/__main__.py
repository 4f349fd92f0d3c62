"""``python -m toolace.cli``: the ``toolace`` command."""

from toolace.cli.app import main

main()
