"""What every stage of one run shares, created by the flow and passed explicitly, and what a stage returns."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from flows.run_progress import PrefectProgress
from schemas.records import StageStats
from tasks.storage.run_storage import RunLocation
from tasks.verification.template_gate import TemplateGate
from toolace import dask_progress
from toolace.config import RunConfig
from toolace.garbage_collection import CollectorPauses
from toolace.llm.endpoint import Endpoint
from toolace.llm.gateway import GatewaySettings
from toolace.llm.shared_loop import LlmRuntime
from toolace.stall_watchdog import StallWatchdog

T = TypeVar("T")

MAX_ATTEMPT_FACTOR = 3  # at most 3x the requested APIs/dialogs are attempted to reach the target


def seeded(seed: int, *parts: object) -> random.Random:
    """A random generator per purpose, so adding draws in one stage never shifts another's."""
    return random.Random(f"{seed}:" + ":".join(map(str, parts)))


class RunContext(BaseModel):
    """One run's settings and services, created by the flow and handed to every stage subflow: the config, the LLM
    endpoint and the gateway settings the batch tasks build their gateways from, the LLM runtime (the event loop
    the batches' requests run on and the endpoint limits their gateways share), the collector settings and their
    freeze points, the Prefect cache scope, where the run is written, the progress sink, the stall watchdog, the
    chat-template gate and the task runner the stages' batch tasks run on. Nothing of it is a module global: the
    flow opens the loop, the collector settings and the storage endpoint for the run's length and closes them
    after. The Prefect UI shows a stage's parameters as the run id, output and model only."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    config: RunConfig
    endpoint: Endpoint
    settings: GatewaySettings
    scope: str  # the Prefect cache key: this run folder and model only
    location: RunLocation
    sink: PrefectProgress
    watchdog: StallWatchdog
    template_gate: TemplateGate
    started_at: str
    task_runner: Any = None  # the stages' task runner (a DaskTaskRunner on the run's cluster); None = threads
    llm: LlmRuntime = Field(default_factory=LlmRuntime)
    collector: CollectorPauses = Field(default_factory=CollectorPauses)

    @property
    def run_id(self) -> str:
        return str(self.config.run_id)

    @property
    def run_url(self) -> str:
        """Everything is written here (the staging folder), promoted to ``runs/<run-id>/`` at the end."""
        return self.location.staging

    @model_serializer
    def _shown(self) -> dict[str, str]:
        return {"run_id": self.run_id, "out": self.config.out, "model": self.endpoint.model}

    @staticmethod
    def now() -> str:
        return dt.datetime.now(dt.UTC).isoformat()


class Carried(BaseModel, Generic[T]):
    """Records handed from one stage to the next inside the flow's process: the Prefect UI shows how many, not
    every record (a stage's parameters are stored by the Prefect API)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    items: list[Any]

    @model_serializer
    def _shown(self) -> str:
        kinds = sorted({type(item).__name__ for item in self.items})
        return f"<{len(self.items)} {'/'.join(kinds) or 'records'}>"


class StageResult(BaseModel, Generic[T]):
    """What a stage hands on: its records, its rows of the manifest's stage table (the dialog stage has three:
    generation, complexity loss, verification), the run files it wrote (relative to the run folder) and the
    figures the manifest and card report. Prefect shows it as its counts and files."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    records: list[Any] = Field(default_factory=list)
    stats: dict[str, StageStats] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    report: dict[str, Any] = Field(default_factory=dict)

    @model_serializer
    def _shown(self) -> dict[str, Any]:
        return {"records": len(self.records), "stats": {k: v.model_dump() for k, v in self.stats.items()},
                "files": self.files}


def run_stage(stage_flow: Any, run: RunContext, *inputs: Any) -> Any:
    """Run one stage's subflow on the run's task runner (Dask when the run uses it; threads otherwise) and return
    its result. Its inputs go in under Prefect's ``quote``: they hold records, never futures, and Prefect would
    otherwise walk (and copy) every record looking for some."""
    if run.task_runner is not None:
        stage_flow = stage_flow.with_options(task_runner=run.task_runner)
    return stage_flow(quote(run), *(quote(value) for value in inputs))


@contextlib.contextmanager
def workers_watched(watchdog: StallWatchdog) -> Iterator[None]:
    """Inside a stage subflow on Dask: the workers' progress events on this flow run's topic reach ``watchdog``
    (:mod:`toolace.dask_progress`); on threads nothing is needed."""
    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if context is None or context.flow_run is None or isinstance(runner, ThreadPoolTaskRunner) or \
            not hasattr(runner, "client"):
        yield
        return
    with dask_progress.listening(runner.client, dask_progress.progress_topic(context.flow_run.id),
                                 watchdog.progress):
        yield


@contextlib.contextmanager
def stage_task_runner(config: RunConfig) -> Iterator[Any]:
    """Where the stages' batch tasks run: ``None`` (threads in this process), or a Dask task runner on an
    existing cluster at ``dask_address`` or on a local cluster of ``dask_workers`` worker processes started for
    the run (every stage's subflow connects to the same cluster)."""
    if config.task_runner != "dask":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        yield DaskTaskRunner(address=config.dask_address)
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=config.dask_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield DaskTaskRunner(address=cluster.scheduler_address)
