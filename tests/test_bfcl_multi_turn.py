"""BFCL multi-turn, executed: loading, decoding, BFCL's state and response checks, and a scripted model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.environments.bfcl_classes import BfclSandbox
from tasks.environments.sandbox import SandboxLimits
from tasks.evaluation.bfcl_checker import BfclDecodeError
from tasks.evaluation.bfcl_data import (
    MULTI_TURN_CATEGORIES,
    BfclDataError,
    check_any_categories,
    load_multi_turn_category,
)
from tasks.evaluation.bfcl_eval import evaluate, load_items
from tasks.evaluation.bfcl_multi_turn import (
    ADDITIONAL_FUNCTION_PROMPT,
    GroundTruthAnswers,
    decode_step,
    evaluate_category,
    first_turn_messages,
    ground_truth_answer,
    grouped_by_prompt,
    parse_ground_truth,
    run_entries,
    score_transcript,
)
from toolace.errors import UserError

pytest.importorskip("bfcl_eval", reason="bfcl-eval is installed by `toolace fetch-models --only bfcl`")


def _ground_truth_transcript(entry) -> list[list[str]]:
    return [[ground_truth_answer(entry, t), "Done."] if calls else ["I cannot do that."]
            for t, calls in enumerate(entry.ground_truth)]


@pytest.fixture(scope="module")
def base_entries():
    return load_multi_turn_category("multi_turn_base", 16)


def test_entries_load_as_bfcl_prepares_them() -> None:
    miss_func = load_multi_turn_category("multi_turn_miss_func", 3)
    entry = miss_func[0]
    assert entry.id == "multi_turn_miss_func_0" and entry.involved_classes == ["TwitterAPI", "GorillaFileSystem"]
    held_out = [doc["name"] for doc in entry.missed_functions[3]]
    assert held_out == ["sort"] and "sort" not in {doc["name"] for doc in entry.functions}
    assert entry.question[3] == [] and entry.ground_truth[2] == []
    assert load_multi_turn_category("multi_turn_long_context", 1)[0].long_context
    assert not load_multi_turn_category("multi_turn_miss_param", 1)[0].long_context
    messages = first_turn_messages(entry)
    assert messages[0]["role"] == "system" and "Note that the provided function is in Python 3 syntax." in \
        messages[0]["content"]
    assert ADDITIONAL_FUNCTION_PROMPT.format(functions=entry.missed_functions[3]).endswith("What about now?")
    with pytest.raises(BfclDataError, match="multi_turn_base, multi_turn_miss_func"):
        check_any_categories(["multi_turn_nope"])
    assert check_any_categories(["multi_turn_base", "irrelevance", "multi_turn_base"]) == \
        ["multi_turn_base", "irrelevance"]


def test_decoding_follows_bfcl_prompt_mode() -> None:
    step = decode_step("[cd(folder='docs'), mean(numbers=[1, 2])]")
    assert [(c.name, c.kwargs) for c in step.calls] == [("cd", {"folder": "docs"}), ("mean", {"numbers": [1, 2]})]
    assert step.texts == ["cd(folder='docs')", "mean(numbers=[1, 2])"]
    assert decode_step("cd(folder='docs')").calls[0].name == "cd"  # brackets added, as BFCL does
    assert decode_step("[]").calls == []
    assert decode_step("sort('a.txt')").calls[0].kwargs == {}  # BFCL drops positional arguments
    for text in ("Sure: [cd(folder='docs')]", "I cannot do that.", "[cd(folder={})]"):
        with pytest.raises(BfclDecodeError):
            decode_step(text)
    nested = decode_step("[cd(folder=pwd(a=1))]").calls[0]
    assert nested.error and "nested function call" in nested.error
    assert parse_ground_truth("sort('a.txt')").args == ("a.txt",)
    with pytest.raises(BfclDataError):
        parse_ground_truth("__import__('os').system('x')")


@pytest.mark.parametrize("category", MULTI_TURN_CATEGORIES)
def test_ground_truth_answers_score_full_marks(category: str) -> None:
    entries = load_multi_turn_category(category, 5)
    with BfclSandbox() as box:
        verdicts = [score_transcript(entry, _ground_truth_transcript(entry), box) for entry in entries]
    assert [(v.valid, v.error) for v in verdicts] == [(True, None)] * len(entries)


def test_wrong_answers_fail_with_the_reason(base_entries) -> None:
    entry = base_entries[0]  # turn 0: cd(folder='document'), mkdir(dir_name='temp'), mv(...)
    right = _ground_truth_transcript(entry)
    with BfclSandbox() as box:
        wrong_dir = [[right[0][0].replace("dir_name='temp'", "dir_name='tmp'"), "Done."], *right[1:]]
        verdict = score_transcript(entry, wrong_dir, box, prefix="a")
        assert verdict.error_type == "multi_turn:instance_state_mismatch"
        assert verdict.details["class"] == "GorillaFileSystem" and list(verdict.details["differences"]) == ["root"]
        assert "GorillaFileSystem" in verdict.error and "root" in verdict.error and "turn 0" in verdict.error

        no_grep = [right[0], ["[cd(folder='temp')]", "Done."], *right[2:]]  # same state, a result missing
        verdict = score_transcript(entry, no_grep, box, prefix="b")
        assert verdict.error_type == "multi_turn:execution_response_mismatch"
        assert verdict.details["turn"] == 1 and "budget analysis" in verdict.details["missing_items"][0]

        silent = [right[0], ["Let me think."], *right[2:]]
        verdict = score_transcript(entry, silent, box, prefix="c")
        assert (verdict.error_type, verdict.details) == ("multi_turn:empty_turn_model_response", {"turn": 1})

        verdict = score_transcript(entry, right[:2], box, prefix="d")
        assert verdict.error_type == "multi_turn:force_terminated"


def test_scripted_model_end_to_end(tmp_path: Path) -> None:
    items = load_items(["multi_turn_miss_func"], limit=2)
    entries = items["multi_turn_miss_func"]
    output = tmp_path / "answers.jsonl"

    class Scripted(GroundTruthAnswers):
        def answer_until(self, chats, stop):  # the early stop is for single-turn answers only
            raise AssertionError("a multi-turn answer goes back into the conversation: it is never stopped early")

    scores = evaluate(items, Scripted(entries), str(output))
    assert [(s.category, s.items, s.correct) for s in scores] == [("multi_turn_miss_func", 2, 2)]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["valid"] for r in rows] == [True, True] and rows[0]["id"] == "multi_turn_miss_func_0"
    turn0 = rows[0]["turns"][0]
    assert turn0[0]["calls"] == ["cd(folder='document')", "mkdir(dir_name='temp')",
                                 "mv(source='final_report.pdf', destination='temp')"]
    assert turn0[1]["answer"] == "Done." and "calls" not in turn0[1]  # no call: the turn ends
    assert rows[0]["turns"][3][0]["calls"] == ["sort(file_name='final_report.pdf')"]  # after the note adds sort

    def wrong(entry, turn, text):  # the scripted model misnames the new folder
        return text.replace("dir_name='temp'", "dir_name='tmp'")

    score = evaluate_category("multi_turn_miss_func", entries[:1], GroundTruthAnswers(entries, answer_for=wrong))
    assert (score.items, score.correct) == (1, 0)
    with pytest.raises(UserError, match="cannot answer in BFCL.s function-calling mode"):
        evaluate(items, GroundTruthAnswers(entries), mode="fc")


def test_a_source_that_holds_one_conversation_per_slot_gets_no_more(base_entries) -> None:
    """A local server keeps one prompt cache per slot: with ``conversations`` set, no more conversations are in
    flight than that, whatever its chunk size; the verdicts are the same."""
    entries = base_entries[:3]

    class PerSlot(GroundTruthAnswers):
        def __init__(self, conversations: int | None) -> None:
            super().__init__(entries, chunk_size=8)
            self.conversations, self.asked = conversations, []

        def answer(self, chats):
            self.asked.append(len(chats))
            return super().answer(chats)

    source = PerSlot(2)
    score = evaluate_category("multi_turn_base", entries, source)
    assert (score.items, score.correct) == (3, 3)
    assert max(source.asked) == 2 and source.asked[0] == 2
    wide = PerSlot(None)
    assert evaluate_category("multi_turn_base", entries, wide).correct == 3 and max(wide.asked) == 3


def test_a_conversation_that_outgrows_the_context_is_a_failed_entry(llm, tmp_path) -> None:
    """Over real HTTP: the endpoint refuses a step whose prompt is over the model's context (as llama.cpp and vLLM
    do, HTTP 400); that entry fails with the reason and every other entry is scored."""
    from tasks.evaluation.bfcl_eval import EndpointAnswers

    items = load_items(["multi_turn_base"], limit=3)
    long_entry = items["multi_turn_base"][1]
    marker = long_entry.question[0][-1]["content"]

    def rule(body):
        if len(body["messages"]) > 3 and any(m["content"] == marker for m in body["messages"]):
            return {"status": 400, "body": {"error": {"message": "Requested tokens (8230) exceed context window of "
                                                                 "8192", "type": "invalid_request_error"}}}
        return {"content": "[]"}  # no call: each turn ends at once

    llm.script(rule)
    output = tmp_path / "answers.jsonl"
    [score] = evaluate(items, EndpointAnswers(llm.base_url, None), str(output), early_stop=False)  # every turn asked
    assert score.items == 3
    rows = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    failed = rows[long_entry.id]
    assert failed["error_type"] == "multi_turn:inference_error"
    assert "context_length: request refused with HTTP 400" in failed["error"]
    assert all(r["error_type"] != "multi_turn:inference_error" for i, r in rows.items() if i != long_entry.id)


def test_entries_that_share_a_system_prompt_run_one_after_another(base_entries) -> None:
    """A server that caches prompt prefixes evaluates each group's class docs once, not once per entry."""
    order = grouped_by_prompt(base_entries)
    assert sorted(i for i, _ in order) == list(range(len(base_entries)))
    prompts = [first_turn_messages(entry)[0]["content"] for _, entry in order]
    groups = [p for k, p in enumerate(prompts) if k == 0 or p != prompts[k - 1]]
    assert len(groups) == len(set(prompts)) < len(base_entries)  # each group is contiguous
    assert order[0][0] == 0


@pytest.mark.parametrize("settle", [False, True])
def test_an_environment_past_its_limits_is_a_failed_entry_and_the_rest_goes_on(base_entries, settle) -> None:
    with_math, plain = base_entries[15], base_entries[1]
    assert "MathAPI" in with_math.involved_classes

    def slow(entry, turn, text):
        if entry.id == with_math.id and turn == 0 and text != "Done.":
            return "[logarithm(value=2.0, base=3.0, precision=1000000)]"
        return text

    source = GroundTruthAnswers([with_math, plain], answer_for=slow)
    results = run_entries([with_math, plain], source, SandboxLimits(call_timeout_s=1.0), settle=settle)
    failed, passed = results
    assert failed.verdict.error_type == "multi_turn:environment_error"
    assert "wall-clock limit" in failed.verdict.error
    assert passed.verdict.valid


def _wrong_at(entries, turns):
    """answer_for: entry i answers its turn ``turns[i]`` wrongly (None: never), in turn: prose (no call), a call
    that leaves the state and misses a result, a folder of the wrong name (another state)."""
    def answer_for(entry, turn, text):
        index = next(i for i, e in enumerate(entries) if e is entry)
        if turns[index] != turn or not entry.ground_truth[turn] or text == "Done.":
            return text
        return ["I would rather not.", "[pwd()]", text.replace("'", "'x", 1)][index % 3]
    return answer_for


@pytest.mark.parametrize("mode", ["prompt", "fc"])
def test_settling_at_the_first_failed_turn_keeps_every_verdict_and_asks_less(base_entries, mode) -> None:
    """``settle``: each turn is checked as it ends, an entry stops at its first failed turn; the verdicts and
    their reasons are those of the whole transcript, the later turns are not asked (and counted)."""
    from tasks.evaluation.bfcl_multi_turn import GroundTruthFcAnswers

    entries = base_entries[:7]
    turns = [0, 1, 2, 0, None, 1, None]

    def source():
        wrong = _wrong_at(entries, turns)
        if mode == "prompt":
            inner = GroundTruthAnswers(entries, answer_for=wrong)
            ask = inner.answer
        else:
            def fc_wrong(entry, turn, calls):  # the same three wrong answers, as calls
                index = next(i for i, e in enumerate(entries) if e is entry)
                if turns[index] != turn or not calls:
                    return calls
                return [[], [("pwd", {})],
                        [(name, {k: f"x{v}" if isinstance(v, str) else v for k, v in args.items()})
                         for name, args in calls]][index % 3]
            inner = GroundTruthFcAnswers(entries, answer_for=fc_wrong)
            ask = inner.answer_fc

        class Counting:
            description, chunk_size, mode = inner.description, 8, getattr(inner, "mode", "prompt")
            asked = 0

            def _count(self, batch):
                self.asked += len(batch)
                return ask(batch)

            answer = answer_fc = _count
        return Counting()

    whole_source, settled_source = source(), source()
    whole = run_entries(entries, whole_source, mode=mode)
    settled = run_entries(entries, settled_source, mode=mode, settle=True)
    assert [(r.verdict.valid, r.verdict.error_type, r.verdict.details.get("turn")) for r in settled] == \
        [(r.verdict.valid, r.verdict.error_type, r.verdict.details.get("turn")) for r in whole]
    assert [r.verdict.valid for r in settled] == [t is None for t in turns]
    assert {r.verdict.error_type for r in settled if not r.verdict.valid} >= {
        "multi_turn:empty_turn_model_response", "multi_turn:execution_response_mismatch"}
    for result, turn in zip(settled, turns, strict=True):
        expected = 0 if turn is None else len(result.entry.question) - turn - 1
        assert result.unasked_turns == expected and len(result.steps) == len(result.entry.question) - expected
        assert result.row("m")["unasked_turns"] == expected
    assert all(r.unasked_turns == 0 for r in whole)
    assert settled_source.asked < whole_source.asked


def test_an_evaluation_settles_by_default_and_asks_every_turn_with_full_answers(base_entries, tmp_path) -> None:
    """``evaluate``: multi-turn entries settle at their first failed turn unless ``early_stop`` is off (the CLI's
    ``--full-answers``); the score is the same."""
    entries = base_entries[:3]
    items = {"multi_turn_base": entries}
    wrong = _wrong_at(entries, [0, None, 1])
    rows = {}
    for early_stop in (True, False):
        output = tmp_path / f"{early_stop}.jsonl"
        [score] = evaluate(items, GroundTruthAnswers(entries, answer_for=wrong), str(output), early_stop=early_stop)
        assert (score.items, score.correct) == (3, 1)
        by_id = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}  # in the order they end
        rows[early_stop] = [by_id[entry.id] for entry in entries]
    assert [r["unasked_turns"] for r in rows[True]] == [len(entries[0].question) - 1, 0,
                                                        len(entries[2].question) - 2]
    assert [r["unasked_turns"] for r in rows[False]] == [0, 0, 0]
    assert [r["error_type"] for r in rows[True]] == [r["error_type"] for r in rows[False]]


def test_a_settled_entry_forced_to_stop_is_force_terminated_as_a_whole_one_is(base_entries) -> None:
    """A turn that never ends (a call at every step, past the 20-step limit) is not checked as a turn: the entry is
    scored whole at the end, ``multi_turn:force_terminated`` both ways."""
    entries = base_entries[:1]

    def endless(entry, turn, text):  # turn 0 right; in turn 1 the model calls again instead of "Done."
        return "[pwd()]" if turn == 1 and text == "Done." else text

    verdicts = [run_entries(entries, GroundTruthAnswers(entries, answer_for=endless), settle=settle)[0]
                for settle in (False, True)]
    assert [v.verdict.error_type for v in verdicts] == ["multi_turn:force_terminated"] * 2
    assert [len(v.steps) for v in verdicts] == [2, 2] and verdicts[1].unasked_turns == 0
