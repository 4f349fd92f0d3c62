"""BFCL's single-turn test data, read from the data files of the PyPI wheel ``bfcl-eval``.

The wheel is installed with ``--no-deps`` (``toolace fetch-models``, which ``make setup`` runs): its declared
dependencies pin an old numpy and pull many vendor SDKs, and we read only its data. The package folder is found with
:func:`importlib.util.find_spec`, which locates ``bfcl_eval`` without running any of its code (its
``__init__`` is empty anyway; its model handlers, which import the vendor SDKs, are never imported here).

Question files are ``data/BFCL_v4_<category>.json`` and answers ``data/possible_answer/BFCL_v4_<category>.json``,
both JSON Lines despite the name. A question entry holds ``id``, ``question`` (a list of turns, each a list
of messages; the categories here are single-turn) and ``function`` (BFCL function docs); an answer entry holds
``id`` and ``ground_truth``: one ``{function: {param: [acceptable values]}}`` per expected call, where ``""``
among the values means the parameter may be left out.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolace.errors import UserError
from toolace.model_files import fetch_hint, model_package

BFCL_EVAL_VERSION = model_package("bfcl").version
VERSION_PREFIX = "BFCL_v4"

Kind = Literal["simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "relevance"]

# category -> how it is scored (BFCL's eval runner: "parallel" in the name -> order-free parallel checker,
# else "multiple" -> multiple checker, else simple; irrelevance/relevance -> whether the answer decodes
# into a call at all).
CATEGORIES: dict[str, Kind] = {
    "simple_python": "simple",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
    "live_simple": "simple",
    "live_multiple": "multiple",
    "live_parallel": "parallel",
    "live_parallel_multiple": "parallel_multiple",
    "live_irrelevance": "irrelevance",
    "live_relevance": "relevance",
}
DEFAULT_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple")


class BfclDataError(UserError):
    """BFCL's data cannot be found or read, or a category is unknown."""


@dataclass(frozen=True)
class BfclItem:
    id: str
    category: str
    question: list[list[dict[str, Any]]]  # turns, each a list of messages
    functions: list[dict[str, Any]]  # BFCL function docs
    possible_answer: list[dict[str, dict[str, list[Any]]]] | None  # None for (ir)relevance categories

    @property
    def kind(self) -> Kind:
        return CATEGORIES[self.category]


def check_categories(categories: list[str]) -> list[str]:
    """The categories, each once, in the order given; an unknown one is an error naming the valid ones."""
    out: list[str] = []
    for category in categories:
        if category not in CATEGORIES:
            raise BfclDataError(f"unknown BFCL category {category!r}: choose from {', '.join(CATEGORIES)}")
        if category not in out:
            out.append(category)
    if not out:
        raise BfclDataError(f"no BFCL category given: choose from {', '.join(CATEGORIES)}")
    return out


def bfcl_data_dir() -> Path:
    """The ``data`` folder of the installed ``bfcl_eval`` package (nothing of it is imported)."""
    spec = importlib.util.find_spec("bfcl_eval")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BfclDataError(
            f"BFCL's data (bfcl-eval=={BFCL_EVAL_VERSION}) is not installed: run `{fetch_hint(['bfcl'])}`"
        )
    data = Path(locations[0]) / "data"
    if not data.is_dir():
        raise BfclDataError(f"the bfcl_eval package at {locations[0]} has no data folder: reinstall it with "
                            f"`{fetch_hint(['bfcl'])} --force`")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BfclDataError(f"BFCL data file {path} does not exist: reinstall bfcl-eval=={BFCL_EVAL_VERSION} with "
                            f"`{fetch_hint(['bfcl'])} --force`")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BfclDataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise BfclDataError(f"{path}:{number}: expected an object with a string 'id'")
            rows.append(row)
    return rows


def _question_entry(path: Path, row: dict[str, Any]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    question, functions = row.get("question"), row.get("function")
    if not (isinstance(question, list) and question and all(isinstance(turn, list) for turn in question)):
        raise BfclDataError(f"{path}, item {row['id']}: field 'question' is not a list of turns")
    if not (isinstance(functions, list) and all(isinstance(f, dict) and "name" in f for f in functions)):
        raise BfclDataError(f"{path}, item {row['id']}: field 'function' is not a list of function docs")
    return question, functions


def load_category(category: str, limit: int | None = None, data_dir: Path | None = None) -> list[BfclItem]:
    """The first ``limit`` items (all when None) of one category, with their possible answers."""
    check_categories([category])
    data = data_dir or bfcl_data_dir()
    question_path = data / f"{VERSION_PREFIX}_{category}.json"
    rows = _read_jsonl(question_path)
    if limit is not None:
        rows = rows[: max(0, limit)]
    answers: dict[str, Any] | None = None
    answer_path = data / "possible_answer" / f"{VERSION_PREFIX}_{category}.json"
    if CATEGORIES[category] not in ("irrelevance", "relevance"):
        answers = {row["id"]: row.get("ground_truth") for row in _read_jsonl(answer_path)}
    items: list[BfclItem] = []
    for row in rows:
        question, functions = _question_entry(question_path, row)
        possible: list[dict[str, dict[str, list[Any]]]] | None = None
        if answers is not None:
            possible = answers.get(row["id"])
            if not isinstance(possible, list) or not possible:
                raise BfclDataError(f"{answer_path}: no ground_truth for item {row['id']}")
        items.append(BfclItem(id=row["id"], category=category, question=question, functions=functions,
                              possible_answer=possible))
    return items
