"""Streaming corpus reader: text/Markdown/HTML, JSONL and parquet files, from a local path or an fsspec URL.

``iter_documents(corpus)`` walks a single file or a folder (recursively, in sorted order; files with other
suffixes inside a folder are ignored) and yields :class:`~schemas.records.CorpusBatch` objects of at most
``batch_size`` items (documents + rejections). It streams: memory holds one output batch plus one text file,
one JSONL line or one parquet record batch at a time.

* Text files (.txt .md .markdown .html .htm; a single file given directly with another suffix is read as
  text): the size is checked with ``fs.size`` before the file is opened; HTML is reduced with
  :func:`html_to_text`.
* JSONL (.jsonl .ndjson): read in binary, in 64 KiB chunks, one line at a time; the text is in
  ``text_column``. Blank lines are skipped silently. ``source`` gets ``#L<line>`` (1-based).
* Parquet (.parquet): read with ``ParquetFile.iter_batches(batch_size, columns=[text_column])``, never the
  whole file. ``source`` gets ``#R<row>`` (0-based row index in the file).

Every document's ``doc_id`` is :func:`document_id` of its stripped text, so the same text gets the same id in
every run and whatever file or format it came from.

Bad input never stops the run. It becomes a rejected :class:`~schemas.records.MinedDocument` in
``batch.rejected`` (``rejected_by`` = ``decided_by`` = the check, ``reason`` naming the file, line or row and
what is wrong, ``doc_id`` = ``"unreadable-" + document_id(source)``):

* ``corpus_read_v1``: binary file (NUL byte in the first 8 KiB), text that is not valid UTF-8 (the reason gives
  the byte offset of the first bad byte), a parquet file that cannot be read, any OSError while reading.
* ``corpus_empty_v1``: an empty or whitespace-only text file, JSONL value or parquet value (null counts as
  empty), and a JSONL or parquet file holding no rows at all.
* ``corpus_size_v1``: a document over ``max_doc_bytes`` bytes: a text file (never opened), a JSONL line (at
  most about ``max_doc_bytes`` + 64 KiB of it is held; the rest is skipped in chunks), a parquet value (its
  UTF-8 length).
* ``corpus_row_v1``: a malformed JSONL line (not JSON, not an object, no ``text_column`` field, the field not a
  string), a parquet file without the ``text_column`` column or whose column does not hold text (one rejection
  for the whole file).

Every supported file yields at least one item. A corpus that does not exist, or a folder holding no supported
file, is a user error raised as :class:`~toolace.errors.CorpusError` before anything is read.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.records import CorpusBatch, Document, MinedDocument
from toolace.errors import CorpusError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES

CORPUS_READ_CHECK = "corpus_read_v1"
CORPUS_EMPTY_CHECK = "corpus_empty_v1"
CORPUS_SIZE_CHECK = "corpus_size_v1"
CORPUS_ROW_CHECK = "corpus_row_v1"

DEFAULT_MAX_DOC_BYTES = 5_000_000
_SNIFF_BYTES = 8 * 1024  # a NUL byte in this many leading bytes marks a binary file
_CHUNK_BYTES = 64 * 1024  # read size for text and JSONL files
_BLOCK_SIZE = 4 * 1024 * 1024  # fsspec read-ahead block: bounds what remote file systems (s3: 50 MB) cache
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.DOTALL | re.IGNORECASE)

Item = Document | MinedDocument


def document_id(text: str) -> str:
    """Content hash: the same text gets the same id in every run, wherever it was read from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def html_to_text(markup: str) -> str:
    return re.sub(r"[ \t]+", " ", html.unescape(_TAG.sub(" ", markup))).strip()


def iter_documents(
    corpus: str, text_column: str = "text", batch_size: int = 64, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
) -> Iterator[CorpusBatch]:
    """Yield the corpus as batches of at most ``batch_size`` documents + rejections; never an empty batch.

    Raises CorpusError (on the first ``next``) when the corpus does not exist or holds no supported file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_doc_bytes < 1:
        raise ValueError(f"max_doc_bytes must be at least 1, got {max_doc_bytes}")
    fs, root = fsspec.core.url_to_fs(corpus)
    reader = _Reader(fs, text_column, batch_size, max_doc_bytes)
    documents: list[Document] = []
    rejected: list[MinedDocument] = []
    for path in _corpus_files(fs, root, corpus):
        source = fs.unstrip_protocol(path) if "://" in corpus else path
        for item in reader.read_file(path, source):
            if isinstance(item, Document):
                documents.append(item)
            else:
                rejected.append(item)
            if len(documents) + len(rejected) >= batch_size:
                yield CorpusBatch(documents=documents, rejected=rejected)
                documents, rejected = [], []
    if documents or rejected:
        yield CorpusBatch(documents=documents, rejected=rejected)


def _corpus_files(fs: fsspec.AbstractFileSystem, root: str, corpus: str) -> list[str]:
    try:
        if not fs.exists(root):
            raise CorpusError(
                f"corpus {corpus} does not exist: pass --corpus a folder, a text/JSONL/parquet file or a URL"
            )
        if fs.isfile(root):
            return [root]
        files = sorted(p for p in fs.find(root) if PurePosixPath(p).suffix.lower() in SUPPORTED_SUFFIXES)
    except OSError as exc:
        raise CorpusError(f"corpus {corpus} cannot be listed: {exc}") from exc
    if not files:
        raise CorpusError(
            f"corpus {corpus} holds no readable documents: expected {', '.join(sorted(SUPPORTED_SUFFIXES))} files"
        )
    return files


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return fallback


def _document(text: str, source: str) -> Document:
    text = text.strip()
    return Document(doc_id=document_id(text), source=source, title=_title(text, source), text=text)


def _reject(check: str, source: str, title: str, reason: str, chars: int = 0) -> MinedDocument:
    return MinedDocument(
        doc_id=f"unreadable-{document_id(source)}",
        source=source,
        title=title,
        chars=chars,
        status="rejected",
        rejected_by=check,
        decided_by=check,
        reason=reason,
    )


def _is_text_type(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
        or pa.types.is_null(dtype)
    )


def _over_limit(text: str, limit: int) -> int | None:
    """UTF-8 length of ``text`` when it is over ``limit`` bytes, else None (encodes only when it must)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text.encode("utf-8"))
    return size if size > limit else None


def _read_head(handle: BinaryIO, count: int) -> bytes:
    """Up to ``count`` leading bytes (fewer only at the end of the file)."""
    head = b""
    while len(head) < count:
        chunk = handle.read(count - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _read_capped(handle: BinaryIO, limit: int) -> bytes | None:
    """The whole file, or None as soon as it proves longer than ``limit`` bytes."""
    data = bytearray()
    while chunk := handle.read(_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _lines(handle: BinaryIO, first: bytes, limit: int) -> Iterator[tuple[int, int, bytearray | None, int]]:
    """Yield ``(line_no, byte_offset, raw, size)`` per line of a binary stream, ``first`` being its opening bytes.

    ``raw`` is None for a line over ``limit`` bytes: such a line is dropped as soon as it passes the limit and the
    rest of it is skipped chunk by chunk, so at most ``limit`` + one chunk of it is ever held.
    """
    line_no, offset, size = 1, 0, 0
    buf: bytearray | None = bytearray()
    chunk = first
    while chunk:
        pos = 0
        while True:
            newline = chunk.find(b"\n", pos)
            end = len(chunk) if newline < 0 else newline
            size += end - pos
            if buf is not None:
                if size > limit:
                    buf = None
                else:
                    buf += chunk[pos:end]
            if newline < 0:
                break
            yield line_no, offset, buf, size
            line_no, offset, size, buf = line_no + 1, offset + size + 1, 0, bytearray()
            pos = newline + 1
        chunk = handle.read(_CHUNK_BYTES)
    if size:
        yield line_no, offset, buf, size


class _Reader:
    """Turns one corpus file into documents and rejections."""

    def __init__(self, fs: fsspec.AbstractFileSystem, column: str, batch_size: int, max_bytes: int) -> None:
        self.fs = fs
        self.column = column
        self.batch_size = batch_size
        self.max_bytes = max_bytes

    def read_file(self, path: str, source: str) -> Iterator[Item]:
        name = PurePosixPath(path).name
        suffix = PurePosixPath(path).suffix.lower()
        if suffix in JSONL_SUFFIXES:
            items = self._jsonl(path, source, name)
        elif suffix in PARQUET_SUFFIXES:
            items = self._parquet(path, source, name)
        else:
            items = self._text(path, source, name, html_markup=suffix in HTML_SUFFIXES)
        try:
            yield from items
        except OSError as exc:
            yield _reject(CORPUS_READ_CHECK, source, name, f"{source}: could not be read ({exc})", self._size(path))

    def _size(self, path: str) -> int:
        try:
            return int(self.fs.size(path) or 0)
        except OSError:
            return 0

    def _open(self, path: str) -> Any:
        return self.fs.open(path, "rb", block_size=_BLOCK_SIZE)

    def _too_big(self, source: str, title: str, what: str, size: int, note: str = "") -> MinedDocument:
        reason = f"{what} is {size:,} bytes, over the max_doc_bytes limit of {self.max_bytes:,}{note}"
        return _reject(CORPUS_SIZE_CHECK, source, title, reason, size)

    def _text(self, path: str, source: str, name: str, html_markup: bool) -> Iterator[Item]:
        size = self.fs.size(path)
        if size is not None and size > self.max_bytes:
            yield self._too_big(source, name, source, size, "; not read")
            return
        with self._open(path) as handle:
            head = _read_head(handle, _SNIFF_BYTES)
            nul = head.find(b"\0")
            if nul >= 0:
                reason = f"{source}: binary file, not text (NUL byte at offset {nul}; UTF-16 text is not supported)"
                yield _reject(CORPUS_READ_CHECK, source, name, reason, size or 0)
                return
            rest = _read_capped(handle, self.max_bytes - len(head)) if len(head) <= self.max_bytes else None
        if rest is None:  # the file system did not know the size
            yield self._too_big(source, name, source, self.max_bytes + 1, " (at least); not read further")
            return
        data = head + rest
        skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        try:
            raw = data[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{source}: not valid UTF-8 (first bad byte at offset {skip + exc.start}); re-save it as UTF-8"
            yield _reject(CORPUS_READ_CHECK, source, name, reason, len(data))
            return
        text = html_to_text(raw) if html_markup else raw
        if not text.strip():
            what = "no text left after removing the HTML markup" if html_markup and raw.strip() else "empty file"
            yield _reject(CORPUS_EMPTY_CHECK, source, name, f"{source}: {what}", len(data))
            return
        yield _document(text, source)

    def _jsonl(self, path: str, source: str, name: str) -> Iterator[Item]:
        rows = 0
        with self._open(path) as handle:
            head = _read_head(handle, _SNIFF_BYTES)
            nul = head.find(b"\0")
            if nul >= 0:
                reason = f"{source}: binary file, not JSON lines (NUL byte at offset {nul})"
                yield _reject(CORPUS_READ_CHECK, source, name, reason, self._size(path))
                return
            for line_no, offset, raw, size in _lines(handle, head, self.max_bytes):
                if raw is not None and (not raw or raw.isspace()):
                    continue  # blank line: not a row
                rows += 1
                row_source, title, where = f"{source}#L{line_no}", f"{name} line {line_no}", f"{source} line {line_no}"
                yield self._jsonl_row(raw, size, offset, row_source, title, where, first=line_no == 1)
        if rows == 0:
            yield _reject(CORPUS_EMPTY_CHECK, source, name, f"{source}: no JSON lines (empty file)", self._size(path))

    def _jsonl_row(
        self, raw: bytearray | None, size: int, offset: int, row_source: str, title: str, where: str, first: bool
    ) -> Item:
        """One non-blank JSONL line as a document or a rejection; ``raw`` is None for an oversized line."""
        if raw is None:
            return self._too_big(row_source, title, where, size, "; skipped")
        column = self.column
        bom = len(codecs.BOM_UTF8) if first and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            line = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{where}: not valid UTF-8 (first bad byte at offset {offset + bom + exc.start} of the file)"
            return _reject(CORPUS_READ_CHECK, row_source, title, reason, size)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
            return _reject(CORPUS_ROW_CHECK, row_source, title, reason, size)
        except (ValueError, RecursionError) as exc:
            reason = f"{where}: not readable JSON ({type(exc).__name__}: {exc})"
            return _reject(CORPUS_ROW_CHECK, row_source, title, reason, size)
        hint = "(set text_column to the field holding the text)"
        if not isinstance(row, dict):
            reason = f"{where}: a JSON {type(row).__name__}, not an object, so no '{column}' field {hint}"
            return _reject(CORPUS_ROW_CHECK, row_source, title, reason, size)
        if column not in row:
            fields = ", ".join(f"'{key}'" for key in list(row)[:10]) or "none"
            reason = f"{where}: no '{column}' field {hint}; fields present: {fields}"
            return _reject(CORPUS_ROW_CHECK, row_source, title, reason, size)
        value = row[column]
        if value is not None and not isinstance(value, str):
            reason = f"{where}: field '{column}' is a JSON {type(value).__name__}, not a string {hint}"
            return _reject(CORPUS_ROW_CHECK, row_source, title, reason, size)
        if value is None or not value.strip():
            what = "null" if value is None else "empty"
            return _reject(CORPUS_EMPTY_CHECK, row_source, title, f"{where}: field '{column}' is {what}", size)
        return _document(value, row_source)

    def _parquet(self, path: str, source: str, name: str) -> Iterator[Item]:
        column = self.column
        with self._open(path) as handle:
            try:
                parquet = pq.ParquetFile(handle)
                schema = parquet.schema_arrow
            except (pa.ArrowException, OSError, ValueError) as exc:
                reason = f"{source}: not a readable parquet file ({exc})"
                yield _reject(CORPUS_READ_CHECK, source, name, reason, self._size(path))
                return
            hint = "set text_column to the column holding the text"
            if column not in schema.names:
                present = ", ".join(f"'{n}'" for n in schema.names[:20]) or "none"
                reason = f"{source}: no '{column}' column ({hint}); columns present: {present}"
                yield _reject(CORPUS_ROW_CHECK, source, name, reason, self._size(path))
                return
            dtype = schema.field(column).type
            if not _is_text_type(dtype):
                reason = f"{source}: column '{column}' holds {dtype}, not text ({hint})"
                yield _reject(CORPUS_ROW_CHECK, source, name, reason, self._size(path))
                return
            row_no = 0
            batches = parquet.iter_batches(batch_size=self.batch_size, columns=[column])
            while True:
                try:
                    record_batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError, ValueError) as exc:
                    reason = f"{source} row {row_no}: parquet data unreadable from this row on ({exc})"
                    yield _reject(CORPUS_READ_CHECK, f"{source}#R{row_no}", f"{name} row {row_no}", reason)
                    return
                values = record_batch.column(0).to_pylist()
                del record_batch
                for value in values:
                    yield self._parquet_value(value, source, name, row_no)
                    row_no += 1
        if row_no == 0:
            yield _reject(CORPUS_EMPTY_CHECK, source, name, f"{source}: no rows", self._size(path))

    def _parquet_value(self, value: str | None, source: str, name: str, row_no: int) -> Item:
        row_source, title, where = f"{source}#R{row_no}", f"{name} row {row_no}", f"{source} row {row_no}"
        if value is None or not value.strip():
            what = "null" if value is None else "empty"
            return _reject(CORPUS_EMPTY_CHECK, row_source, title, f"{where}: column '{self.column}' is {what}")
        size = _over_limit(value, self.max_bytes)
        if size is not None:
            return self._too_big(row_source, title, where, size, "; skipped")
        return _document(value, row_source)
