"""A sandboxed worker subprocess that holds environment instances and answers JSON-lines requests.

The parent (:class:`SandboxWorker`) starts ``python -m tasks.environments.sandbox --handler MODULE:CLASS`` in a
temporary folder of its own (its working directory, ``HOME`` and ``TMPDIR``), with a minimal environment (no
variable of the parent's is passed on: no key can reach it), and talks to it over stdin/stdout, one JSON object
per line. The worker first lowers its own resource limits (``RLIMIT_AS`` for memory, ``RLIMIT_CPU`` for CPU
seconds over its whole life, ``RLIMIT_FSIZE``, ``RLIMIT_CORE``), then imports the handler class, which must live
under ``tasks.environments.``, makes one instance and passes it every request (``handler.handle(request) ->
dict``). Nothing a model wrote is ever evaluated: requests are data, and the handler decides what they may do.

Every read of the parent has a wall-clock deadline (:attr:`SandboxLimits.call_timeout_s` per request unless the
request gives its own, :attr:`SandboxLimits.start_timeout_s` for the start); past it the worker's whole process
group is killed and :class:`SandboxTimeout` raised. A worker that runs out of memory answers once with a fatal
line and exits (:class:`SandboxLimitExceeded`); one killed by the CPU limit (``SIGXCPU``/``SIGKILL``) or that dies
otherwise gives :class:`SandboxLimitExceeded` / :class:`SandboxCrashed` with the reason (the tail of its stderr).
A handler that raises gives :class:`SandboxRequestError` and the worker goes on. The worker's own ``print`` output
goes to its stderr (a file in its folder), so the protocol stream is never corrupted.

Values cross the pipe in a typed JSON (:func:`to_wire`/:func:`from_wire`): tuples, bytes, complex numbers and
dicts with keys that are not strings keep their Python type.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

HANDLER_PACKAGE = "tasks.environments."
MAX_LINE_BYTES = 64 * 1024 * 1024  # an answer longer than this kills the worker
FATAL_EXIT = 3
_TAGS = ("__tuple__", "__bytes__", "__complex__", "__dict__")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one worker: address space (MiB), CPU seconds over its life, wall-clock seconds per request and
    for the start, largest file it may write (MiB)."""

    memory_mb: int = 1024
    cpu_s: int = 120
    call_timeout_s: float = 10.0
    start_timeout_s: float = 30.0
    file_mb: int = 16


class SandboxError(RuntimeError):
    """The worker could not answer; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxTimeout(SandboxError):
    """A request ran past its wall-clock deadline; the worker was killed."""


class SandboxLimitExceeded(SandboxError):
    """The worker ran out of memory or CPU time; it is gone."""


class SandboxCrashed(SandboxError):
    """The worker died or broke the protocol; it is gone."""


class SandboxRequestError(SandboxError):
    """The handler refused or failed one request; the worker is still alive."""


class Handler(Protocol):
    def handle(self, request: dict[str, Any]) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------- typed JSON


def to_wire(value: Any) -> Any:
    """A JSON-able form of a Python value that :func:`from_wire` turns back into it (tuples, bytes, complex
    and non-string dict keys kept); anything else is a TypeError."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [to_wire(v) for v in value]}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, complex):
        return {"__complex__": [value.real, value.imag]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
            return {k: to_wire(v) for k, v in value.items()}
        return {"__dict__": [[to_wire(k), to_wire(v)] for k, v in value.items()]}
    raise TypeError(f"a {type(value).__name__} cannot cross the sandbox pipe")


def from_wire(value: Any) -> Any:
    """The Python value :func:`to_wire` encoded."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            tag, inner = next(iter(value.items()))
            if tag == "__tuple__":
                return tuple(from_wire(v) for v in inner)
            if tag == "__bytes__":
                return base64.b64decode(inner)
            if tag == "__complex__":
                return complex(inner[0], inner[1])
            if tag == "__dict__":
                return {_hashable(from_wire(k)): from_wire(v) for k, v in inner}
        return {k: from_wire(v) for k, v in value.items()}
    return value


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


# ------------------------------------------------------------------------------------------- the parent


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


class SandboxWorker:
    """One worker subprocess serving one handler; use as a context manager (or call :meth:`close`)."""

    def __init__(self, handler: str, limits: SandboxLimits | None = None, label: str = "") -> None:
        module, _, name = handler.partition(":")
        if not module.startswith(HANDLER_PACKAGE) or not name.isidentifier():
            raise ValueError(f"sandbox handler {handler!r} must be 'tasks.environments.<module>:<Class>'")
        self.handler = handler
        self.limits = limits or SandboxLimits()
        self.label = label or handler
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    # ---- life cycle

    def start(self) -> None:
        if self.process is not None:
            return
        self.folder = Path(tempfile.mkdtemp(prefix="toolace-sandbox-"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(_repo_root()),
               "HOME": str(self.folder), "TMPDIR": str(self.folder), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
        command = [sys.executable, "-s", "-m", "tasks.environments.sandbox", "--handler", self.handler,
                   "--memory-mb", str(self.limits.memory_mb), "--cpu-s", str(self.limits.cpu_s),
                   "--file-mb", str(self.limits.file_mb)]
        stderr = (self.folder / "stderr.txt").open("wb")
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                            cwd=self.folder, env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            self._cleanup()
            raise SandboxCrashed(f"{self.label}: cannot start the sandbox worker: {exc}") from exc
        finally:
            stderr.close()
        assert self.process.stdin is not None and self.process.stdout is not None
        os.set_blocking(self.process.stdin.fileno(), False)
        os.set_blocking(self.process.stdout.fileno(), False)
        try:
            ready = self._read(time.monotonic() + self.limits.start_timeout_s, "start")
        except SandboxError:
            self.close()
            raise
        if not ready.get("ready"):
            self._kill()
            raise SandboxCrashed(f"{self.label}: the worker did not start: {ready.get('error', ready)}")

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to stop, kill it when it does not within ``timeout_s``, remove its folder."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(SandboxError, OSError):
                self._write({"op": "close"}, time.monotonic() + 1.0)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._cleanup()

    def __enter__(self) -> SandboxWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # ---- requests

    def request(self, message: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send one request and return the handler's answer; raises a :class:`SandboxError`."""
        if self.process is None:
            self.start()
        if not self.alive:
            raise SandboxCrashed(f"{self.label}: the worker is not running")
        deadline = time.monotonic() + (self.limits.call_timeout_s if timeout_s is None else timeout_s)
        self._write(to_wire(message), deadline)
        answer = self._read(deadline, f"request {message.get('op')!r}")
        if "fatal" in answer:
            self._kill()
            if answer.get("kind") == "memory":
                raise SandboxLimitExceeded(f"{self.label}: memory limit of {self.limits.memory_mb} MiB exceeded "
                                           f"({answer['fatal']})")
            raise SandboxCrashed(f"{self.label}: {answer['fatal']}")
        if not answer.get("ok"):
            raise SandboxRequestError(f"{self.label}: {answer.get('error', 'the handler failed')}")
        value = from_wire(answer.get("value"))
        return value if isinstance(value, dict) else {"value": value}

    def _write(self, message: Any, deadline: float) -> None:
        assert self.process is not None and self.process.stdin is not None
        data = (json.dumps(message, ensure_ascii=False, allow_nan=True) + "\n").encode("utf-8")
        fd = self.process.stdin.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while data:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._kill()
                    raise SandboxTimeout(f"{self.label}: timed out writing a request")
                try:
                    written = os.write(fd, data)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError):
                    raise self._death("writing a request") from None
                data = data[written:]

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._kill()
                    raise SandboxTimeout(f"{self.label}: {what} ran past its wall-clock limit; the worker was killed")
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise self._death(what)
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE_BYTES:
                    self._kill()
                    raise SandboxCrashed(f"{self.label}: answer over {MAX_LINE_BYTES} bytes; the worker was killed")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._kill()
            raise SandboxCrashed(f"{self.label}: unreadable answer ({exc})") from None
        if not isinstance(answer, dict):
            self._kill()
            raise SandboxCrashed(f"{self.label}: answer is not an object")
        return answer

    def _death(self, what: str) -> SandboxError:
        """The error for a worker whose pipe closed: why it died (CPU limit, a signal, an exit status)."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.process.returncode
        tail = self._stderr_tail()
        self._kill()
        if "MemoryError" in tail:
            return SandboxLimitExceeded(f"{self.label}: memory limit of {self.limits.memory_mb} MiB exceeded "
                                        f"during {what}")
        if code == -signal.SIGXCPU:
            return SandboxLimitExceeded(f"{self.label}: CPU time limit of {self.limits.cpu_s} s exceeded during "
                                        f"{what}; the worker was killed")
        if code == -signal.SIGKILL:
            return SandboxLimitExceeded(f"{self.label}: the worker was killed (SIGKILL: CPU hard limit of "
                                        f"{self.limits.cpu_s + 1} s, or out of memory) during {what}")
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        return SandboxCrashed(f"{self.label}: the worker died ({how}) during {what}"
                              + (f": {tail}" if tail else ""))

    def _stderr_tail(self, chars: int = 600) -> str:
        if self.folder is None:
            return ""
        try:
            text = (self.folder / "stderr.txt").read_bytes()[-chars:].decode("utf-8", "replace")
        except OSError:
            return ""
        return " ".join(text.split())

    def _kill(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# ------------------------------------------------------------------------------------------- the worker


def _apply_limits(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 1024 * 1024, file_mb * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def serve(handler_path: str, memory_mb: int, cpu_s: int, file_mb: int) -> int:
    """The worker's loop: limits first, then the handler, then one answer line per request line."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # the handler's prints go to stderr
    sys.stdout = sys.stderr

    def send(answer: dict[str, Any]) -> None:
        protocol.write(json.dumps(answer, ensure_ascii=False, allow_nan=True) + "\n")
        protocol.flush()

    _apply_limits(memory_mb, cpu_s, file_mb)
    module_name, _, class_name = handler_path.partition(":")
    try:
        if not module_name.startswith(HANDLER_PACKAGE):
            raise ValueError(f"handler {handler_path!r} is not under {HANDLER_PACKAGE}")
        handler: Handler = getattr(importlib.import_module(module_name), class_name)()
    except MemoryError:
        send({"fatal": "out of memory while loading the handler", "kind": "memory"})
        return FATAL_EXIT
    except Exception as exc:
        send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return FATAL_EXIT
    send({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = from_wire(json.loads(line))
            if not isinstance(request, dict):
                raise ValueError("a request must be an object")
            if request.get("op") == "close":
                return 0
            answer = {"ok": True, "value": to_wire(handler.handle(request))}
            text = json.dumps(answer, ensure_ascii=False, allow_nan=True)
        except MemoryError as exc:
            del exc
            send({"fatal": "MemoryError", "kind": "memory"})
            return FATAL_EXIT
        except Exception as exc:  # a refused or failed request: the worker goes on
            text = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:2000]}"})
        protocol.write(text + "\n")
        protocol.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sandbox worker (started by tasks.environments.sandbox)")
    parser.add_argument("--handler", required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--file-mb", type=int, default=16)
    args = parser.parse_args(argv)
    return serve(args.handler, args.memory_mb, args.cpu_s, args.file_mb)


if __name__ == "__main__":
    sys.exit(main())
