"""benchmarks/downstream_comparison.py grows a comparison by items: only what an answers file lacks is asked, and the
new answers join the file whole."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("downstream_comparison", ROOT / "benchmarks/downstream_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(*pairs: tuple[str, str, bool]) -> str:
    return "".join(json.dumps({"id": i, "category": c, "valid": v}) + "\n" for c, i, v in pairs)


def test_only_unanswered_items_are_asked_and_join_whole(tmp_path: Path) -> None:
    script = load_script()
    item = SimpleNamespace
    items = {"multi_turn_base": [item(id="mt_0"), item(id="mt_1"), item(id="mt_2")],
             "irrelevance": [item(id="irr_0")]}
    answers = tmp_path / "base.jsonl"
    assert script.unanswered(items, answers) == items  # nothing answered yet: everything is asked

    answers.write_text(rows(("multi_turn_base", "mt_0", False), ("multi_turn_base", "mt_1", True),
                            ("irrelevance", "irr_0", True)).rstrip("\n"))  # a file without its last newline
    left = script.unanswered(items, answers)
    assert {c: [i.id for i in v] for c, v in left.items()} == {"multi_turn_base": ["mt_2"]}

    more = tmp_path / "base.more.jsonl"
    more.write_text(rows(("multi_turn_base", "mt_2", False)))
    script.join_answers(answers, more)
    assert not more.exists() and not list(tmp_path.glob("*.joining"))
    assert script.outcomes(answers) == {"multi_turn_base": {"mt_0": False, "mt_1": True, "mt_2": False},
                                        "irrelevance": {"irr_0": True}}
    assert script.unanswered(items, answers) == {}


def test_a_stopped_runs_answers_are_kept_and_only_the_rest_asked(tmp_path: Path) -> None:
    script = load_script()
    answers, more = tmp_path / "c.jsonl", tmp_path / "c.more.jsonl"
    answers.write_text(rows(("multi_turn_base", "mt_0", False)))
    script.stopped_run(more).write_text(
        rows(("multi_turn_base", "mt_1", True), ("multi_turn_base", "mt_0", True), ("multi_turn_base", "mt_2", False))
        + '{"id": "mt_3", "category": "multi_tu')  # the kill came mid-write
    assert script.keep_stopped_answers(answers, more) == 2
    # mt_0 keeps the verdict the answers file had; the cut row is not an answer, so mt_3 is asked again
    assert script.outcomes(answers) == {"multi_turn_base": {"mt_0": False, "mt_1": True, "mt_2": False}}
    assert not script.stopped_run(more).exists() and not more.exists()
    assert script.keep_stopped_answers(answers, more) == 0  # nothing left to take up


class StoppingSource:
    """Answers BFCL prompt-mode chats with prose, one item at a time, and is stopped (as by ^C) after ``stop_after``."""

    description = "prose"
    chunk_size = 1

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after, self.asked = stop_after, 0

    def answer(self, chats: list) -> list:
        from tasks.evaluation.bfcl_prompting import Answer

        if self.stop_after is not None and self.asked >= self.stop_after:
            raise KeyboardInterrupt
        self.asked += len(chats)
        return [Answer("I cannot answer that with these functions.") for _ in chats]


def test_a_comparison_stopped_half_way_goes_on_where_it_stopped(tmp_path: Path) -> None:
    from tasks.evaluation.bfcl_eval import load_items

    script = load_script()
    items = load_items(["irrelevance"], 5)
    answers, more = tmp_path / "base.jsonl", tmp_path / "base.more.jsonl"
    try:
        script.answer_into(answers, more, script.unanswered(items, answers), StoppingSource(stop_after=3), True)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the source was meant to be stopped")
    assert not answers.exists() and not more.exists()  # nothing that looks like a whole answers file
    assert len(script.stopped_run(more).read_text().splitlines()) == 3

    assert script.keep_stopped_answers(answers, more) == 3
    left = script.unanswered(items, answers)
    assert [i.id for i in left["irrelevance"]] == [i.id for i in items["irrelevance"][3:]]
    source = StoppingSource()
    script.answer_into(answers, more, left, source, True)
    assert source.asked == 2  # only the two the stopped run had not answered
    verdicts = script.outcomes(answers)["irrelevance"]
    assert list(verdicts) == [i.id for i in items["irrelevance"]] and all(verdicts.values())
    assert not script.stopped_run(more).exists() and not more.exists()


def test_a_stopped_runs_rows_without_a_models_answer_are_asked_again(tmp_path: Path) -> None:
    script = load_script()
    answers, more = tmp_path / "c.jsonl", tmp_path / "c.more.jsonl"
    stopped = [
        {"id": "mt_0", "category": "multi_turn_base", "valid": False, "error_type": "multi_turn:inference_error",
         "error": "the model gave no answer: context_length: request refused with HTTP 400"},  # the model's limit
        {"id": "mt_1", "category": "multi_turn_base", "valid": False, "error_type": "multi_turn:inference_error",
         "error": "the model gave no answer: connection: the server is not there"},  # killed before the run
        {"id": "s_0", "category": "simple_python", "valid": False, "error_type": "generation_error:context_length",
         "answer_error": "context_length: the prompt does not fit"},
        {"id": "s_1", "category": "simple_python", "valid": False, "error_type": "generation_error:connection",
         "answer_error": "connection: refused"},
        {"id": "s_2", "category": "simple_python", "valid": False, "error_type": "value_error", "answer_error": None},
    ]
    script.stopped_run(more).write_text("".join(json.dumps(row) + "\n" for row in stopped))
    assert script.keep_stopped_answers(answers, more) == 3
    assert script.outcomes(answers) == {"multi_turn_base": {"mt_0": False},
                                        "simple_python": {"s_0": False, "s_2": False}}
