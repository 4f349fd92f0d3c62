"""Fine-tuning a causal LM on a published function-calling dataset, with TRL (``toolace train``).

Each sample becomes one example per assistant turn: the chat before the turn is the prompt, the turn alone the
completion, and the loss covers the completion's tokens only. Two formats (``--format``):

- ``native`` (the CLI's default): the chat the base model's own template makes of the row, as a served model
  sees it: the sample's tools offered with ``tools=`` (OpenAI ``{"type": "function", ...}`` entries, parameters
  in JSON Schema), assistant calls as ``tool_calls`` messages, tool results as ``tool`` messages, the reasoning
  as ``reasoning_content`` when the row carries it (:func:`tasks.formats.call_format.chat_messages`), so the
  model learns its family's own call format (Hermes/Qwen ``<tool_call>``, Llama 3.x JSON, Mistral
  ``[TOOL_CALLS]``...). Each example is rendered with ``apply_chat_template`` and tokenized here: the prompt
  rendered with the generation prompt, the completion the turn as the chat with it renders it (the rest of
  that chat, its end-of-turn marker included; where a template does not render the chat before the turn as a
  prefix of it, as Hermes 3 and Mistral do, the turn is found with a sentinel), so the tokens learned are the
  ones the model writes after the prompt it is given at inference. A template with ``{% generation %}``
  markers (the ones TRL's ``assistant_only_loss`` reads) gives the span itself: ``return_assistant_tokens_mask``,
  the turn's own span (TRL's own assistant-only path wants the chats as dataset columns, where Arrow would give
  every message every other message's keys as nulls). The rows go to TRL tokenized, with their labels (-100
  outside the turn). A base whose template cannot render tools is refused
  (:func:`tasks.formats.chat_templates.can_render_tools`); an example the template refuses (Llama 3.x: several
  calls in one message) is skipped and counted with the template's reason.
- ``toolace`` (the library default, as before): the chat the model is prompted with at BFCL prompt-mode
  evaluation, which ToolACE's format mirrors: ToolACE's system prompt with the tool list, calls as
  ``[func(a=1, b="x")]``, tool results as ``[{"name": ..., "results": ...}]``
  (:func:`tasks.formats.call_format.toolace_chat`, the same chat the complexity loss scores), as TRL's
  prompt-completion format with ``completion_only_loss``.

An example longer than ``max_length`` tokens is skipped (counted), never truncated: a cut would drop the
completion.

Full fine-tuning, or LoRA through peft when ``lora_r`` is set (the adapters are merged into the saved
model). CUDA trains with float32 weights and bfloat16 autocast, the CPU in float32. The result is a plain
Hugging Face folder (model, tokenizer with its chat template, and :data:`RECORD_NAME`, the training
record) that ``toolace run --target-model DIR`` and :class:`tasks.dialogs.complexity.LossScorer` load. It is
written into a temporary sibling folder and renamed at the end: a failed or interrupted run leaves no
folder that looks complete, and an existing ``out`` is replaced only by a finished model.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.samples import Sample
from tasks.dialogs.complexity import DEFAULT_TARGET, TargetModelError, check_chat_template, model_source, short_cause
from tasks.formats.call_format import chat_messages, toolace_chat, toolace_system_prompt, with_published_ids
from tasks.formats.chat_templates import can_render_tools
from tasks.formats.dataset_formats import custom_system, read_samples
from tasks.formats.tool_call_formats import tokenizer_template
from tasks.formats.type_dialects import parameters_schema
from toolace.errors import UserError

RECORD_NAME = "toolace_training.json"
DEFAULT_LR = 5e-5  # full fine-tuning
DEFAULT_LORA_LR = 2e-4  # LoRA adapters learn from scratch: a larger step
TRAIN_FORMATS = ("native", "toolace")
Message = dict[str, Any]
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TrainingError(UserError):
    """Bad training input (dataset, base model, options) or an output folder that cannot be written."""


# ------------------------------------------------------------------------------------------- examples


def sample_chat_messages(sample: Sample) -> list[Message]:
    """A read sample as the chat a model is trained on and prompted with (see :func:`toolace_chat`): the
    ToolACE system prompt with the sample's tools, after the sample's own system text if it has any
    besides ToolACE's tool-list carrier."""
    system = toolace_system_prompt(sample.tools)
    custom = custom_system(sample.system)
    if custom:
        system = custom.rstrip("\n") + "\n\n" + system
    return toolace_chat(system, sample.turns)


def sample_native_messages(sample: Sample) -> list[Message]:
    """A read sample as the messages a chat template renders (Hugging Face convention, published call ids,
    the reasoning when the row carries it): its own system text first when it has one besides ToolACE's
    tool-list carrier (the tools go through ``tools=``)."""
    return chat_messages(with_published_ids(sample.id, sample.turns), custom_system(sample.system), reasoning=True)


def sample_native_tools(sample: Sample) -> list[dict[str, Any]]:
    """A read sample's tools as ``apply_chat_template(tools=...)`` takes them: OpenAI function entries with
    JSON Schema parameters (whatever dialect the row wrote them in)."""
    return [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                              "parameters": parameters_schema(tool.parameters)}}
            for tool in sample.tools]


@dataclass
class Example:
    """One assistant turn to learn: ``prompt`` is the chat before it, ``completion`` that turn alone; ``tools``
    (native format) the tools offered through the chat template."""

    sample_id: str
    turn: int  # index of the assistant turn in the sample's turns
    prompt: list[Message]
    completion: list[Message]
    makes_calls: bool
    tools: list[dict[str, Any]] | None = None


@dataclass
class ExampleSet:
    examples: list[Example] = field(default_factory=list)
    samples_read: int = 0
    samples_used: int = 0  # samples that gave at least one example
    skipped: Counter[str] = field(default_factory=Counter)  # why samples were skipped -> how many
    call_turns: int = 0  # assistant turns with calls (all of them, whether kept or not)
    text_turns: int = 0  # assistant turns without calls

    @property
    def samples_skipped(self) -> int:
        return sum(self.skipped.values())


def examples_from_sample(sample: Sample, calls_only: bool = False, fmt: str = "toolace") -> list[Example]:
    """One example per assistant turn (only the ones that make calls with ``calls_only``), in ``fmt``."""
    if fmt == "native":
        messages = sample_native_messages(sample)
        tools: list[dict[str, Any]] | None = sample_native_tools(sample)
        offset = len(messages) - len(sample.turns)  # 1 with a system message: messages[i + offset] is turns[i]
    else:
        messages, tools, offset = sample_chat_messages(sample), None, 1  # messages[i + 1] is turns[i]
    out = []
    for i, turn in enumerate(sample.turns):
        if turn.role != "assistant" or (calls_only and not turn.tool_calls):
            continue
        out.append(Example(sample_id=sample.id, turn=i, prompt=messages[: i + offset],
                           completion=[messages[i + offset]], makes_calls=bool(turn.tool_calls), tools=tools))
    return out


def build_examples(samples: Iterable[Sample], calls_only: bool = False, fmt: str = "toolace") -> ExampleSet:
    """Examples of every readable sample, in ``fmt`` (``native`` or ``toolace``). A sample with reading
    problems is skipped and counted under its first problem's check; one without an assistant turn under
    ``no_assistant_turn``."""
    result = ExampleSet()
    for sample in samples:
        result.samples_read += 1
        if sample.problems:
            result.skipped[sample.problems[0].check] += 1
            continue
        assistant = [t for t in sample.turns if t.role == "assistant"]
        if not assistant:
            result.skipped["no_assistant_turn"] += 1
            continue
        calls = sum(1 for t in assistant if t.tool_calls)
        result.call_turns += calls
        result.text_turns += len(assistant) - calls
        examples = examples_from_sample(sample, calls_only, fmt)
        if examples:
            result.samples_used += 1
            result.examples.extend(examples)
        else:
            result.skipped["no_call_turn"] += 1  # only with calls_only
    return result


def read_examples(dataset: str, calls_only: bool = False, fmt: str = "toolace") -> ExampleSet:
    """The examples of a dataset file or URL (any format :func:`read_samples` detects), in ``fmt``. Raises
    ``TrainingError`` naming the dataset when it holds no tool call at all or no usable example."""
    try:
        result = build_examples(read_samples(dataset, "auto"), calls_only, fmt)
    except TrainingError:
        raise
    except UserError as exc:
        raise TrainingError(f"dataset {dataset}: {exc}") from exc
    if result.samples_read == 0:
        raise TrainingError(f"dataset {dataset} holds no sample")
    if result.call_turns == 0:
        raise TrainingError(f"dataset {dataset} has no tool call in its {result.samples_read - result.samples_skipped}"
                            f" readable samples ({result.samples_skipped} skipped): nothing to learn function "
                            "calling from")
    if not result.examples:
        raise TrainingError(f"dataset {dataset}: no assistant turn to train on")
    return result


def skipped_summary(skipped: Mapping[str, int]) -> str:
    """``"3 (sample_json_v1: 2, call_syntax_v1: 1)"``: how many samples were skipped, and why."""
    total = sum(skipped.values())
    if not total:
        return "0"
    reasons = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
    return f"{total} (" + ", ".join(f"{check}: {n}" for check, n in reasons) + ")"


# ------------------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    dataset: str
    out: str
    base: str = DEFAULT_TARGET
    steps: int | None = None  # optimizer steps; exclusive with epochs
    epochs: float | None = None  # default 1 when steps is not given either
    lr: float | None = None  # default DEFAULT_LR, or DEFAULT_LORA_LR with LoRA
    lora_r: int | None = None  # None: full fine-tuning
    batch_size: int = 1
    seed: int = 0
    calls_only: bool = False
    max_length: int | None = None  # tokens per example; default the base model's context
    format: str = "toolace"  # "native": the base model's own chat template with tools= (the CLI's default)
    chat_template: str | None = None  # a family's real template in place of the base's own (fit_family_template)

    def validate(self) -> None:
        """Raises ``TrainingError`` for options that cannot work, before anything is loaded."""
        if self.format not in TRAIN_FORMATS:
            raise TrainingError(f"--format must be one of {', '.join(TRAIN_FORMATS)}, not {self.format!r}")
        if self.steps is not None and self.epochs is not None:
            raise TrainingError("give --steps or --epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise TrainingError(f"--steps must be at least 1, not {self.steps}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise TrainingError(f"--epochs must be a positive number, not {self.epochs}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise TrainingError(f"--lr must be a number between 0 and 1 (e.g. 5e-5), not {self.lr}")
        if self.lora_r is not None and self.lora_r < 1:
            raise TrainingError(f"--lora-r must be at least 1, not {self.lora_r}")
        if self.batch_size < 1:
            raise TrainingError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise TrainingError(f"--max-length must be at least 2 tokens, not {self.max_length}")
        if not self.out.strip():
            raise TrainingError("--out must name a folder")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return DEFAULT_LORA_LR if self.lora_r else DEFAULT_LR


# ------------------------------------------------------------------------------------------- output folder


def check_out_dir(out: str) -> Path:
    """The output folder as a path. It may be absent, empty, or an earlier ``toolace train`` result (which a
    finished run replaces); anything else is refused, so no user file is ever deleted."""
    path = Path(out).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TrainingError(f"--out {out} is a file, not a folder")
        if any(path.iterdir()) and not (path / RECORD_NAME).is_file():
            raise TrainingError(f"--out {out} is a folder that holds something other than a model trained by "
                                "toolace train: choose another folder or empty it")
    elif path.parent.exists() and not path.parent.is_dir():
        raise TrainingError(f"--out {out}: {path.parent} is a file, not a folder")
    return path


def _publish(work: Path, out: Path) -> None:
    """Rename the finished folder to ``out``, replacing an earlier result only once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    try:
        work.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What ``toolace train`` did; written as :data:`RECORD_NAME` in the model folder."""

    base: str
    base_source: str  # folder or id the weights were loaded from
    dataset: str
    out: str
    method: str  # "full" or "lora"
    samples_read: int
    samples_used: int
    samples_skipped: dict[str, int]
    call_turns: int  # assistant turns with calls in the readable samples
    text_turns: int
    calls_only: bool
    examples: int  # prompt/completion pairs trained on
    examples_too_long: int  # skipped: over max_length tokens
    max_length: int | None
    steps: int  # optimizer steps run
    epochs: float  # passes over the examples that makes
    lr: float
    lora_r: int | None
    batch_size: int
    seed: int
    device: str
    compute_dtype: str
    final_train_loss: float  # mean of the last (up to 10) logged step losses
    mean_train_loss: float  # mean over the whole run
    step_losses: list[float]
    wall_time_s: float
    versions: dict[str, str]
    created_at: str
    format: str = "toolace"  # "native": the base's own chat template with tools=
    examples_unrendered: dict[str, int] = field(default_factory=dict)  # native: skipped, the template's reason -> n
    loss_span: str = "completion"  # native: "prefix" (rendered prefixes) or "generation" (the template's markers)
    chat_template: str | None = None  # the family whose template replaced the base's own (saved with the model)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers a TCP connection within ``timeout_s``."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "", url.port or (80 if url.scheme == "http" else 443)),
                                      timeout=timeout_s):
            return True
    except OSError:
        return False


def _hub_source(base: str, repo_id: str) -> str:
    """A Hugging Face id as something to load: its cached folder, or the id once the hub has confirmed it
    exists. Never waits on retries against a hub that cannot be reached."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        raise TrainingError(f"base model {base} is not a local model folder nor in the Hugging Face cache, and the "
                            "hub cannot be reached (offline): pass a model folder, a .gguf file or smollm2")
    try:
        HfApi().model_info(repo_id, timeout=10)
    except Exception as exc:
        raise TrainingError(f"base model {base} is not a local model folder nor a Hugging Face model: "
                            f"{short_cause(exc)}") from exc
    return repo_id


def load_base_tokenizer(base: str) -> tuple[Any, str]:
    """(tokenizer, folder or id to load the weights from) of the base model, quickly or with a one-line error
    naming it: a path must exist, and a Hugging Face id not in the local cache is fetched only when the hub
    is reachable and knows it."""
    from transformers import AutoTokenizer

    try:
        source = model_source(base, role="base model")
    except TargetModelError as exc:
        raise TrainingError(str(exc)) from exc
    if not Path(source).is_dir():
        source = _hub_source(base, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        check_chat_template(tokenizer, base, role="base model")
    except TargetModelError as exc:
        raise TrainingError(str(exc)) from exc
    except Exception as exc:
        raise TrainingError(f"cannot load base model {base}: {short_cause(exc)}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, source


def use_family_template(tokenizer: Any, family: str, base: str) -> None:
    """``--chat-template``: the family's real template on the base's tokenizer (saved with the tuned model, so
    ``toolace eval --mode fc`` asks it the same way), or a :class:`TrainingError` saying why it does not fit."""
    from tasks.formats.chat_templates import TemplateFitError, fit_family_template
    from toolace.chat_template_files import TemplatesMissingError

    try:
        fit_family_template(tokenizer, family, f"base {base}")
    except (TemplateFitError, TemplatesMissingError) as exc:
        raise TrainingError(f"--chat-template {family}: {exc}") from exc


def check_native_template(tokenizer: Any, base: str) -> None:
    """``--format native`` teaches the call format of the base's own chat template: refused, with the reason,
    when the template cannot render tools (:func:`tasks.formats.chat_templates.can_render_tools`)."""
    template = tokenizer_template(tokenizer, f"base {base}")
    problem = "it has no chat template" if template is None else can_render_tools(template)
    if problem is not None:
        raise TrainingError(f"base model {base}: {problem}, so --format native (the rows rendered through the base's "
                            "own chat template with tools=) cannot teach it a tool-call format: pick a base whose "
                            "template renders tools (e.g. a Qwen2.5/Qwen3, Hermes, Llama 3.x or Mistral instruct "
                            "model), put one on it with --chat-template (e.g. qwen2.5 on a ChatML model), or train "
                            "with --format toolace")


def has_generation_markers(tokenizer: Any) -> bool:
    """Whether the chat template marks the assistant's tokens with ``{% generation %}`` (what TRL's
    ``assistant_only_loss`` and ``return_assistant_tokens_mask`` read)."""
    template = tokenizer_template(tokenizer, "")
    return template is not None and bool(_GENERATION_MARKER.search(template.text))


class NativeRenderError(ValueError):
    """The base's chat template refuses an example, or renders it so that its turn cannot be told apart."""


@dataclass
class NativeTokens:
    """A native example, tokenized: ``labels`` is ``input_ids`` with -100 outside the assistant turn."""

    input_ids: list[int]
    labels: list[int]

    @property
    def learned(self) -> list[int]:
        return [t for t, label in zip(self.input_ids, self.labels, strict=True) if label != -100]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_SENTINEL = "\u2063tcTurnStarts\u2063"


def _turn_text_by_sentinel(tokenizer: Any, example: Example, full_text: str) -> str:
    """The assistant turn's text in the whole chat's rendering when the chat before it is not a prefix of it
    (real templates do this: Hermes 3 ends a last tool result without the newline it writes before a reply,
    Mistral puts the system text into the last user message only): the chat is rendered with a sentinel as the
    turn's text; what comes before the sentinel must start the whole chat's rendering, and the rest of it is
    the turn."""
    probe = example.prompt + [{"role": "assistant", "content": _SENTINEL}]
    try:
        rendered = tokenizer.apply_chat_template(probe, tools=example.tools, tokenize=False)
    except Exception as exc:  # noqa: BLE001
        raise NativeRenderError(f"template: {_one_line(exc)}") from exc
    before = rendered.split(_SENTINEL, 1)[0]
    if _SENTINEL not in rendered or not full_text.startswith(before):
        raise NativeRenderError("template: the assistant turn cannot be told apart from the chat before it")
    return full_text[len(before):]


def native_tokens(tokenizer: Any, example: Example, generation_markers: bool = False) -> NativeTokens:
    """One native example through the base's chat template (see the module docstring): the prompt rendered
    with the generation prompt and the turn as the chat with it renders it (the rest of that chat, or where the
    chat before it is not its prefix, :func:`_turn_text_by_sentinel`), tokenized apart and concatenated; or,
    with ``generation_markers``, the whole chat with the template's own assistant mask, its last span (the
    turn's). Raises :class:`NativeRenderError` with the template's reason."""
    messages = example.prompt + example.completion
    try:
        if generation_markers:
            out = tokenizer.apply_chat_template(messages, tools=example.tools, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        else:
            prompt_text = tokenizer.apply_chat_template(example.prompt, tools=example.tools, tokenize=False,
                                                        add_generation_prompt=True)
            full_text = tokenizer.apply_chat_template(messages, tools=example.tools, tokenize=False)
    except Exception as exc:  # noqa: BLE001 - the template's own refusal (raise_exception) is the reason
        raise NativeRenderError(f"template: {_one_line(exc)}") from exc
    if generation_markers:
        last_start = max((i for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1])), default=None)
        if last_start is None:
            raise NativeRenderError("template: its {% generation %} markers leave the assistant turn empty")
        labels = [t if i >= last_start and mask[i] else -100 for i, t in enumerate(ids)]
        return NativeTokens(ids, labels)
    if full_text.startswith(prompt_text):
        completion_text = full_text[len(prompt_text):]
    else:
        completion_text = _turn_text_by_sentinel(tokenizer, example, full_text)
    if not completion_text.strip():
        raise NativeRenderError("template: the assistant turn renders as nothing")
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    completion_ids = list(tokenizer(completion_text, add_special_tokens=False)["input_ids"])
    return NativeTokens(prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids)


def example_lengths(tokenizer: Any, examples: list[Example]) -> list[int]:
    """Tokens of each example's whole templated chat (prompt and completion)."""
    texts = [tokenizer.apply_chat_template(e.prompt + e.completion, tokenize=False) for e in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _context_length(model_config: Any, tokenizer: Any) -> int | None:
    context = getattr(model_config, "max_position_embeddings", None)
    if not context and tokenizer.model_max_length < 10**9:
        context = tokenizer.model_max_length
    return int(context) if context else None


def _dequantised_gguf(model_config: Any) -> bool:
    """A folder converted from a GGUF (:func:`tasks.dialogs.complexity.materialise_gguf`) holds plain float weights but
    keeps the GGUF ``quantization_config``, which would make the trainer refuse it as a quantized model."""
    quantization = getattr(model_config, "quantization_config", None)
    method = quantization.get("quant_method") if isinstance(quantization, dict) else \
        getattr(quantization, "quant_method", None)
    return str(method) == "gguf" or str(getattr(method, "value", "")) == "gguf"


def _base_config(base: str, source: str) -> Any:
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise TrainingError(f"cannot load base model {base}: {short_cause(exc)}") from exc
    if _dequantised_gguf(model_config):
        del model_config.quantization_config  # plain float weights: trainable, and saved without the marker
    return model_config


def load_base_model(base: str, source: str) -> Any:
    """The base model's weights in float32 (on CUDA the passes then run in bfloat16 autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    model_config = _base_config(base, source)
    try:
        return AutoModelForCausalLM.from_pretrained(source, config=model_config, dtype=torch.float32)
    except Exception as exc:
        raise TrainingError(f"cannot load base model {base}: {short_cause(exc)}") from exc


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Fine-tune ``config.base`` on ``config.dataset`` and save it to ``config.out`` (see the module docstring);
    ``log`` gets a line per stage. Bad input raises ``TrainingError`` before any training. Whatever fails,
    the temporary folder is removed and an existing ``out`` is left as it was."""
    started = time.monotonic()
    config.validate()
    out = check_out_dir(config.out)
    examples = read_examples(config.dataset, config.calls_only, config.format)
    log(f"read {examples.samples_read} samples from {config.dataset}: {examples.samples_used} used, skipped "
        f"{skipped_summary(examples.skipped)}; assistant turns: {examples.call_turns} with calls, "
        f"{examples.text_turns} without; {len(examples.examples)} examples"
        + (" (call turns only)" if config.calls_only else "") + f", {config.format} format")
    tokenizer, source = load_base_tokenizer(config.base)
    if config.chat_template:
        use_family_template(tokenizer, config.chat_template, config.base)
        log(f"chat template: {config.chat_template}'s (llama.cpp's copy) in place of the base's own")
    if config.format == "native":
        check_native_template(tokenizer, config.base)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        result = _train_into(config, examples, tokenizer, source, work, log)
        result.wall_time_s = round(time.monotonic() - started, 1)
        (work / RECORD_NAME).write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False) + "\n")
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return result


def _sft_config(config: TrainConfig, output_dir: Path, cuda: bool) -> Any:
    from trl import SFTConfig

    # small models: recomputing activations costs more time than the memory is worth (newer transformers
    # call the option activation_checkpointing and warn about the old name)
    no_checkpointing = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ \
        else "gradient_checkpointing"
    return SFTConfig(
        output_dir=str(output_dir), max_steps=config.steps or -1, num_train_epochs=config.epochs or 1.0,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
        data_seed=config.seed, bf16=cuda, use_cpu=not cuda, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True, **{no_checkpointing: False},
        completion_only_loss=True, max_length=None,  # over-long examples are dropped beforehand, never cut
    )


def _step_logger(log: Callable[[str], None]) -> Any:
    """A trainer callback that reports each logged step's loss through ``log`` (instead of tqdm on stdout)."""
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        started = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                log(f"step {state.global_step}/{state.max_steps}: loss {float(logs['loss']):.4f} "
                    f"({time.monotonic() - self.started:.0f} s)")

    return StepLogger()


def _train_into(config: TrainConfig, examples: ExampleSet, tokenizer: Any, source: str, work: Path,
                log: Callable[[str], None]) -> TrainResult:
    """Train and save the model and tokenizer into ``work``; the result lacks only its wall time."""
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    model_config = _base_config(config.base, source)
    max_length = config.max_length or _context_length(model_config, tokenizer)
    rows, unrendered, loss_span = _training_rows(config, examples, tokenizer, log)
    lengths = [len(row["input_ids"]) for row in rows] if config.format == "native" else \
        example_lengths(tokenizer, examples.examples)
    kept = [row for row, n in zip(rows, lengths, strict=True) if max_length is None or n <= max_length]
    too_long = len(rows) - len(kept)
    if too_long:
        log(f"skipped {too_long} examples over {max_length} tokens (never truncated)")
    if not kept:
        raise TrainingError(f"dataset {config.dataset}: every example is over {max_length} tokens: raise "
                            "--max-length or pick a base model with a longer context")
    cuda = torch.cuda.is_available()
    set_seed(config.seed)
    model = load_base_model(config.base, source)
    peft_config = None
    if config.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.05,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = Dataset.from_list(kept)
    trainer = SFTTrainer(model=model, args=_sft_config(config, work / "trainer", cuda), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[_step_logger(log)])
    method = f"LoRA r={config.lora_r}" if config.lora_r else "full fine-tuning"
    log(f"training {config.base} ({method}) on {len(kept)} examples, "
        f"{'cuda bfloat16' if cuda else 'cpu float32'}, lr {config.learning_rate}")
    output = trainer.train()
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise TrainingError(f"training diverged (step losses ... {losses[-3:]}): lower --lr")
    trained = trainer.model.merge_and_unload() if config.lora_r else trainer.model
    trained.config.use_cache = True
    shutil.rmtree(work / "trainer", ignore_errors=True)
    trained.save_pretrained(work)
    tokenizer.save_pretrained(work)
    return TrainResult(
        base=config.base, base_source=source, dataset=config.dataset, out=str(Path(config.out).expanduser()),
        method="lora" if config.lora_r else "full", samples_read=examples.samples_read,
        samples_used=examples.samples_used, samples_skipped=dict(examples.skipped), call_turns=examples.call_turns,
        text_turns=examples.text_turns, calls_only=config.calls_only, examples=len(kept),
        examples_too_long=too_long, max_length=max_length, steps=int(trainer.state.global_step),
        epochs=round(float(trainer.state.epoch or 0.0), 4), lr=config.learning_rate, lora_r=config.lora_r,
        batch_size=config.batch_size, seed=config.seed, device="cuda" if cuda else "cpu",
        compute_dtype="bfloat16" if cuda else "float32",
        final_train_loss=round(sum(losses[-10:]) / len(losses[-10:]), 6),
        mean_train_loss=round(float(output.training_loss), 6), step_losses=[round(x, 6) for x in losses],
        wall_time_s=0.0, versions=_versions(), created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        format=config.format, examples_unrendered=dict(unrendered), loss_span=loss_span,
        chat_template=config.chat_template,
    )


def _training_rows(config: TrainConfig, examples: ExampleSet, tokenizer: Any,
                   log: Callable[[str], None]) -> tuple[list[dict[str, Any]], Counter[str], str]:
    """The rows TRL trains on, the native examples the template refused (reason -> count), and how the loss
    span is found. ``toolace``: prompt/completion chats (TRL renders and masks them); ``native``: tokenized
    rows with their labels (:func:`native_tokens`)."""
    unrendered: Counter[str] = Counter()
    if config.format != "native":
        return [{"prompt": e.prompt, "completion": e.completion} for e in examples.examples], unrendered, "completion"
    generation = has_generation_markers(tokenizer)
    rows = []
    for example in examples.examples:
        try:
            tokens = native_tokens(tokenizer, example, generation)
        except NativeRenderError as exc:
            unrendered[str(exc)] += 1
            continue
        rows.append({"input_ids": tokens.input_ids, "labels": tokens.labels})
    if unrendered:
        log(f"skipped {sum(unrendered.values())} examples the base's chat template refuses: "
            f"{skipped_summary(unrendered)}")
    if not rows:
        raise TrainingError(f"dataset {config.dataset}: the chat template of base model {config.base} refuses every "
                            f"example ({skipped_summary(unrendered)}): train with --format toolace")
    return rows, unrendered, "generation" if generation else "prefix"
