"""Where Prefect keeps a run's task results: beside the run, under ``<out>/state/prefect-results/<run-id>/``.

A batch task persists its result (records and LLM counts) keyed by its cache key; a rerun with the same
``--run-id`` finds the finished batches there and skips them. Kept in Prefect's default local storage
(``~/.prefect/storage``), they would only help a rerun on the same machine: here they live under ``--out``, so a
run started on one machine or Dask worker resumes on another that sees the same ``--out``, and an S3 run resumes
from S3.

Why ``state/`` and not the staging folder: everything under ``staging/<run-id>/`` is listed in the manifest and
copied to ``runs/<run-id>/`` when the run is published, and Prefect's pickled results belong in neither. Once a
run is published its results are never read again (a rerun of a published run id does nothing), so
:func:`tasks.storage.run_storage.promote` removes ``state/prefect-results/<run-id>/`` after writing the
``latest`` pointer;
a run that failed its expectation suite keeps them, so its rerun reuses every finished batch.

The storage is an unsaved block built from the URL (a ``LocalFileSystem`` for a local path, a
``RemoteFileSystem`` for any other fsspec URL): nothing is written to the Prefect server, and credentials stay
where boto (or the fsspec backend) finds them, the environment or a profile; only the endpoint URL goes into
the block's settings. The block applies to one flow run: :func:`results_beside_run` enters a copy of the flow
run's context whose result store writes there (Prefect serialises that store for Dask workers), and leaves it
on exit; no setting or environment variable of the process is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext
from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from tasks.storage.run_storage import RunLocation
from toolace.errors import UserError

S3_PROTOCOLS = ("s3", "s3a")


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def result_storage_for(url: str, s3_endpoint_url: str | None = None) -> WritableFileSystem:
    """An unsaved result-storage block for the folder ``url`` (a path or an fsspec URL). For ``s3://`` the
    endpoint goes into the block's settings (so a Dask worker in another process reaches the same endpoint);
    the credentials never do."""
    if is_local(url):
        return LocalFileSystem(basepath=str(Path(url.removeprefix("file://")).expanduser().resolve()))
    settings: dict[str, Any] = {}
    if url.split("://", 1)[0] in S3_PROTOCOLS and s3_endpoint_url:
        settings["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
    try:
        return RemoteFileSystem(basepath=url, settings=settings)
    except ValueError as exc:  # pydantic's error for a URL without a location after the scheme
        raise UserError(f"cannot keep Prefect results under {url}: {exc}") from exc


def run_result_storage(out: str, run_id: str, s3_endpoint_url: str | None = None) -> WritableFileSystem:
    """The result storage of run ``run_id`` under ``out``: ``<out>/state/prefect-results/<run-id>/``."""
    return result_storage_for(RunLocation(out, run_id).prefect_results, s3_endpoint_url)


def flow_result_path(out: str, run_id: str) -> Path | None:
    """For ``toolace run`` with a local ``--out``: the run's results folder as a path, for the flow's own
    ``result_storage`` (a flow takes only a saved block or a path), so that not even the flow's failure record
    lands in the local Prefect storage. None for a remote ``--out``: saving a block per run is not worth a
    record that no resume reads (the batch tasks' results are under ``--out`` in any case)."""
    if not is_local(out):
        return None
    return Path(RunLocation(out, run_id).prefect_results.removeprefix("file://")).expanduser().resolve()


@contextmanager
def results_beside_run(out: str, run_id: str, s3_endpoint_url: str | None = None) -> Iterator[WritableFileSystem]:
    """Within a flow run: every task submitted inside the block (threads, Dask workers and subflows included)
    persists its result in the run's own storage under ``out``. Outside a flow run, only the storage is
    yielded."""
    storage = run_result_storage(out, run_id, s3_endpoint_url)
    context = FlowRunContext.get()
    if context is None:
        yield storage
        return
    store = context.result_store.model_copy(update={"result_storage": storage})
    with context.model_copy(update={"result_store": store}):  # Prefect's contexts are entered as copies
        yield storage
