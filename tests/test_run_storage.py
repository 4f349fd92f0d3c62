"""Staging, promotion and the latest pointer; storage problems found before any work (real local S3)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import fsspec
import pytest

from tasks.storage.run_storage import RunLocation, check_storage, is_published, mark_failed, promote, s3_endpoint
from toolace.errors import UserError


def stage(location: RunLocation, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        with fsspec.open(f"{location.staging}/{name}", "wb", auto_mkdir=True) as handle:
            handle.write(data)


def test_promotion_copies_staging_and_writes_latest_last(tmp_path: Path) -> None:
    out = str(tmp_path)
    first = RunLocation(out, "r1")
    stage(first, {"manifest.json": b"{}", "dataset/toolace.jsonl": b"{}\n", "tables/a.parquet": b"x"})
    pointer = promote(first, "abc")
    assert pointer["run_id"] == "r1" and pointer["url"] == first.published
    assert (tmp_path / "runs/r1/dataset/toolace.jsonl").read_bytes() == b"{}\n"
    assert not (tmp_path / "staging/r1").exists()
    assert json.loads((tmp_path / "latest.json").read_text())["manifest_sha256"] == "abc"
    assert is_published(first)
    second = RunLocation(out, "r2")
    stage(second, {"manifest.json": b"{}"})
    promote(second, "def")
    assert json.loads((tmp_path / "latest.json").read_text())["run_id"] == "r2"
    assert (tmp_path / "runs/r1/dataset/toolace.jsonl").exists()  # the earlier run is untouched
    stage(first, {"manifest.json": b"{}"})
    with pytest.raises(UserError, match="already published"):
        promote(first, "again")


def test_a_failed_run_stays_in_staging_marked(tmp_path: Path) -> None:
    location = RunLocation(str(tmp_path), "bad")
    stage(location, {"manifest.json": b"{}"})
    url = mark_failed(location, {"reason": "suite failed"})
    assert json.loads(Path(url).read_text())["reason"] == "suite failed"
    assert not is_published(location) and not (tmp_path / "latest.json").exists()


def test_local_storage_check(tmp_path: Path) -> None:
    check_storage(str(tmp_path / "new" / "folder"))
    assert not list((tmp_path / "new" / "folder").iterdir())  # the probe is removed
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        check_storage(str(blocker / "sub"))


def test_s3_storage_check_and_promotion(s3_server: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("runs-bucket")
    check_storage("s3://runs-bucket/toolace")
    location = RunLocation("s3://runs-bucket/toolace", "r1")
    stage(location, {"manifest.json": b"{}", "dataset/openai.jsonl": b"{}\n"})
    promote(location, "abc")
    assert fs.cat("runs-bucket/toolace/runs/r1/dataset/openai.jsonl") == b"{}\n"
    assert json.loads(fs.cat("runs-bucket/toolace/latest.json"))["url"] == "s3://runs-bucket/toolace/runs/r1"
    assert not fs.exists("runs-bucket/toolace/staging/r1")


def test_missing_bucket_is_named(s3_server: str) -> None:
    with pytest.raises(UserError, match="bucket does not exist"):
        check_storage("s3://no-such-bucket-here/toolace")


def test_wrong_credentials_are_named(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs
    from moto import settings

    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True).mkdir("auth-bucket")
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto now checks every key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    with pytest.raises(UserError, match="refused the credentials"):
        check_storage("s3://auth-bucket/toolace")
    s3fs.S3FileSystem.clear_instance_cache()


def test_unreachable_endpoint_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"connect_timeout": 2, "read_timeout": 2, "retries": 0})
    with pytest.raises(UserError, match="cannot be reached"):
        check_storage("s3://any-bucket/toolace")
    s3fs.S3FileSystem.clear_instance_cache()


def test_endpoint_from_config_reaches_s3fs_while_the_run_lasts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fsspec.config.conf, "s3", {"anon": False})
    with s3_endpoint("http://minio.local:9000"):
        assert fsspec.config.conf["s3"]["client_kwargs"]["endpoint_url"] == "http://minio.local:9000"
        assert fsspec.config.conf["s3"]["anon"] is False
    assert fsspec.config.conf["s3"] == {"anon": False}  # restored: nothing left behind for the next run
    monkeypatch.delitem(fsspec.config.conf, "s3")
    with s3_endpoint("http://other:9000"):
        assert fsspec.config.conf["s3"]["client_kwargs"]["endpoint_url"] == "http://other:9000"
    assert "s3" not in fsspec.config.conf
    with s3_endpoint(None):  # no endpoint: fsspec's configuration untouched
        assert "s3" not in fsspec.config.conf
