"""``toolace cache``: keep the LLM response cache within its age and size bounds."""

from __future__ import annotations

from typing import Annotated

import typer

from toolace.cli.errors import fail
from toolace.llm.response_cache import DEFAULT_MAX_AGE_DAYS, DEFAULT_MAX_BYTES, cache_dir_for, prune_cache

cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The LLM response cache (answers kept so that a rerun never pays twice).")


def _days(seconds: float) -> str:
    return f"{seconds / 86_400:.1f} days"


@cache_app.command("prune")
def prune(
    out: Annotated[str, typer.Option(help="Output root whose cache to prune (<out>/cache/llm for a local path, "
                                     "~/.cache/toolace/llm for a URL such as s3://bucket/prefix)")] = "./data",
    max_age_days: Annotated[float | None, typer.Option(
        help="Remove entries cached longer ago than this", show_default=f"{DEFAULT_MAX_AGE_DAYS:g}")] = None,
    max_bytes: Annotated[int | None, typer.Option(
        help="Then remove the oldest entries until the rest fit", show_default=f"{DEFAULT_MAX_BYTES}")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print what would be removed, remove nothing")] = False,
) -> None:
    """Remove cached LLM answers older than --max-age-days, then the oldest ones until the cache fits in
    --max-bytes, and writes a killed process left torn; print each removed entry, then a summary."""
    if max_age_days is not None and max_age_days <= 0:
        fail("--max-age-days must be positive")
    if max_bytes is not None and max_bytes < 0:
        fail("--max-bytes must be at least 0")
    report = prune_cache(cache_dir_for(out), DEFAULT_MAX_AGE_DAYS if max_age_days is None else max_age_days,
                         DEFAULT_MAX_BYTES if max_bytes is None else max_bytes, dry_run=dry_run, budget_s=None)
    verb = "would remove" if dry_run else "removed"
    for entry in report.removed:
        typer.echo(f"{verb} {entry.path} ({entry.reason}, {entry.bytes} bytes, {_days(entry.age_s)} old)")
    typer.echo(report.summary())
