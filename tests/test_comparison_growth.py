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
