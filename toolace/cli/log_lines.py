"""Progress lines from library code, printed to a terminal as they were written."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console


def line_printer(console: Console) -> Callable[[str], None]:
    """A ``log`` callback for ``console``: each line as written, with no markup read into it (a path may hold
    ``[...]``), no highlighting, and not wrapped at the terminal's width (a long path stays whole: it can be
    copied, and a word of the message is never split from the rest by a line break)."""

    def print_line(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    return print_line
