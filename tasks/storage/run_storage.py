"""Where a run's files live, and how a finished run is published: staging, promotion, the ``latest`` pointer.

Every path is an fsspec URL (a local path, ``file://``, ``s3://`` through s3fs, ...). A run writes only under
``<out>/staging/<run-id>/``. When it has finished and its dataset passed the expectation suite, the staging
folder is copied to ``<out>/runs/<run-id>/`` and then ``<out>/latest.json`` is written, last, naming it: a
reader that follows ``latest.json`` never sees a half-written run. A run folder under ``runs/`` is never
written again (a rerun of a published run id changes nothing), and a run whose suite failed stays in staging
with ``FAILED.json`` beside its manifest.

What is computed later from a published run (the downstream check) goes beside it, under
``<out>/downstream/<run-id>/`` (:attr:`RunLocation.downstream`), never into ``runs/<run-id>/``: the run folder,
its manifest and ``<out>/latest.json`` stay byte for byte as promoted.

Prefect's persisted task results live in ``<out>/state/prefect-results/<run-id>/`` (see
:mod:`flows.result_storage`): outside staging, so they are neither listed in the manifest nor published, and
removed by :func:`promote` once the run is published (they are never read again).

Before any generation work, :func:`check_storage` writes and deletes a probe object under ``<out>``, so wrong
S3 credentials, a missing bucket or an unreachable endpoint are a clear error at once, not after hours.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec

from toolace.errors import UserError

LATEST = "latest.json"
DOWNSTREAM = "downstream"
PREFECT_RESULTS = "state/prefect-results"
FAILED_MARKER = "FAILED.json"
# A storage error that may pass (a dropped connection, a timeout, a 5xx the client library gave up on) is
# retried this many times with a doubling pause; one that will not (no bucket, no permission) is not.
STORAGE_ATTEMPTS = 4
STORAGE_BACKOFF_S = 0.5
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, UserError)
T = TypeVar("T")


def with_retries(action: Callable[[], T], what: str) -> T:
    """Run one storage action, retrying transient errors; the last error is raised with ``what`` named."""
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return action()
        except _PERMANENT:
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:
            if attempt == STORAGE_ATTEMPTS - 1:
                raise OSError(f"{what} failed after {STORAGE_ATTEMPTS} attempts: {exc}") from exc
            logging.getLogger(__name__).warning("%s failed (%s), retrying", what, exc)
            time.sleep(STORAGE_BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


def put_bytes(data: bytes, url: str) -> None:
    """Write one whole object (all or nothing for object stores), retrying transient errors."""

    def put() -> None:
        with fsspec.open(url, "wb", auto_mkdir=True) as handle:
            handle.write(data)

    with_retries(put, f"writing {url}")


@dataclass(frozen=True)
class RunLocation:
    out: str
    run_id: str

    @property
    def staging(self) -> str:
        return f"{self.out.rstrip('/')}/staging/{self.run_id}"

    @property
    def published(self) -> str:
        return f"{self.out.rstrip('/')}/runs/{self.run_id}"

    @property
    def latest(self) -> str:
        return f"{self.out.rstrip('/')}/{LATEST}"

    @property
    def downstream(self) -> str:
        """Results computed later from the published run (each downstream check a version of its own):
        beside ``runs/``, never inside the published folder."""
        return f"{self.out.rstrip('/')}/{DOWNSTREAM}/{self.run_id}"

    @property
    def prefect_results(self) -> str:
        """Prefect's persisted task results of this run (what a rerun with the same run id resumes from)."""
        return f"{self.out.rstrip('/')}/{PREFECT_RESULTS}/{self.run_id}"


@contextlib.contextmanager
def s3_endpoint(endpoint_url: str | None) -> Iterator[None]:
    """While open, every s3fs filesystem made through fsspec points at ``endpoint_url`` (MinIO, moto, another
    region's gateway ...); on exit fsspec's configuration is what it was. The run context (the flow, a CLI
    command) opens it for its length. Credentials stay where boto looks for them (environment, profile,
    instance role): never in config."""
    if not endpoint_url:
        yield
        return
    before = copy.deepcopy(fsspec.config.conf.get("s3"))
    conf = fsspec.config.conf.setdefault("s3", {})
    conf.setdefault("client_kwargs", {})["endpoint_url"] = endpoint_url
    try:
        yield
    finally:
        if before is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = before


def _explain(url: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "not found" in lowered \
            or isinstance(exc, FileNotFoundError):
        hint = "the bucket does not exist: create it or fix --out"
    elif any(k in lowered for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "forbidden",
                                     "403", "credentials", "permission")) or isinstance(exc, PermissionError):
        hint = "the storage refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile)"
    elif any(k in lowered for k in ("connect", "timeout", "timed out", "name or service", "unreachable")):
        hint = "the storage endpoint cannot be reached: check --s3-endpoint-url / AWS_ENDPOINT_URL and the network"
    else:
        hint = "the output location cannot be written"
    return f"cannot write to {url}: {hint} ({text[:300]})"


def check_storage(out: str) -> None:
    """Write, read back and delete a small probe under ``out``; raise UserError saying what is wrong."""
    probe = f"{out.rstrip('/')}/.toolace-probe-{secrets.token_hex(4)}"
    try:
        fs, path = fsspec.core.url_to_fs(probe)
        parent = path.rsplit("/", 1)[0]
        if "file" in fs.protocol:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as handle:
            handle.write(b"ok")
        if fs.cat_file(path) != b"ok":
            raise OSError("the probe object read back differs")
        fs.rm_file(path)
    except UserError:
        raise
    except Exception as exc:  # every storage backend raises its own kinds: all become one clear message
        raise UserError(_explain(out, exc)) from exc


def is_published(location: RunLocation) -> bool:
    fs, path = fsspec.core.url_to_fs(f"{location.published}/manifest.json")
    return bool(fs.exists(path))


def read_json(url: str) -> Any:
    with fsspec.open(url, "r", encoding="utf-8") as handle:
        return json.load(handle)


def promote(location: RunLocation, manifest_sha256: str) -> dict[str, Any]:
    """Copy the staging folder to ``runs/<run-id>/`` (never over an existing one), then write the
    ``latest`` pointer, last; then remove the staging folder and the run's Prefect results. Returns the
    pointer."""
    fs, staging = fsspec.core.url_to_fs(location.staging)
    _, published = fsspec.core.url_to_fs(location.published)
    if fs.exists(f"{published}/manifest.json"):
        raise UserError(f"run {location.run_id} is already published at {location.published}: choose a new run id")
    files = [f for f in fs.find(staging) if not f.endswith(FAILED_MARKER)]
    for source in files:  # copied one by one: on S3 each is a server-side copy
        target = published + source[len(staging):]
        if "file" in fs.protocol:
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with_retries(lambda s=source, t=target: fs.copy(s, t), f"copying {source} to {target}")
    pointer = {"run_id": location.run_id, "url": location.published, "manifest_sha256": manifest_sha256,
               "promoted_at": dt.datetime.now(dt.UTC).isoformat()}
    put_bytes(json.dumps(pointer, indent=2).encode(), location.latest)  # one object: the atomic switch
    with_retries(lambda: fs.rm(staging, recursive=True), f"removing {location.staging}")
    try:
        remove_prefect_results(location)
    except OSError as exc:  # the run is published: results left behind only take space
        logging.getLogger(__name__).warning("could not remove %s (%s)", location.prefect_results, exc)
    return pointer


def remove_prefect_results(location: RunLocation) -> bool:
    """Remove the run's Prefect results (a published run never reads them again); False when there were none."""
    fs, path = fsspec.core.url_to_fs(location.prefect_results)
    if not fs.exists(path):
        return False
    try:
        with_retries(lambda: fs.rm(path, recursive=True), f"removing {location.prefect_results}")
    except FileNotFoundError:  # removed meanwhile (S3 lists a prefix, not a folder)
        return False
    return True


def mark_failed(location: RunLocation, reason: dict[str, Any]) -> str:
    url = f"{location.staging}/{FAILED_MARKER}"
    marker = {"run_id": location.run_id, "at": dt.datetime.now(dt.UTC).isoformat(), **reason}
    put_bytes(json.dumps(marker, indent=2, default=str).encode(), url)
    return url
