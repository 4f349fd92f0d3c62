"""On-disk cache of LLM responses keyed by the full request, so a rerun never pays twice."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the body's canonical JSON (keys sorted, compact, UTF-8): orjson, about 7x faster than
    ``json.dumps`` on a request with its tools, which every LLM call pays."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


class ResponseCache:
    """One JSON file per request under ``root/ab/abcdef....json``; writes are atomic renames."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._folders: set[Path] = set()  # the ab/ folders known to exist

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            path.unlink(missing_ok=True)  # a torn write from a killed process: pay for it again
            return None

    def put(self, key: str, response: dict[str, Any]) -> None:
        path = self._path(key)
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        data = orjson.dumps(response, default=str)  # one write, not one per JSON token
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
