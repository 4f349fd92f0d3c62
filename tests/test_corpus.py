"""Tests for tasks.corpus: reading folders and JSONL files in batches, with stable content-hash ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from schemas.records import Document
from tasks.corpus import document_id, html_to_text, iter_documents
from toolace.config import SAMPLE_CORPUS
from toolace.errors import CorpusError


def read_all(corpus: str | Path, **kwargs: object) -> list[Document]:
    return [doc for batch in iter_documents(str(corpus), **kwargs) for doc in batch]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Weather API\n\nGET /forecast returns JSON.\n", encoding="utf-8")
    (root / "b.txt").write_text("Plain text about a thermostat.\n", encoding="utf-8")
    (root / "sub" / "c.html").write_text(
        "<html><head><title>T</title><style>p { color: red; }</style>"
        "<script type='text/javascript'>var secret = 'do not keep';</script></head>"
        "<body><h1>Flight &amp; Status</h1><p>Track <b>flights</b> live.</p>"
        "<SCRIPT>\nalert('x');\n</SCRIPT></body></html>",
        encoding="utf-8",
    )
    (root / "ignored.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    (root / "empty.txt").write_text("   \n\n", encoding="utf-8")
    return root


def test_folder_reads_text_markdown_and_html(folder: Path) -> None:
    docs = read_all(folder)
    by_name = {Path(d.source).name: d for d in docs}
    assert set(by_name) == {"a.md", "b.txt", "c.html"}  # csv ignored, blank file yields nothing

    md = by_name["a.md"]
    assert md.title == "Weather API"  # leading '#' stripped from the title
    assert md.text == "# Weather API\n\nGET /forecast returns JSON."
    assert md.source == str(folder / "a.md")

    assert by_name["b.txt"].title == "Plain text about a thermostat."


def test_html_tags_scripts_and_styles_stripped(folder: Path) -> None:
    html_doc = next(d for d in read_all(folder) if d.source.endswith("c.html"))
    assert "<" not in html_doc.text and ">" not in html_doc.text
    assert "secret" not in html_doc.text
    assert "alert" not in html_doc.text
    assert "color: red" not in html_doc.text
    assert "Flight & Status" in html_doc.text  # entities unescaped
    assert "Track flights live." in html_doc.text


def test_html_to_text_unit() -> None:
    text = html_to_text("<p>A&lt;B</p>\n<script>x()</script><div>two   words</div>")
    assert "x()" not in text
    assert " ".join(text.split()) == "A<B two words"
    assert "  " not in text  # runs of spaces collapse


def test_files_read_in_sorted_order(folder: Path) -> None:
    sources = [Path(d.source).name for d in read_all(folder)]
    assert sources == ["a.md", "b.txt", "c.html"]


def test_single_text_file(tmp_path: Path) -> None:
    path = tmp_path / "one.markdown"
    path.write_text("Just one document.", encoding="utf-8")
    docs = read_all(path)
    assert len(docs) == 1
    assert docs[0].text == "Just one document."


def test_jsonl_custom_text_column(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"body": "first body", "text": "not this"}, {"body": "second body"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_all(path, text_column="body")
    assert [d.text for d in docs] == ["first body", "second body"]
    assert [d.source for d in docs] == [f"{path}#L1", f"{path}#L2"]


def test_jsonl_in_folder_and_ndjson(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_text('{"text": "from ndjson"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "from jsonl"}\n{"text": "  "}\n', encoding="utf-8")
    docs = read_all(tmp_path)
    assert [d.text for d in docs] == ["from ndjson", "from jsonl"]  # blank text row yields nothing


def test_doc_id_is_content_hash() -> None:
    text = "Some document text."
    assert document_id(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    assert len(document_id(text)) == 32
    assert document_id(text) != document_id(text + " ")


def test_same_text_in_two_files_same_id(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("Identical content\n", encoding="utf-8")
    (tmp_path / "two.md").write_text("  Identical content  ", encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"text": "Identical content"}\n', encoding="utf-8")
    (tmp_path / "other.txt").write_text("Different content", encoding="utf-8")
    docs = read_all(tmp_path)
    ids = {Path(d.source).name: d.doc_id for d in docs}
    assert ids["one.txt"] == ids["two.md"] == ids["rows.jsonl#L1"] == document_id("Identical content")
    assert ids["other.txt"] != ids["one.txt"]


def test_ids_stable_across_runs(folder: Path) -> None:
    first = [d.doc_id for d in read_all(folder)]
    second = [d.doc_id for d in read_all(folder)]
    assert first == second
    assert len(set(first)) == len(first)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 100])
def test_batching(tmp_path: Path, batch_size: int) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"doc number {i}"}) for i in range(10)) + "\n", encoding="utf-8")
    batches = list(iter_documents(str(path), batch_size=batch_size))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert len(batches) == -(-10 // batch_size)
    assert [d.text for b in batches for d in b] == [f"doc number {i}" for i in range(10)]


def test_batching_across_files(folder: Path) -> None:
    batches = list(iter_documents(str(folder), batch_size=2))
    assert [len(b) for b in batches] == [2, 1]


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusError) as info:
        read_all(missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        read_all(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "not valid JSON" in message


def test_jsonl_missing_column_names_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"content": "x"}\n', encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        read_all(path, text_column="body")
    message = str(info.value)
    assert "'body'" in message
    assert "line 1" in message
    assert str(path) in message


def test_jsonl_non_object_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('["text"]\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="'text'"):
        read_all(path)


def test_jsonl_non_string_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": 12}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="not a string"):
        read_all(path)


def test_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError) as info:
        read_all(empty)
    assert str(empty) in str(info.value)
    assert "no readable documents" in str(info.value)


def test_folder_with_only_unreadable_suffixes(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no readable documents"):
        read_all(tmp_path)


def test_bundled_sample_corpus_has_at_least_50_documents() -> None:
    docs = read_all(SAMPLE_CORPUS)
    assert len(docs) >= 50
    assert len({d.doc_id for d in docs}) == len(docs)
    assert all(d.text.strip() and d.title for d in docs)
