"""``toolace import-apis``, ``toolace verify`` and ``toolace convert``: datasets and API pools anyone made."""

from __future__ import annotations

import enum
import sys
from typing import Annotated

import typer

from toolace.cli.errors import fail, user_errors


def import_apis(
    pool: Annotated[str, typer.Option(help="API pool to add to: a .jsonl or .parquet file or URL (created if "
                                      "absent)")],
    files: Annotated[list[str] | None, typer.Argument(
        help="OpenAPI 3 / Swagger 2 documents (JSON or YAML), saved MCP tools/list answers (JSON), function lists "
             "(JSON) or ToolACE / xLAM / BFCL rows (JSONL); paths or URLs")] = None,
    mcp: Annotated[list[str] | None, typer.Option(
        "--mcp", metavar="\"COMMAND ARGS...\"", help="An MCP server to start over stdio and import every tool of "
        "(repeatable); use absolute paths in its arguments: executed calls run it in a folder of their own",
        show_default="none")] = None,
    mcp_url: Annotated[list[str] | None, typer.Option(
        "--mcp-url", metavar="URL", help="A streamable-HTTP MCP server to import every tool of (repeatable)",
        show_default="none")] = None,
    mcp_timeout: Annotated[float, typer.Option(help="Seconds an MCP server has to start and list its tools")] = 30.0,
    infer_results: Annotated[bool, typer.Option(
        "--infer-results", help="Call each imported read-only MCP tool that declares no outputSchema once, in the "
        "sandbox, with the example values its own schema gives, and infer its result schema from the answer")] = False,
) -> None:
    """Add real APIs to an API pool, skipping the ones already there."""
    from tasks.apis.importing import merge_into_pool, read_api_file

    if not (files or mcp or mcp_url):
        fail("give API files, --mcp \"COMMAND ARGS...\" or --mcp-url URL")
    failed: list[str] = []
    with user_errors():
        apis = [api for path in files or [] for api in read_api_file(path)]  # all read before the pool is touched
        if mcp or mcp_url:
            from tasks.mcp.client import MCPServerError, ServerTarget
            from tasks.mcp.tool_import import import_from_server

            targets = [ServerTarget.from_command(_absolute_program(command)) for command in mcp or []]
            targets += [ServerTarget.from_url(url) for url in mcp_url or []]
            for target in targets:  # a server that fails is named; the others are still imported
                try:
                    apis.extend(import_from_server(target, mcp_timeout))
                except MCPServerError as exc:
                    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                    failed.append(target.label)
        if failed and not apis:
            fail(f"nothing imported: {len(failed)} MCP server(s) failed")
        if infer_results:
            import asyncio

            from tasks.mcp.execution import ExecutionPolicy
            from tasks.mcp.result_inference import infer_result_schemas

            policy = ExecutionPolicy(mode="read_only", time_limit_s=mcp_timeout, start_timeout_s=mcp_timeout)
            for note in asyncio.run(infer_result_schemas(apis, policy)):
                typer.echo(f"{note.tool}: {note.note}", err=True)
        counts = merge_into_pool(pool, apis)
    typer.echo(f"read {counts['read']}, added {counts['added']}, duplicates {counts['duplicates']}, "
               f"rejected {counts['rejected']}: {pool}")
    if failed:
        fail(f"{len(failed)} MCP server(s) failed, the rest was imported: {', '.join(failed)}")


def _absolute_program(command: str) -> list[str]:
    """The command line with its program made absolute when it is a path (``./server``), so the pool can start it
    again from another folder; a bare name (``mcp-server-time``) is looked up on PATH each time."""
    import os
    import shlex

    parts = shlex.split(command)
    if parts and os.sep in parts[0]:
        parts[0] = os.path.abspath(parts[0])
    return parts


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
