"""What the MCP tests share: the real servers' command lines, a temporary git repository, and our own stateful
fixture server (tests/mcp_fixture_server.py) over streamable HTTP on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

FIXTURE = str(Path(__file__).with_name("mcp_fixture_server.py"))
BIN = Path(sys.executable).parent


def server_command(name: str) -> str:
    """A console script installed beside this Python (``mcp-server-time``), as an absolute path."""
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def fixture_command(*args: str) -> list[str]:
    return [sys.executable, FIXTURE, *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_git_repo(folder: Path) -> Path:
    """A git repository with one commit, made with the git command line."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(folder)], check=True, env=env, timeout=30)
    (folder / "README.md").write_text("hello\n")
    subprocess.run(["git", "-C", str(folder), "add", "README.md"], check=True, env=env, timeout=30)
    subprocess.run(["git", "-C", str(folder), "commit", "-q", "-m", "first commit"], check=True, env=env, timeout=30)
    return folder


@contextlib.contextmanager
def http_fixture_server(*args: str) -> Iterator[str]:
    """Our stateful fixture server over streamable HTTP on 127.0.0.1; yields its URL; always stopped."""
    port = free_port()
    process = subprocess.Popen(fixture_command("--transport", "http", "--port", str(port), *args),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fixture server did not start: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
