"""Progress reporting from the flow to whoever runs it (the CLI's progress bar), without Prefect coupling."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, model_serializer


class ProgressSink(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str, amount: int) -> None: ...

    def finish(self, name: str) -> None: ...

    def stall(self, name: str, message: str | None) -> None:
        """A stage makes no progress: ``message`` (one line: what the run waits for) while it lasts, ``None``
        once it moves again (:class:`toolace.stall_watchdog.StallWatchdog`)."""


class Silent:
    """Reports nowhere (a run started without a progress bar)."""

    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, name: str, amount: int) -> None:
        return None

    def finish(self, name: str) -> None:
        return None

    def stall(self, name: str, message: str | None) -> None:
        return None


class ProgressTo(BaseModel):
    """Where a run reports its progress, handed to the flow as a parameter by whoever runs it (the CLI's bar);
    the Prefect UI shows the sink's kind, not the object."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    sink: Any = None

    def resolved(self) -> ProgressSink:
        return self.sink if self.sink is not None else Silent()

    @model_serializer
    def _shown(self) -> dict[str, str]:
        return {"sink": type(self.sink).__name__ if self.sink is not None else "none"}
