"""Fine-tuning a causal LM on a published function-calling dataset, with TRL (``toolace train``).

Each sample becomes one prompt/completion pair per assistant turn, in the chat the model will be prompted
with at evaluation (BFCL prompt mode, which ToolACE's format mirrors): ToolACE's system prompt with the
tool list, calls as ``[func(a=1, b="x")]``, tool results as ``[{"name": ..., "results": ...}]``
(:func:`tasks.formats.call_format.toolace_chat`, the same chat the complexity loss scores). The prompt is the system
message and every turn before the assistant turn, the completion that turn alone: TRL's prompt-completion
format with ``completion_only_loss``, so the loss covers the assistant's tokens only. An example longer
than ``max_length`` tokens is skipped (counted), never truncated: a cut would drop the completion.

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
from tasks.formats.call_format import toolace_chat, toolace_system_prompt
from tasks.formats.dataset_formats import custom_system, read_samples
from toolace.errors import UserError

RECORD_NAME = "toolace_training.json"
DEFAULT_LR = 5e-5  # full fine-tuning
DEFAULT_LORA_LR = 2e-4  # LoRA adapters learn from scratch: a larger step
Message = dict[str, str]


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


@dataclass
class Example:
    """One assistant turn to learn: ``prompt`` is the chat before it, ``completion`` that turn alone."""

    sample_id: str
    turn: int  # index of the assistant turn in the sample's turns
    prompt: list[Message]
    completion: list[Message]
    makes_calls: bool


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


def examples_from_sample(sample: Sample, calls_only: bool = False) -> list[Example]:
    """One example per assistant turn (only the ones that make calls with ``calls_only``)."""
    messages = sample_chat_messages(sample)  # messages[i + 1] is turns[i]
    out = []
    for i, turn in enumerate(sample.turns):
        if turn.role != "assistant" or (calls_only and not turn.tool_calls):
            continue
        out.append(Example(sample_id=sample.id, turn=i, prompt=messages[: i + 1], completion=[messages[i + 1]],
                           makes_calls=bool(turn.tool_calls)))
    return out


def build_examples(samples: Iterable[Sample], calls_only: bool = False) -> ExampleSet:
    """Examples of every readable sample. A sample with reading problems is skipped and counted under its
    first problem's check; one without an assistant turn under ``no_assistant_turn``."""
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
        examples = examples_from_sample(sample, calls_only)
        if examples:
            result.samples_used += 1
            result.examples.extend(examples)
        else:
            result.skipped["no_call_turn"] += 1  # only with calls_only
    return result


def read_examples(dataset: str, calls_only: bool = False) -> ExampleSet:
    """The examples of a dataset file or URL (any format :func:`read_samples` detects). Raises
    ``TrainingError`` naming the dataset when it holds no tool call at all or no usable example."""
    try:
        result = build_examples(read_samples(dataset, "auto"), calls_only)
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

    def validate(self) -> None:
        """Raises ``TrainingError`` for options that cannot work, before anything is loaded."""
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
    examples = read_examples(config.dataset, config.calls_only)
    log(f"read {examples.samples_read} samples from {config.dataset}: {examples.samples_used} used, skipped "
        f"{skipped_summary(examples.skipped)}; assistant turns: {examples.call_turns} with calls, "
        f"{examples.text_turns} without; {len(examples.examples)} examples"
        + (" (call turns only)" if config.calls_only else ""))
    tokenizer, source = load_base_tokenizer(config.base)
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
    lengths = example_lengths(tokenizer, examples.examples)
    kept = [e for e, n in zip(examples.examples, lengths, strict=True) if max_length is None or n <= max_length]
    too_long = len(examples.examples) - len(kept)
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
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in kept])
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
    )
