"""``toolace eval``: score a model on BFCL's test data in prompt mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from toolace.cli.errors import fail, user_errors

if TYPE_CHECKING:
    from tasks.evaluation.bfcl_eval import CategoryScore


def eval_command(
    model: Annotated[str | None, typer.Option(
        help="Local model answering the questions: 'smollm2' (the embedded SmolLM2), a Hugging Face folder or id",
        show_default="smollm2, unless --base-url is given")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", "--llm-base-url", help="OpenAI-compatible endpoint to ask instead of a local model; its key is "
                                             "read from OPENAI_API_KEY", show_default="none: a local model")] = None,
    llm_model: Annotated[str | None, typer.Option(
        help="Model name at --base-url", show_default="the one model it serves")] = None,
    category: Annotated[list[str] | None, typer.Option(
        help="BFCL category (repeatable): simple_python, multiple, parallel, parallel_multiple, irrelevance, "
             "live_simple, live_multiple, live_parallel, live_parallel_multiple, live_irrelevance, live_relevance",
        show_default="simple_python multiple parallel parallel_multiple irrelevance live_simple")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each category",
                                              show_default="every item")] = None,
    output: Annotated[str | None, typer.Option(
        help="JSONL with every item's answer and verdict (path or fsspec URL)", show_default="none")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens")] = 512,
    batch_size: Annotated[int, typer.Option(help="Local model: prompts generated together")] = 8,
    concurrency: Annotated[int, typer.Option(help="Endpoint: requests in flight")] = 8,
) -> None:
    """Score a model on BFCL (prompt mode, Python call lists) with our own AST checker; print the accuracy per
    category."""
    from rich.console import Console

    from tasks.evaluation.bfcl_data import DEFAULT_CATEGORIES
    from tasks.evaluation.bfcl_eval import AnswerSource, EndpointAnswers, LocalModelAnswers, evaluate, load_items

    if model and base_url:
        fail("give either --model (a local model) or --base-url (an endpoint), not both")
    if max_tokens < 1 or batch_size < 1 or concurrency < 1:
        fail("--max-tokens, --batch-size and --concurrency must be at least 1")
    err = Console(stderr=True)
    with user_errors():
        items = load_items([c for part in (category or DEFAULT_CATEGORIES) for c in part.split(",") if c], limit)
        source: AnswerSource
        if base_url:
            source = EndpointAnswers(base_url, llm_model, max_tokens=max_tokens, concurrency=concurrency)
        else:
            err.print(f"loading {model or 'smollm2'} ...")
            source = LocalModelAnswers(model or "smollm2", max_new_tokens=max_tokens, batch_size=batch_size)

        def progress(name: str, done: int, total: int) -> None:
            err.print(f"{name}: {done}/{total}", highlight=False)

        scores = evaluate(items, source, output, progress)
    _print_scores(scores, source.description, output)


def _print_scores(scores: list[CategoryScore], model: str, output: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks.evaluation.bfcl_eval import overall

    table = Table(title=f"BFCL (prompt mode): {model}")
    for column in ("category", "items", "correct", "accuracy", "95% CI"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for score in [*scores, overall(scores)] if len(scores) > 1 else scores:
        interval = score.interval()
        table.add_row(score.category, str(score.items), str(score.correct), f"{100 * score.accuracy:.1f}%",
                      f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]")
    console = Console()
    console.print(table)
    if output:
        console.print(f"answers and verdicts: {output}", highlight=False)
