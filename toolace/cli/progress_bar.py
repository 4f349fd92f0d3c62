"""A rich progress bar fed by the flow's progress events; a stall shows in red beside its stage's bar."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column


class RichProgress:
    def __init__(self, console: Any) -> None:
        self.progress = Progress(TextColumn("{task.description:<18}", table_column=Column(min_width=18)),
                                 BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[note]}", table_column=Column(no_wrap=True,
                                                                                        overflow="ellipsis")),
                                 console=console, transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def stage(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total or None, note="")

    def advance(self, name: str, amount: int) -> None:
        if name in self.tasks:
            self.progress.advance(self.tasks[name], amount)

    def finish(self, name: str) -> None:
        if name in self.tasks:
            task = self.tasks[name]
            done = self.progress.tasks[task].completed
            self.progress.update(task, total=max(done, self.progress.tasks[task].total or 0), completed=done)
            self.progress.stop_task(task)

    def stall(self, name: str, message: str | None) -> None:
        """Shows a stall beside the stage's bar (the latest bar for a stage without one, e.g. verification)
        while it lasts: how long nothing moved and what the run waits for."""
        task = self.tasks.get(name)
        if task is None and self.tasks:
            task = list(self.tasks.values())[-1]
        if task is None:
            return
        note = "" if message is None else f"[bold red]stalled: {escape(message.split(': ', 1)[-1])}"
        self.progress.update(task, note=note)
