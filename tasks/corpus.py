"""Reading a corpus in batches: a folder of text/Markdown/HTML files or JSONL files, local or fsspec URL."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath

import fsspec

from schemas.records import Document
from toolace.errors import CorpusError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.DOTALL | re.IGNORECASE)


def document_id(text: str) -> str:
    """Content hash: the same text gets the same id in every run, wherever it was read from."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def html_to_text(markup: str) -> str:
    return re.sub(r"[ \t]+", " ", html.unescape(_TAG.sub(" ", markup))).strip()


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return fallback


def _make(text: str, source: str) -> Document | None:
    text = text.strip()
    if not text:
        return None
    return Document(doc_id=document_id(text), source=source, title=_title(text, source), text=text)


def _corpus_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    if not fs.exists(root):
        raise CorpusError(f"corpus {root} does not exist: pass --corpus a folder, a JSONL file or a URL")
    if fs.isfile(root):
        files = [root]
    else:
        files = sorted(p for p in fs.find(root) if PurePosixPath(p).suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES)
    if not files:
        raise CorpusError(
            f"corpus {root} holds no readable documents: expected {', '.join(sorted(TEXT_SUFFIXES | JSONL_SUFFIXES))}"
        )
    return files


def iter_documents(corpus: str, text_column: str = "text", batch_size: int = 64) -> Iterator[list[Document]]:
    """Yield documents in batches; memory holds one batch and one file at a time."""
    fs, root = fsspec.core.url_to_fs(corpus)
    batch: list[Document] = []
    for path in _corpus_files(fs, root):
        suffix = PurePosixPath(path).suffix.lower()
        source = fs.unstrip_protocol(path) if "://" in corpus else path
        if suffix in JSONL_SUFFIXES:
            docs = _jsonl_documents(fs, path, source, text_column)
        else:
            with fs.open(path, "r", encoding="utf-8", errors="replace") as handle:
                raw = handle.read()
            text = html_to_text(raw) if suffix in {".html", ".htm"} else raw
            docs = iter([d for d in [_make(text, source)] if d])
        for doc in docs:
            batch.append(doc)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _jsonl_documents(fs: fsspec.AbstractFileSystem, path: str, source: str, column: str) -> Iterator[Document]:
    with fs.open(path, "r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{source} line {line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or column not in row:
                raise CorpusError(
                    f"{source} line {line_no}: no '{column}' field (set text_column to the field holding the text)"
                )
            if not isinstance(row[column], str):
                raise CorpusError(f"{source} line {line_no}: field '{column}' is not a string")
            doc = _make(row[column], f"{source}#L{line_no}")
            if doc:
                yield doc
