"""The LLM response cache's bounds: entries over the age bound go, then the oldest until the rest fit the size
bound, torn writes once they are old; a dry run removes nothing; `toolace cache prune` prints what it removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolace.cli import app
from toolace.config import RunConfig
from toolace.llm.response_cache import (
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_BYTES,
    TORN_GRACE_S,
    ResponseCache,
    cache_dir_for,
    prune_cache,
    request_key,
)

DAY = 86_400.0
NOW = 1_900_000_000.0


def put(cache: ResponseCache, name: str, age_days: float, size: int = 100) -> str:
    """One cached answer of about ``size`` bytes, received ``age_days`` before NOW; returns its key."""
    key = request_key({"name": name})
    cache.put(key, {"text": "x" * max(0, size - 11)})
    path = cache._path(key)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return key


def test_age_bound_removes_only_old_entries(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    old, fresh = put(cache, "old", 40), put(cache, "fresh", 2)
    report = prune_cache(tmp_path, max_age_days=30, max_bytes=None, now=NOW)
    assert [(Path(e.path).stem, e.reason) for e in report.removed] == [(old, "age")]
    assert cache.get(old) is None and cache.get(fresh) is not None
    assert report.kept_entries == 1 and report.complete
    assert "removed 1 entries" in report.summary() and "1 over the age bound" in report.summary()


def test_size_bound_removes_oldest_first(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    keys = [put(cache, f"k{i}", age_days=10 - i, size=100) for i in range(5)]  # keys[0] is the oldest
    sizes = [os.path.getsize(cache._path(k)) for k in keys]
    report = prune_cache(tmp_path, max_age_days=None, max_bytes=sum(sizes[3:]), now=NOW)
    assert [Path(e.path).stem for e in report.removed] == keys[:3]
    assert all(e.reason == "size" for e in report.removed)
    assert [cache.get(k) is not None for k in keys] == [False, False, False, True, True]
    assert report.kept_bytes == sum(sizes[3:]) and report.removed_bytes == sum(sizes[:3])
    # a zero bound empties the cache; the ab/ folders stay (a running process remembers them)
    prune_cache(tmp_path, max_age_days=None, max_bytes=0, now=NOW)
    assert not list(tmp_path.rglob("*.json"))
    cache.put(request_key({"after": 1}), {"ok": True})  # the same cache object still writes
    assert list(tmp_path.rglob("*.json"))


def test_age_then_size(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    ancient, older, newer = put(cache, "a", 90), put(cache, "b", 5), put(cache, "c", 1)
    newest_size = os.path.getsize(cache._path(newer))
    report = prune_cache(tmp_path, max_age_days=30, max_bytes=newest_size, now=NOW)
    assert [(Path(e.path).stem, e.reason) for e in report.removed] == [(ancient, "age"), (older, "size")]


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    old = put(cache, "old", 400)
    report = prune_cache(tmp_path, max_age_days=1, max_bytes=0, dry_run=True, now=NOW)
    assert [Path(e.path).stem for e in report.removed] == [old]
    assert cache.get(old) is not None
    assert report.summary().startswith(f"LLM response cache {tmp_path}: would remove 1 entries")


def test_torn_entries(tmp_path: Path) -> None:
    """A .tmp file a killed writer left is removed once older than the grace period (a younger one may be a write
    in progress); a torn .json entry (garbage bytes) is an entry like any other, and its reader drops it."""
    cache = ResponseCache(tmp_path)
    kept = put(cache, "kept", 1)
    folder = Path(cache._path(kept)).parent
    stale, young = folder / f"{kept}.json.123.456.tmp", folder / f"{kept}.json.789.456.tmp"
    stale.write_bytes(b'{"half": ')
    young.write_bytes(b'{"half": ')
    os.utime(stale, (NOW - TORN_GRACE_S - 60, NOW - TORN_GRACE_S - 60))
    os.utime(young, (NOW - 60, NOW - 60))
    garbage_key = request_key({"torn": True})
    garbage = Path(cache._path(garbage_key))
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"\xff\xfe{not json")
    os.utime(garbage, (NOW - 40 * DAY, NOW - 40 * DAY))
    report = prune_cache(tmp_path, max_age_days=30, max_bytes=None, now=NOW)
    assert sorted((Path(e.path).name, e.reason) for e in report.removed) == sorted(
        [(stale.name, "torn"), (garbage.name, "age")])
    assert not stale.exists() and young.exists() and not garbage.exists()
    assert cache.get(kept) is not None


def test_missing_cache_and_time_budget(tmp_path: Path) -> None:
    report = prune_cache(tmp_path / "never-written", now=NOW)
    assert report.removed == [] and report.kept_entries == 0 and report.complete
    cache = ResponseCache(tmp_path)
    for i in range(3):
        put(cache, f"k{i}", 100)
    spent = prune_cache(tmp_path, max_age_days=30, max_bytes=0, budget_s=0.0, now=NOW)  # out of time at once
    assert not spent.complete and spent.removed == []
    assert "size bound not applied" in spent.summary()
    assert len(list(tmp_path.rglob("*.json"))) == 3


def test_config_defaults_and_cache_location() -> None:
    config = RunConfig()
    assert config.llm_cache_max_age_days == DEFAULT_MAX_AGE_DAYS and config.llm_cache_max_bytes == DEFAULT_MAX_BYTES
    assert RunConfig(llm_cache_max_age_days=None, llm_cache_max_bytes=None).llm_cache_max_bytes is None
    with pytest.raises(ValueError):
        RunConfig(llm_cache_max_age_days=0)
    assert cache_dir_for("/data/out") == "/data/out/cache/llm"
    assert cache_dir_for("file:///data/out") == "/data/out/cache/llm"
    assert cache_dir_for("s3://bucket/out") == str(Path.home() / ".cache" / "toolace" / "llm")


def test_cli_prune_prints_what_it_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cache = ResponseCache(cache_dir_for(str(out)))
    now = time.time()
    old, fresh = request_key({"n": "old"}), request_key({"n": "fresh"})
    cache.put(old, {"text": "old answer"})
    cache.put(fresh, {"text": "fresh answer"})
    os.utime(cache._path(old), (now - 10 * DAY, now - 10 * DAY))
    runner = CliRunner()

    dry = runner.invoke(app, ["cache", "prune", "--out", str(out), "--max-age-days", "5", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.strip().splitlines()
    assert lines[0].startswith(f"would remove {cache._path(old)} (age, ") and "10.0 days old" in lines[0]
    assert "would remove 1 entries" in lines[-1]
    assert cache.get(old) is not None

    done = runner.invoke(app, ["cache", "prune", "--out", str(out), "--max-age-days", "5"])
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[0].startswith(f"removed {cache._path(old)} (age, ")
    assert cache.get(old) is None and cache.get(fresh) is not None

    by_size = runner.invoke(app, ["cache", "prune", "--out", str(out), "--max-bytes", "0"])
    assert by_size.exit_code == 0 and "(size, " in by_size.output
    assert cache.get(fresh) is None

    bad = runner.invoke(app, ["cache", "prune", "--out", str(out), "--max-age-days", "0"])
    assert bad.exit_code == 1 and "error: --max-age-days must be positive" in bad.output
