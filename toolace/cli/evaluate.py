"""``toolace eval``: score a model on BFCL's test data in prompt or function-calling mode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from toolace.cli.errors import fail, user_errors

if TYPE_CHECKING:
    from tasks.evaluation.bfcl_eval import AnswerSource, CategoryScore


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
             "live_simple, live_multiple, live_parallel, live_parallel_multiple, live_irrelevance, live_relevance; "
             "multi-turn, executed against BFCL's classes in a sandbox (both modes): multi_turn_base, "
             "multi_turn_miss_func, multi_turn_miss_param, multi_turn_long_context",
        show_default="simple_python multiple parallel parallel_multiple irrelevance live_simple")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each category",
                                              show_default="every item")] = None,
    output: Annotated[str | None, typer.Option(
        help="JSONL with every item's answer and verdict (path or fsspec URL)", show_default="none")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens")] = 512,
    batch_size: Annotated[int, typer.Option(help="Local model: prompts generated together")] = 8,
    concurrency: Annotated[int, typer.Option(help="Endpoint: requests in flight")] = 8,
    engine: Annotated[str | None, typer.Option(
        help="How a local model answers: 'llama-server' (the embedded llama.cpp server, a Hugging Face folder "
             "converted to GGUF first, --slots requests at a time) or 'transformers' (batched generation)",
        show_default="llama-server when llama-cpp-python is installed, else transformers")] = None,
    slots: Annotated[int | None, typer.Option(help="llama-server: parallel slots",
                                              show_default="the CPU count")] = None,
    mode: Annotated[str, typer.Option(
        help="prompt: BFCL's prompt mode (its system prompt, Python call lists); fc: function calling (the tools "
             "through the model's chat template, or OpenAI tools= at --base-url, calls read in the model's own "
             "format; either engine serves a local model with its template)")] = "prompt",
    tool_format: Annotated[str | None, typer.Option(
        help="--mode fc: the tool-call format to read answers in: hermes (Qwen2.5/Qwen3, Hermes), llama3_json, "
             "mistral, pythonic, qwen3_coder (Qwen3.5, Qwen3-Coder), glm45 (GLM-4.5/4.6), glm47, deepseek_v31, "
             "gemma4, kimi_k2, harmony (gpt-oss), minimax_m2, deepseek_v32, deepseek_v4 (DSML), deepseek_v3 "
             "(DeepSeek-V3/R1), lfm2 (LFM2.5), kimi_k3 (XTML), apertus, seed_oss, nemotron_nano_v2; at --base-url, "
             "reads text answers that have no structured call",
        show_default="detected from the chat template; at --base-url, the endpoint's structured calls only")] = None,
    chat_template: Annotated[str | None, typer.Option(
        help="--mode fc, local model: a model family's real chat template (llama.cpp's copy: qwen2.5, qwen3, "
             "hermes3, ...) in place of the model's own, e.g. for a base whose template renders no tools (SmolLM2 "
             "takes qwen2.5); a model `toolace train --chat-template` tuned carries it already",
        show_default="the model's own")] = None,
    full_answers: Annotated[bool, typer.Option(
        "--full-answers", help="Generate every answer to its end and ask every turn. By default a single-turn "
                               "prompt-mode answer is streamed and stopped once no continuation of it could decode "
                               "as a call list (prose), and a multi-turn entry (either mode) is asked no more turns "
                               "once one fails BFCL's checks: the verdicts are the same, the evaluation much "
                               "faster")] = False,
) -> None:
    """Score a model on BFCL (prompt mode, Python call lists; or --mode fc, function calling in the model's own
    format) with our own AST checker; print the accuracy per category."""
    from rich.console import Console

    from tasks.evaluation.bfcl_data import DEFAULT_CATEGORIES
    from tasks.evaluation.bfcl_eval import EndpointAnswers, load_items
    from tasks.evaluation.bfcl_fc import check_tool_format
    from tasks.evaluation.model_serving import ServingOptions, answer_source, evaluate_complete, fc_answer_source
    from toolace.cli.log_lines import line_printer

    if model and base_url:
        fail("give either --model (a local model) or --base-url (an endpoint), not both")
    if mode not in ("prompt", "fc"):
        fail(f"unknown --mode {mode!r}: choose prompt or fc")
    if tool_format is not None and mode != "fc":
        fail("--tool-format goes with --mode fc")
    if chat_template is not None and (mode != "fc" or base_url):
        fail("--chat-template goes with --mode fc and a local model (an endpoint applies its own template)")
    if max_tokens < 1 or batch_size < 1 or concurrency < 1 or (slots is not None and slots < 1):
        fail("--max-tokens, --batch-size, --concurrency and --slots must be at least 1")
    err = Console(stderr=True)
    log = line_printer(err)
    with user_errors():
        items = load_items([c for part in (category or DEFAULT_CATEGORIES) for c in part.split(",") if c], limit)
        source: AnswerSource

        def progress(name: str, done: int, total: int) -> None:
            err.print(f"{name}: {done}/{total}", highlight=False)

        # the answers file is written under a temporary name and renamed only once every item is answered
        early_stop = not full_answers
        if mode == "fc" and base_url:
            from tasks.evaluation.bfcl_fc import EndpointFcAnswers

            source = EndpointFcAnswers(base_url, llm_model, tool_format=check_tool_format(tool_format),
                                       max_tokens=max_tokens, concurrency=concurrency)
            scores = evaluate_complete(items, source, output, progress, early_stop)
        elif mode == "fc":
            log(f"loading {model or 'smollm2'} ...")
            options = ServingOptions(engine=engine, slots=slots, batch_size=batch_size)
            with fc_answer_source(model or "smollm2", max_tokens, options, chat_template,
                                  check_tool_format(tool_format), log=log) as source:
                scores = evaluate_complete(items, source, output, progress, early_stop)
        elif base_url:
            source = EndpointAnswers(base_url, llm_model, max_tokens=max_tokens, concurrency=concurrency)
            scores = evaluate_complete(items, source, output, progress, early_stop)
        else:
            log(f"loading {model or 'smollm2'} ...")
            options = ServingOptions(engine=engine, slots=slots, batch_size=batch_size)
            with answer_source(model or "smollm2", max_tokens, options, log=log) as source:
                scores = evaluate_complete(items, source, output, progress, early_stop)
    _print_scores(scores, source.description, output, mode)


def _print_scores(scores: list[CategoryScore], model: str, output: str | None, mode: str = "prompt") -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tasks.evaluation.bfcl_eval import overall
    from toolace.cli.log_lines import line_printer

    table = Table(title=f"BFCL ({mode} mode): {escape(model)}")  # a model's path may hold [...]
    for column in ("category", "items", "correct", "accuracy", "95% CI"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for score in [*scores, overall(scores)] if len(scores) > 1 else scores:
        interval = score.interval()
        table.add_row(score.category, str(score.items), str(score.correct), f"{100 * score.accuracy:.1f}%",
                      f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]")
    console = Console()
    console.print(table)
    if output:
        line_printer(console)(f"answers and verdicts: {output}")
