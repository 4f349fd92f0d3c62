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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.environments.bfcl_classes import CLASSES, BfclEnvironmentError, bfcl_package_dir, function_docs
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


def check_categories(categories: list[str], valid: list[str] | None = None) -> list[str]:
    """The categories, each once, in the order given; an unknown one (not in ``valid``, by default the
    single-turn categories) is an error naming the valid ones."""
    valid = list(CATEGORIES) if valid is None else valid
    out: list[str] = []
    for category in categories:
        if category not in valid:
            raise BfclDataError(f"unknown BFCL category {category!r}: choose from {', '.join(valid)}")
        if category not in out:
            out.append(category)
    if not out:
        raise BfclDataError(f"no BFCL category given: choose from {', '.join(valid)}")
    return out


def bfcl_data_dir() -> Path:
    """The ``data`` folder of the installed ``bfcl_eval`` package (nothing of it is imported)."""
    try:
        package = bfcl_package_dir()
    except BfclEnvironmentError:
        raise BfclDataError(
            f"BFCL's data (bfcl-eval=={BFCL_EVAL_VERSION}) is not installed: run `{fetch_hint(['bfcl'])}`"
        ) from None
    data = package / "data"
    if not data.is_dir():
        raise BfclDataError(f"the bfcl_eval package at {package} has no data folder: reinstall it with "
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


# ------------------------------------------------------------------------------------------ multi-turn

# BFCL's multi-turn categories: executed against BFCL's classes (tasks.evaluation.bfcl_multi_turn).
MULTI_TURN_CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
MULTI_TURN_CLASS_DOCS = {name: files[1] for name, files in CLASSES.items()}  # class -> its function-doc file


@dataclass(frozen=True)
class MultiTurnEntry:
    """One multi-turn entry as BFCL's loader prepares it (``load_dataset_entry``): ``functions`` are the docs of
    the involved classes in their order, less the held-out ones, which ``missed_functions`` gives by the turn
    that adds them (miss_func); ``ground_truth`` holds one list of call strings per turn."""

    id: str
    category: str
    question: list[list[dict[str, Any]]]
    functions: list[dict[str, Any]]
    missed_functions: dict[int, list[dict[str, Any]]]
    involved_classes: list[str]
    initial_config: dict[str, Any]
    ground_truth: list[list[str]]

    @property
    def long_context(self) -> bool:
        """BFCL loads the scenarios with ``long_context`` for this category (``"long_context" in category``)."""
        return "long_context" in self.category


def all_categories() -> list[str]:
    return [*CATEGORIES, *MULTI_TURN_CATEGORIES]


def check_any_categories(categories: list[str]) -> list[str]:
    """Like :func:`check_categories`, the multi-turn categories included."""
    return check_categories(categories, all_categories())


def multi_turn_function_docs(class_name: str, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """BFCL's function docs of one class (``data/multi_turn_func_doc/<file>``, JSON Lines), read by the
    environments' own reader (:func:`tasks.environments.bfcl_classes.function_docs`)."""
    data = data_dir or bfcl_data_dir()
    try:
        docs = function_docs(class_name, data.parent)
    except BfclEnvironmentError as exc:
        raise BfclDataError(f"{exc}: reinstall bfcl-eval=={BFCL_EVAL_VERSION} with "
                            f"`{fetch_hint(['bfcl'])} --force`") from None
    if not docs:
        raise BfclDataError(f"BFCL function docs of {class_name} are empty: reinstall bfcl-eval=={BFCL_EVAL_VERSION} "
                            f"with `{fetch_hint(['bfcl'])} --force`")
    return docs


def _multi_turn_entry(path: Path, row: dict[str, Any], category: str, ground_truth: Any,
                      docs: dict[str, list[dict[str, Any]]]) -> MultiTurnEntry:
    where = f"{path}, item {row['id']}"
    question, classes = row.get("question"), row.get("involved_classes")
    if not (isinstance(question, list) and question and all(isinstance(turn, list) for turn in question)):
        raise BfclDataError(f"{where}: field 'question' is not a list of turns")
    if not (isinstance(classes, list) and classes and all(c in MULTI_TURN_CLASS_DOCS for c in classes)):
        raise BfclDataError(f"{where}: field 'involved_classes' must list classes among "
                            f"{', '.join(MULTI_TURN_CLASS_DOCS)}")
    config = row.get("initial_config") or {}
    if not isinstance(config, dict):
        raise BfclDataError(f"{where}: field 'initial_config' is not an object")
    if not (isinstance(ground_truth, list) and len(ground_truth) == len(question)
            and all(isinstance(t, list) and all(isinstance(c, str) for c in t) for t in ground_truth)):
        raise BfclDataError(f"{path.parent / 'possible_answer' / path.name}: item {row['id']}: ground_truth must be "
                            f"one list of call strings per turn ({len(question)} turns)")
    functions = [dict(doc) for name in classes for doc in docs[name]]
    missed: dict[int, list[dict[str, Any]]] = {}
    for turn, names in (row.get("missed_function") or {}).items():
        if not (str(turn).isdigit() and int(turn) < len(question) and isinstance(names, list)):
            raise BfclDataError(f"{where}: field 'missed_function' maps turn numbers to lists of names")
        missed[int(turn)] = []
        for name in names:  # as BFCL: the first doc of that name leaves the list for that turn
            index = next((i for i, doc in enumerate(functions) if doc["name"] == name), None)
            if index is not None:
                missed[int(turn)].append(functions.pop(index))
    return MultiTurnEntry(id=row["id"], category=category, question=question, functions=functions,
                          missed_functions=missed, involved_classes=list(classes), initial_config=config,
                          ground_truth=ground_truth)


def load_multi_turn_category(category: str, limit: int | None = None, data_dir: Path | None = None
                             ) -> list[MultiTurnEntry]:
    """The first ``limit`` entries (all when None) of a multi-turn category, with their ground truth."""
    if category not in MULTI_TURN_CATEGORIES:
        raise BfclDataError(f"unknown BFCL multi-turn category {category!r}: choose from "
                            f"{', '.join(MULTI_TURN_CATEGORIES)}")
    data = data_dir or bfcl_data_dir()
    question_path = data / f"{VERSION_PREFIX}_{category}.json"
    rows = _read_jsonl(question_path)
    if limit is not None:
        rows = rows[: max(0, limit)]
    answers = {row["id"]: row.get("ground_truth")
               for row in _read_jsonl(data / "possible_answer" / f"{VERSION_PREFIX}_{category}.json")}
    docs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for name in row.get("involved_classes") or []:
            if name in MULTI_TURN_CLASS_DOCS and name not in docs:
                docs[name] = multi_turn_function_docs(name, data)
    return [_multi_turn_entry(question_path, row, category, answers.get(row["id"]), docs) for row in rows]
