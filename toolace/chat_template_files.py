"""llama.cpp's copies of real models' chat templates: which families, where the files are and how to get them.

The templates are ``models/templates/*.jinja`` of llama.cpp's source tree, taken from the llama-cpp-python sdist
that ``make setup`` builds the embedded model's bindings from: ``make setup`` extracts them into
``<venv>/share/toolace/chat_templates``; with a plain ``pip install``, ``toolace fetch-models --only templates``
(:func:`fetch_chat_templates`) puts them in ``~/.cache/toolace/chat_templates``. They are found in this order:
the ``chat_templates_dir`` config field, the ``TOOLACE_CHAT_TEMPLATES`` environment variable,
``<sys.prefix>/share/toolace/chat_templates``, then ``~/.cache/toolace/chat_templates``. None is in this
repository. Rendering and checking rows through them is :mod:`tasks.formats.chat_templates` and
:mod:`tasks.verification.template_gate`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolace.errors import UserError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the Makefile's LLAMA_CPP_VERSION: one sdist gives the bindings and templates
TEMPLATES_ENV = "TOOLACE_CHAT_TEMPLATES"
SDIST_TEMPLATES = "vendor/llama.cpp/models/templates/"
SETUP_HINT = "run `make setup`, or `toolace fetch-models --only templates` after a pip install"

Shape = Callable[[list[dict[str, Any]]], bool]


def _several_calls_in_one_message(messages: list[dict[str, Any]]) -> bool:
    return any(len(m.get("tool_calls") or []) > 1 for m in messages)


PARALLEL_CALLS = "several tool calls in one assistant message (the template raises 'only supports single tool-calls')"


@dataclass(frozen=True)
class Family:
    """A model family's chat template: its file in llama.cpp's ``models/templates`` and its special tokens.
    ``unsupported`` lists the shapes it cannot take at all, each with the reason reported in the card."""

    name: str
    file: str
    bos_token: str = ""
    eos_token: str = ""
    unsupported: tuple[tuple[str, Shape], ...] = ()


_LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
          "unsupported": ((PARALLEL_CALLS, _several_calls_in_one_message),)}
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja", eos_token="<|im_end|>"),
    Family("qwen3", "Qwen-Qwen3-0.6B.jinja", eos_token="<|im_end|>"),
    Family("qwen3.5", "Qwen3.5-4B.jinja", eos_token="<|im_end|>"),
    Family("llama3.1", "meta-llama-Llama-3.1-8B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("llama3.2", "meta-llama-Llama-3.2-3B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("llama3.3", "meta-llama-Llama-3.3-70B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("hermes3", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", bos_token="<|begin_of_text|>",
           eos_token="<|im_end|>"),
    Family("mistral-nemo", "mistralai-Mistral-Nemo-Instruct-2407.jinja", bos_token="<s>", eos_token="</s>"),
    Family("mistral-small3", "Mistral-Small-3.2-24B-Instruct-2506.jinja", bos_token="<s>", eos_token="</s>"),
    Family("gemma4", "google-gemma-4-31B-it.jinja", bos_token="<bos>", eos_token="<eos>"),
    Family("deepseek-v3", "deepseek-ai-DeepSeek-V3.1.jinja", bos_token="<｜begin▁of▁sentence｜>",
           eos_token="<｜end▁of▁sentence｜>"),
    Family("granite4", "ibm-granite-granite-4.0.jinja", eos_token="<|end_of_text|>"),
)}
DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


class TemplatesMissingError(UserError):
    """The chat templates folder is missing (or lacks a family's file): one line naming the setup step."""


# ------------------------------------------------------------------------------------------- finding them


def default_fetch_dir() -> Path:
    """Where :func:`fetch_chat_templates` puts the templates by default (``toolace fetch-models``)."""
    return Path.home() / ".cache" / "toolace" / "chat_templates"


def venv_dir() -> Path:
    """Where ``make setup`` puts them: inside the virtual environment."""
    return Path(sys.prefix) / "share" / "toolace" / "chat_templates"


def candidate_dirs(configured: str | None = None) -> list[Path]:
    """The folders looked in, in order (see the module docstring)."""
    found = [Path(p).expanduser() for p in (configured, os.environ.get(TEMPLATES_ENV)) if p]
    return found + [venv_dir(), default_fetch_dir()]


def find_templates_dir(configured: str | None = None) -> Path | None:
    """The first candidate folder that holds ``*.jinja`` files (a configured folder is the only one looked in
    when it is set); None when there is none."""
    dirs = [Path(configured).expanduser()] if configured else candidate_dirs()
    for folder in dirs:
        if folder.is_dir() and any(folder.glob("*.jinja")):
            return folder
    return None


def templates_dir(configured: str | None = None, families: Sequence[str] = ()) -> Path:
    """:func:`find_templates_dir`, or :class:`TemplatesMissingError` (one line naming the setup step) when
    there is none or it lacks one of ``families``' files."""
    folder = find_templates_dir(configured)
    if folder is None:
        looked = ", ".join(str(p) for p in ([Path(configured)] if configured else candidate_dirs()))
        raise TemplatesMissingError(f"no chat templates found (looked in {looked}): {SETUP_HINT}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise TemplatesMissingError(f"unknown chat-template families {', '.join(unknown)}: choose from "
                                    f"{', '.join(FAMILIES)}")
    missing = [f"{f} ({FAMILIES[f].file})" for f in families if not (folder / FAMILIES[f].file).is_file()]
    if missing:
        raise TemplatesMissingError(f"chat templates folder {folder} lacks {', '.join(missing)}: {SETUP_HINT}")
    return folder


# -------------------------------------------------------------------------------------------- getting them


def extract_chat_templates(sdist: str | Path, dest: str | Path) -> Path:
    """Copy the ``*.jinja`` files of a llama-cpp-python sdist's ``vendor/llama.cpp/models/templates`` into
    ``dest`` (flat; only regular files, by their base name). Returns ``dest``."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(sdist, "r:*") as archive:
        for member in archive:
            name = member.name
            if not (member.isfile() and SDIST_TEMPLATES in name and name.endswith(".jinja")):
                continue
            base = Path(name).name
            if not re.fullmatch(r"[\w.+-]+\.jinja", base):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            (target / base).write_bytes(handle.read())
            count += 1
    if count == 0:
        raise UserError(f"{sdist} holds no {SDIST_TEMPLATES}*.jinja: is it a llama-cpp-python sdist?")
    (target / "SOURCE").write_text(f"{Path(sdist).name}: {SDIST_TEMPLATES} ({count} templates)\n")
    return target


PIP_TIMEOUT_S = 1800.0  # the sdist download (and pip's metadata build) ends by then, or the fetch fails


def fetch_chat_templates(dest: str | Path | None = None, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Download the llama-cpp-python sdist with pip (into a temporary folder) and extract its chat templates
    into ``dest`` (default :func:`default_fetch_dir`). Returns the folder."""
    target = Path(dest) if dest is not None else default_fetch_dir()
    with tempfile.TemporaryDirectory(prefix="toolace-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "-d", tmp, f"llama-cpp-python=={version}"]
        try:
            done = subprocess.run(command, check=False, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(command[1:])}` did not finish in {PIP_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            raise UserError(f"`{' '.join(command[1:])}` failed (see pip's output above)")
        sdists = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise UserError(f"pip downloaded no llama-cpp-python {version} sdist into {tmp}")
        return extract_chat_templates(sdists[0], target)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toolace.chat_template_files extract SDIST DEST`` (``make setup``) or ``fetch [DEST]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "extract":
        print(f"chat templates: {extract_chat_templates(args[1], args[2])}")
        return 0
    if args and args[0] == "fetch" and len(args) <= 2:
        print(f"chat templates: {fetch_chat_templates(args[1] if len(args) == 2 else None)}")
        return 0
    print("usage: python -m toolace.chat_template_files extract SDIST DEST | fetch [DEST]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

