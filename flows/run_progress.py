"""A run's progress as a Prefect progress artifact (the bar in the UI), beside any other progress sink.

The flow reports stages through :mod:`toolace.progress`; :class:`PrefectProgress` forwards each call to the
sink it wraps (the CLI's bar, or nothing) and updates one progress artifact: the share of the run's stages
done, the current stage counted by its items. A stall (:class:`toolace.stall_watchdog.StallWatchdog`) shows in
the artifact's description while it lasts."""

from __future__ import annotations

from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from toolace.progress import ProgressSink

# The stages that report progress, in order (mining, API synthesis, dialogs), and their weight in the bar.
WEIGHTS = {"mining": 0.3, "api_synthesis": 0.2, "dialogs": 0.5}


class PrefectProgress:
    def __init__(self, inner: ProgressSink, run_id: str) -> None:
        self.inner = inner
        self.done: dict[str, float] = {}
        self.totals: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.description = f"Progress of run {run_id}"
        self.stalled: str | None = None  # the stall shown now (the artifact's description says it)
        artifact = create_progress_artifact(0.0, key="toolace-progress", description=self.description)
        self.artifact_id: UUID | None = artifact if isinstance(artifact, UUID) else None

    @property
    def percent(self) -> float:
        share = 0.0
        for name, weight in WEIGHTS.items():
            if name in self.done:
                share += weight
            elif self.totals.get(name):
                share += weight * min(1.0, self.counts.get(name, 0) / self.totals[name])
        return round(100.0 * share, 1)

    def _update(self) -> None:
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, self.percent,
                                     description=self.description if self.stalled is None
                                     else f"{self.description}: STALLED, {self.stalled}")

    def stage(self, name: str, total: int) -> None:
        self.inner.stage(name, total)
        self.totals[name], self.counts[name] = total, 0
        self._update()

    def advance(self, name: str, amount: int) -> None:
        self.inner.advance(name, amount)
        self.counts[name] = self.counts.get(name, 0) + amount
        self._update()

    def finish(self, name: str) -> None:
        self.inner.finish(name)
        self.done[name] = 1.0
        self._update()

    def stall(self, name: str, message: str | None) -> None:
        """A stall, while it lasts, in the artifact's description (the UI's progress bar), and in the inner sink;
        the watchdog logs it too, which the UI shows among the run's logs."""
        inner = getattr(self.inner, "stall", None)
        if inner is not None:
            inner(name, message)
        self.stalled = message
        self._update()
