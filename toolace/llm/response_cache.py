"""On-disk cache of LLM responses keyed by the full request, so a rerun never pays twice."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import orjson


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
