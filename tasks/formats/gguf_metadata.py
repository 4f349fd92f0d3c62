"""A GGUF file's key-value metadata (its chat template, its special tokens), read without its tensors.

gguf-py's ``GGUFReader`` parses the whole file into numpy views, one per array element: 3.4 to 4.6 s on 2 cores
for the 98 MB SmolLM2 GGUF, paid by every ``toolace run`` whose target model is a GGUF (the default) before any work.
Reading the header's key-value pairs alone, straight from a memory map, takes milliseconds. The layout is GGUF's
(versions 2 and 3, either byte order): magic ``GGUF``, version (u32), tensor count (u64), key-value count (u64),
then each pair as a string key, a value type (u32) and the value; a string is a u64 length and UTF-8 bytes; an
array is an element type (u32), a count (u64) and the elements.

A file that is not a GGUF, or whose header is cut or claims more than the file holds, raises
:class:`GGUFMetadataError` naming the file and the byte offset, never reads past the end.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
STRING, ARRAY = 8, 9
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
MAX_DEPTH = 3  # arrays of arrays nest this deep at most (GGUF files in use have one level)


class GGUFMetadataError(ValueError):
    """The file is not a GGUF, or its metadata is cut or inconsistent: ``"<path>: <problem>"``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class _Cursor:
    def __init__(self, data: mmap.mmap | bytes, order: str, where: str) -> None:
        self.data, self.order, self.where, self.at = data, order, where, 0

    def fail(self, problem: str) -> GGUFMetadataError:
        return GGUFMetadataError(self.where, f"{problem} at byte {self.at}")

    def take(self, size: int) -> int:
        start = self.at
        if size < 0 or start + size > len(self.data):
            raise self.fail(f"the metadata runs past the end of the file ({len(self.data)} bytes)")
        self.at += size
        return start

    def scalar(self, code: str) -> Any:
        return struct.unpack_from(self.order + code, self.data, self.take(struct.calcsize(code)))[0]

    def string(self, keep: bool = True) -> str | None:
        start = self.take(self.scalar("Q"))
        return bytes(self.data[start:self.at]).decode("utf-8", errors="replace") if keep else None

    def value(self, kind: int, keep: bool, depth: int = 0) -> Any:
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind == STRING:
            return self.string(keep)
        if kind != ARRAY:
            raise self.fail(f"unknown value type {kind}")
        if depth >= MAX_DEPTH:
            raise self.fail(f"arrays nested deeper than {MAX_DEPTH}")
        element, count = self.scalar("I"), self.scalar("Q")
        if element in SCALARS:  # read (or skipped) in one step
            size = struct.calcsize(SCALARS[element])
            start = self.take(size * count)
            return list(struct.unpack_from(f"{self.order}{count}{SCALARS[element]}", self.data, start)) if keep \
                else None
        if count > (len(self.data) - self.at) // 8:  # every string or array takes at least 8 bytes
            raise self.fail(f"an array of {count} elements cannot fit in the file")
        items = [self.value(element, keep, depth + 1) for _ in range(count)]
        return items if keep else None


def read_metadata(path: str | Path, keys: Collection[str]) -> dict[str, Any]:
    """The values of ``keys`` in the GGUF file at ``path`` (a key the file lacks is left out): numbers, booleans,
    strings (UTF-8, undecodable bytes replaced) and lists for arrays. Only the header is read."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != MAGIC:
                raise GGUFMetadataError(where, f"not a GGUF file (it does not start with {MAGIC!r})")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _read(data, set(keys), where)
    except OSError as exc:
        raise GGUFMetadataError(where, f"cannot be read: {exc.strerror or exc}") from exc


def _read(data: mmap.mmap, wanted: set[str], where: str) -> dict[str, Any]:
    (version,) = struct.unpack_from("<I", data, 4) if len(data) >= 8 else (0,)
    order = "<" if version & 0xFFFF else ">"  # a big-endian file's version reads as a multiple of 65536 here
    cursor = _Cursor(data, order, where)
    cursor.take(4)
    version = cursor.scalar("I")
    if version not in (2, 3):
        raise cursor.fail(f"GGUF version {version} is not supported (2 and 3 are)")
    cursor.scalar("Q")  # the tensor count: the tensors are not read
    pairs = cursor.scalar("Q")
    if pairs > (len(data) - cursor.at) // 12:  # each pair takes at least 12 bytes
        raise cursor.fail(f"{pairs} key-value pairs cannot fit in the file")
    found: dict[str, Any] = {}
    for _ in range(pairs):
        key = cursor.string() or ""
        kind = cursor.scalar("I")
        value = cursor.value(kind, keep=key in wanted)
        if key in wanted:
            found[key] = value
        if len(found) == len(wanted):
            break
    return found
