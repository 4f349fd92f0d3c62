"""On-disk cache of LLM responses keyed by the full request, so a rerun never pays twice.

The cache is bounded by age and size (:func:`prune_cache`, run at the start of every run with the config's
``llm_cache_max_age_days`` / ``llm_cache_max_bytes``, and by ``toolace cache prune``): entries older than the age
bound go first, then the oldest entries until the rest fit the size bound; a torn write (a ``.tmp`` file a killed
process left, never read) goes once it is older than :data:`TORN_GRACE_S`. Age is the file's modification time,
the time the answer was received.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_MAX_BYTES = 5 * 1024**3
PRUNE_BUDGET_S = 30.0  # a prune at run start never holds the run longer than this
TORN_GRACE_S = 3600.0  # a .tmp file younger than this may be a write in progress in another process
_DAY_S = 86_400.0
PruneReason = Literal["age", "size", "torn"]


def cache_dir_for(out: str) -> str:
    """LLM responses are cached on local disk: beside the runs (``<out>/cache/llm``) when ``--out`` is local,
    in ``~/.cache/toolace/llm`` when it is a remote URL."""
    if "://" in out and not out.startswith("file://"):
        return str(Path.home() / ".cache" / "toolace" / "llm")
    return str(Path(out.removeprefix("file://")) / "cache" / "llm")


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the body's canonical JSON (keys sorted, compact, UTF-8): orjson, about 7x faster than
    ``json.dumps`` on a request with its tools, which every LLM call pays."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


class ResponseCache:
    """One JSON file per request under ``root/ab/abcdef....json``; writes are atomic renames. Paths are plain
    strings: ``pathlib`` parsing was most of the cache's cost, which every LLM call pays twice."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._base = os.fspath(self.root)
        self._folders: set[str] = set()  # the ab/ folders known to exist

    def _path(self, key: str) -> str:
        return os.path.join(self._base, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # also raised for bytes that are not UTF-8
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a torn write from a killed process: pay for it again
            return None

    def put(self, key: str, response: dict[str, Any]) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        data = orjson.dumps(response, default=str)  # one write, not one per JSON token
        # a name of this process and thread: no other writer can hold it, so no random name is needed
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)


@dataclass(frozen=True)
class PrunedEntry:
    path: str
    bytes: int
    age_s: float
    reason: PruneReason


@dataclass
class PruneReport:
    """What a prune removed (or, dry, would remove) and what it kept. ``complete`` is False when the time
    budget ran out first: the size bound is then not applied (the scan did not see every entry)."""

    root: str
    dry_run: bool
    removed: list[PrunedEntry] = field(default_factory=list)
    kept_entries: int = 0
    kept_bytes: int = 0
    complete: bool = True

    @property
    def removed_bytes(self) -> int:
        return sum(e.bytes for e in self.removed)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        counts = {reason: sum(e.reason == reason for e in self.removed) for reason in ("age", "size", "torn")}
        text = (f"LLM response cache {self.root}: {verb} {len(self.removed)} entries ({self.removed_bytes} bytes: "
                f"{counts['age']} over the age bound, {counts['size']} over the size bound, {counts['torn']} torn "
                f"writes); kept {self.kept_entries} entries ({self.kept_bytes} bytes)")
        return text if self.complete else text + "; stopped at the time budget, size bound not applied"


def _scan(root: str, deadline: float) -> tuple[list[tuple[float, int, str]], list[tuple[float, int, str]], bool]:
    """(mtime, size, path) of every entry and every torn write under ``root``; False when out of time."""
    entries: list[tuple[float, int, str]] = []
    torn: list[tuple[float, int, str]] = []
    try:
        folders = [d.path for d in os.scandir(root) if d.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return entries, torn, True
    for folder in folders:
        if time.monotonic() > deadline:
            return entries, torn, False
        try:
            files = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for item in files:
            try:
                stat = item.stat(follow_symlinks=False)
            except FileNotFoundError:  # read as torn and removed by a reader meanwhile
                continue
            if item.name.endswith(".tmp"):
                torn.append((stat.st_mtime, stat.st_size, item.path))
            elif item.name.endswith(".json"):
                entries.append((stat.st_mtime, stat.st_size, item.path))
    return entries, torn, True


def prune_cache(root: str | Path, max_age_days: float | None = DEFAULT_MAX_AGE_DAYS,
                max_bytes: int | None = DEFAULT_MAX_BYTES, dry_run: bool = False,
                budget_s: float | None = PRUNE_BUDGET_S, now: float | None = None) -> PruneReport:
    """Keep the cache under ``root`` within its bounds, oldest entries first: entries older than
    ``max_age_days``, then the oldest until the rest take at most ``max_bytes``, and torn writes older than
    :data:`TORN_GRACE_S`. ``None`` turns a bound off. Stops after ``budget_s`` seconds (None: no limit). The
    ``ab/`` folders are kept: a running process's cache remembers them as existing. Safe while other
    processes use the cache: a removed entry is a cache miss to them."""
    base = os.fspath(root)
    now = time.time() if now is None else now
    deadline = time.monotonic() + budget_s if budget_s is not None else float("inf")
    report = PruneReport(root=base, dry_run=dry_run)
    entries, torn, report.complete = _scan(base, deadline)
    doomed: list[PrunedEntry] = [PrunedEntry(path, size, now - mtime, "torn") for mtime, size, path in torn
                                 if now - mtime > TORN_GRACE_S]
    entries.sort()  # oldest first
    kept: list[tuple[float, int, str]] = []
    for mtime, size, path in entries:
        if max_age_days is not None and now - mtime > max_age_days * _DAY_S:
            doomed.append(PrunedEntry(path, size, now - mtime, "age"))
        else:
            kept.append((mtime, size, path))
    total = sum(size for _, size, _ in kept)
    first_kept = 0
    if report.complete and max_bytes is not None:
        while total > max_bytes and first_kept < len(kept):
            mtime, size, path = kept[first_kept]
            doomed.append(PrunedEntry(path, size, now - mtime, "size"))
            total -= size
            first_kept += 1
    remaining = kept[first_kept:]
    for entry in doomed:
        if not dry_run:
            if time.monotonic() > deadline:
                report.complete = False
                remaining.extend((now - e.age_s, e.bytes, e.path) for e in doomed[len(report.removed):]
                                 if e.reason != "torn")
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        report.removed.append(entry)
    report.kept_entries, report.kept_bytes = len(remaining), sum(size for _, size, _ in remaining)
    return report
