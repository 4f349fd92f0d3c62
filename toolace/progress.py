"""Progress reporting from the flow to whoever runs it (the CLI's progress bar), without Prefect coupling."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, amount: int) -> None: ...

    def finish(self, name: str) -> None: ...

    def stall(self, name: str, message: str | None) -> None:
        """A stage makes no progress: ``message`` (one line: what the run waits for) while it lasts, ``None``
        once it moves again (:class:`toolace.stall_watchdog.StallWatchdog`)."""


class _Silent:
    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, amount: int) -> None:
        return None

    def finish(self, name: str) -> None:
        return None

    def stall(self, name: str, message: str | None) -> None:
        return None


_sink: ProgressSink = _Silent()


def set_sink(sink: ProgressSink | None) -> None:
    global _sink
    _sink = sink or _Silent()


def sink() -> ProgressSink:
    return _sink
