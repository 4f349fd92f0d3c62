"""``toolace import-apis``, ``toolace verify`` and ``toolace convert``: datasets and API pools anyone made."""

from __future__ import annotations

import enum
import sys
from typing import Annotated

import typer

from toolace.cli.errors import fail, user_errors


def import_apis(
    files: Annotated[list[str], typer.Argument(help="OpenAPI 3 / Swagger 2 documents (JSON or YAML), function "
                                               "lists (JSON) or ToolACE / xLAM / BFCL rows (JSONL); paths or URLs")],
    pool: Annotated[str, typer.Option(help="API pool to add to: a .jsonl or .parquet file or URL (created if "
                                      "absent)")],
) -> None:
    """Add real APIs to an API pool, skipping the ones already there."""
    from tasks.apis.importing import merge_into_pool, read_api_file

    with user_errors():
        apis = [api for path in files for api in read_api_file(path)]  # every file read before the pool is touched
        counts = merge_into_pool(pool, apis)
    typer.echo(f"read {counts['read']}, added {counts['added']}, duplicates {counts['duplicates']}, "
               f"rejected {counts['rejected']}: {pool}")


class DatasetFormat(enum.StrEnum):
    """A dataset format `toolace convert` writes."""

    toolace = "toolace"
    openai = "openai"
    sharegpt = "sharegpt"
    xlam = "xlam"
    bfcl = "bfcl"


class InputFormat(enum.StrEnum):
    """A dataset format `toolace verify` and `toolace convert` read; auto detects each row's."""

    auto = "auto"
    toolace = "toolace"
    openai = "openai"
    sharegpt = "sharegpt"
    xlam = "xlam"
    bfcl = "bfcl"


class Checks(enum.StrEnum):
    rules = "rules"
    all = "all"


def verify(
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="Dataset: JSON, JSONL or parquet; path or "
                                              "fsspec URL (s3://...)")],
    format_: Annotated[InputFormat, typer.Option("--format", help="Input format; auto detects each row's")]
    = InputFormat.auto,
    checks: Annotated[Checks, typer.Option(help="rules (rule layer) or all (rules, then the LLM judges on the "
                                           "samples the rules passed)")] = Checks.rules,
    output: Annotated[str | None, typer.Option(help="Verdicts JSONL (path or URL); the summary then goes to "
                                               "stdout", show_default="stdout, with the summary on stderr")] = None,
    llm_base_url: Annotated[str | None, typer.Option(
        help="Endpoint for --checks all; its key is read from OPENAI_API_KEY", envvar="OPENAI_BASE_URL",
        show_envvar=True, show_default="the embedded SmolLM2 model")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name at the endpoint",
                                                  show_default="the one model the endpoint serves")] = None,
    votes: Annotated[int, typer.Option(help="Votes per LLM judge (strict majority must pass)")] = 1,
    concurrency: Annotated[int, typer.Option(help="Maximum LLM requests in flight")] = 8,
    max_assistant_chars: Annotated[int, typer.Option(help="Longest assistant answer accepted")] = 2000,
) -> None:
    """Verify any dataset: one verdict per sample, in input order, then a summary. Exits 0 when the input
    was read, whatever the verdicts."""
    from tasks.verification.datasets import summary_lines, verify_dataset
    from tasks.verification.rules import RuleLimits
    from toolace.llm.gateway import GatewaySettings

    if votes < 1:
        fail("--votes must be at least 1")
    limits = RuleLimits(max_assistant_chars=max_assistant_chars)
    with user_errors():
        if checks is Checks.rules:
            summary = verify_dataset(input_path, format_.value, output, "rules", None, limits,
                                     out=None if output else sys.stdout)
        else:
            from toolace.llm.endpoint import llm_endpoint

            with llm_endpoint(llm_base_url, llm_model) as endpoint:
                settings = GatewaySettings(base_url=endpoint.base_url, model=endpoint.model, concurrency=concurrency)
                summary = verify_dataset(input_path, format_.value, output, "all", settings, limits, votes,
                                         out=None if output else sys.stdout)
    for line in summary_lines(summary):
        typer.echo(line, err=output is None)


def convert(
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="Dataset: JSON, JSONL or parquet; path or URL")],
    to: Annotated[DatasetFormat, typer.Option(help="Output format")],
    output: Annotated[str, typer.Option(help="Where to write (.jsonl, .json or .parquet; path or URL)")],
    format_: Annotated[InputFormat, typer.Option("--format", help="Input format; auto detects each row's")]
    = InputFormat.auto,
) -> None:
    """Convert a dataset between formats, losing nothing the target format can hold."""
    from tasks.formats.dataset_formats import convert as convert_dataset

    with user_errors():
        counts = convert_dataset(input_path, format_.value, output, to.value)  # type: ignore[arg-type]
    typer.echo(", ".join(f"{k} {v}" for k, v in counts.items()) + f": {output}")
