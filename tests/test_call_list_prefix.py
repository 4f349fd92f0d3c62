"""Stopping a prompt-mode answer once it can no longer decode as a call list: the rule is sound (a stopped answer
gets the verdict its whole text would get), never cuts an answer BFCL would accept, and the gateway streams, stops
and caches such answers over real HTTP."""

from __future__ import annotations

import ast
import asyncio
import json
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.evaluation.bfcl_checker import BfclDecodeError, decode_answer
from tasks.evaluation.bfcl_data import load_category, load_multi_turn_category
from tasks.evaluation.bfcl_eval import EndpointAnswers, evaluate, load_items
from tasks.evaluation.bfcl_multi_turn import ground_truth_answer
from tasks.evaluation.call_list_prefix import RULE_NAME, CallListPrefixRule, dead_end
from tests.test_bfcl_eval import correct_answer
from toolace.llm.gateway import GatewaySettings, LLMGateway


def parses(text: str) -> bool:
    """Whether ``text`` gets past decode_answer's parse (its strip and wrap, then :func:`ast.parse`)."""
    text = text.strip("`\n ")
    text = text if text.startswith("[") else "[" + text
    text = text if text.endswith("]") else text + "]"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "invalid decimal literal" (1if) and the like
            ast.parse(text.strip().strip("'"), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return True


@pytest.mark.parametrize("text, fragment", [
    ("To solve this problem, we", "'To' then 'solve'"),
    ("I'm sorry, but", "'I' then \"'m sorry, but\""),
    ("```python\nget_weather(city='Paris')", "'python' then 'get_weather'"),
    ("[f(x=1)]\nThis calls f", "after the expression's line ended"),
    ("[f(x=1)]\n```\nThis", "after the expression's line ended"),
    ("[f(x=1)``` and", "'`' outside a string"),
    ("f(x='a\nb", "still open at the end of its line"),
    ("[f(x=1)]] and", "closes a bracket that is not open"),
    ("f(x=1] ", "where ')' closes"),
    ("def area(r):\n    return", "statement keyword 'def'"),
    ("f(x=1) g(y=2) ", "')' then 'g'"),
    ("f(x=1); ", "';' outside a string"),
    ("f(x=’a’) ", "U+2019"),
    ("Step 1: ", "'Step' then '1'"),
    ("f(x=\"a\" 'b' y)", "\"'b'\" then 'y'"),
])
def test_prose_and_broken_answers_are_dead_early(text, fragment):
    reason = dead_end(text)
    assert reason is not None and fragment in reason
    assert not parses(text)


@pytest.mark.parametrize("text", [
    "", "```", "The", "To solve", "[", "get_weather(city='Paris', units", "[f(x=1)]\n```", "[f(x=1)]\n\n",
    'f(x="""a\nb', "f(x=f'{a b}", "1 if x else 2 ", "f(x=1e-5, y", "x = ", "Sure! Here", "f(x='it''s' ",
    "[f(x=1)] and g", "[f(x=1)]\n# a comment\n", "f(x=lambda y: y) ", "f(x=r'\\d+') ", "f(a=1,\\\nb=2)",
    "[f(x=[1, 2], y={'k': (3,)})]", "f(x=not y) ", "f(x=y is not None) ",
])
def test_possible_beginnings_are_not_judged(text):
    assert dead_end(text) is None


def _right_answers() -> list[str]:
    texts = []
    for category in ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple"):
        texts += [correct_answer(item) for item in load_category(category, 60) if item.possible_answer]
    for entry in load_multi_turn_category("multi_turn_base", 20):
        texts += [ground_truth_answer(entry, turn) for turn in range(len(entry.ground_truth))]
    return texts


def test_no_prefix_of_an_answer_bfcl_accepts_is_ever_cut():
    texts = _right_answers()
    assert len(texts) > 300
    variants = []
    for text in texts:
        assert parses(text), text
        variants += [text, text[1:-1], f"```\n{text}\n```", text.replace(", ", ",\n    ")]
    cut = []
    for text in filter(parses, variants):  # a line break put into a string does not parse
        for end in range(len(text) + 1):
            if dead_end(text[:end]) is not None:
                cut.append((text, end, dead_end(text[:end])))
                break
    assert cut == []


PIECES = ["f", "g", "x", "To", "solve", "if", "else", "not", "in", "is", "lambda", "for", "def", "from", "1", "2.5",
          "1e5", "0x1F", "1if", "'a'", '"b"', "'", '"', "'''", "(", ")", "[", "]", "{", "}", ",", "=", ":", ".", "+",
          "-", "*", " ", " ", "\n", "`", "```", "#", "\\", "\\\n", "r'x'", "f'{x}'", "b'x'", "_", "None", "?", ";",
          "$", "é", "’", "\t", "@", "!", "..."]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=16), st.lists(st.sampled_from(PIECES), max_size=6))
def test_a_dead_prefix_never_parses_whatever_follows(pieces, tail):
    text = "".join(pieces)
    endings = ["", "]", ")", ")]", "'", '"', "'''", "\n", "```", "".join(tail)]
    for end in range(1, len(text) + 1):
        prefix = text[:end]
        if dead_end(prefix) is not None:
            for ending in endings + [text[end:]]:
                assert not parses(prefix + ending), (prefix, ending, dead_end(prefix))
            break


def test_the_rule_is_named_and_versioned():
    rule = CallListPrefixRule()
    assert rule.name == RULE_NAME and RULE_NAME.endswith("_v1")
    assert rule("To find the") is not None and rule("[f(x=1)]") is None


# ------------------------------------------------------------------------------- streamed through the gateway


def _gateway(llm: Any, tmp_path: Any = None) -> LLMGateway:
    return LLMGateway(GatewaySettings(base_url=llm.base_url, model="scripted-model", backoff_base_s=0.01,
                                      temperature=0.0, cache_dir=str(tmp_path / "cache") if tmp_path else None))


def _chat(llm: Any, stop: Any, tmp_path: Any = None, times: int = 1) -> list[Any]:
    async def main() -> list[Any]:
        gateway = _gateway(llm, tmp_path)
        try:
            return [await gateway.chat([{"role": "user", "content": "q"}], stage="eval", stop=stop)
                    for _ in range(times)]
        finally:
            await gateway.aclose()

    return asyncio.run(main())


PROSE = "To find the area of a triangle, multiply the base by the height and halve it, which gives the area."


def test_a_prose_answer_is_streamed_and_stopped(llm):
    llm.script(lambda body: {"content": PROSE})
    [result] = _chat(llm, CallListPrefixRule())
    request = llm.requests[-1]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert PROSE.startswith(result.content) and len(result.content) < 20
    assert result.stopped == "'To' then 'find' with no operator between"
    assert result.raw["toolace_stop_rule"] == {"name": RULE_NAME, "reason": result.stopped}
    with pytest.raises(BfclDecodeError):
        decode_answer(result.content)


def test_a_call_list_streams_whole_with_its_usage(llm):
    answer = "[calculate_area(base=10, height=5, unit='cm')]"
    llm.script(lambda body: {"content": answer})
    [result] = _chat(llm, CallListPrefixRule())
    assert result.content == answer and result.stopped is None and result.finish_reason == "stop"
    assert result.raw["usage"]["completion_tokens"] > 0


def test_streamed_tool_calls_are_put_back_together(llm):
    llm.script(lambda body: {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Porto"}},
                                            {"name": "get_time", "arguments": {"zone": "UTC"}}]})
    [result] = _chat(llm, CallListPrefixRule())
    assert [(c.name, json.loads(c.arguments_text)) for c in result.tool_calls] == \
        [("get_weather", {"city": "Porto"}), ("get_time", {"zone": "UTC"})]
    assert result.finish_reason == "tool_calls"


def test_a_stopped_answer_is_cached_under_its_rule(llm, tmp_path):
    llm.script(lambda body: {"content": PROSE})
    first, second = _chat(llm, CallListPrefixRule(), tmp_path, times=2)
    assert len(llm.requests) == 1 and second.cached and second.stopped == first.stopped
    [whole] = _chat(llm, None, tmp_path)  # without the rule: another request, answered whole
    assert len(llm.requests) == 2 and whole.content == PROSE and "stream" not in llm.requests[-1]


# ------------------------------------------------------------------------------------------ in an evaluation


def test_the_verdicts_are_the_same_with_and_without_the_early_stop(llm, tmp_path):
    items = load_items(["simple_python", "irrelevance"], limit=3)
    right = {item.id: correct_answer(item) for item in items["simple_python"]}
    answers = iter([PROSE, None, "```python\ndef f():\n    return 1\n```", "[f(x=1)] I hope this helps.",
                    "I cannot answer this with the functions given.", None])

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        question = body["messages"][-1]["content"]
        item = next(i for c in items.values() for i in c if i.question[0][-1]["content"] == question)
        return {"content": scripted[item.id]}

    ids = [item.id for category in items.values() for item in category]
    scripted = {}
    for item_id, answer in zip(ids, answers, strict=True):
        scripted[item_id] = answer if answer is not None else right.get(item_id, "[calculate(x=1)]")
    llm.script(reply)
    runs = {}
    for early_stop in (True, False):
        output = tmp_path / f"answers-{early_stop}.jsonl"
        source = EndpointAnswers(llm.base_url, None, concurrency=2, hedge=False)
        evaluate(items, source, str(output), early_stop=early_stop)
        runs[early_stop] = [json.loads(line) for line in output.read_text().splitlines()]
    stopped, whole = runs[True], runs[False]
    assert [(r["id"], r["valid"], r["error_type"]) for r in stopped] == \
        [(r["id"], r["valid"], r["error_type"]) for r in whole]
    assert [r["valid"] for r in stopped] == [False, True, False, True, True, False]
    assert all(r["answer_stopped"] is None for r in whole)
    assert [bool(r["answer_stopped"]) for r in stopped] == [True, False, True, True, True, False]
    assert all(r["answer_stopped"] is None or r["answer_stopped"].startswith(RULE_NAME + ": ") for r in stopped)
    assert all(w["answer"].startswith(s["answer"]) for s, w in zip(stopped, whole, strict=True))


def test_a_stream_that_breaks_is_retried_then_one_clear_failure(llm):
    from toolace.llm.gateway import LLMCallFailed

    llm.script(lambda body: {"content": PROSE})
    llm.set_fault_rates({"drop": 0.3, "server_error": 0.1}, seed=3)
    try:
        results = _chat(llm, CallListPrefixRule(), times=6)  # each call retried until one attempt streams
        assert all(r.stopped for r in results) and llm.faults_injected["drop"] > 0
        llm.set_fault_rates({"drop": 1.0})
        with pytest.raises(LLMCallFailed, match=r"no answer after \d+ attempts"):
            _chat(llm, CallListPrefixRule())
    finally:
        llm.set_fault_rates(None)
