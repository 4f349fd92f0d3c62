"""A rich progress bar fed by the flow's progress events."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress:
    def __init__(self, console: Any) -> None:
        self.progress = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def stage(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total or None)

    def advance(self, name: str, amount: int) -> None:
        if name in self.tasks:
            self.progress.advance(self.tasks[name], amount)

    def finish(self, name: str) -> None:
        if name in self.tasks:
            task = self.tasks[name]
            done = self.progress.tasks[task].completed
            self.progress.update(task, total=max(done, self.progress.tasks[task].total or 0), completed=done)
            self.progress.stop_task(task)
