"""The layers hold: flows above tasks above schemas, no Prefect under tasks/, the LLM gateway imports no stage, and
the stage packages under tasks/ have no import cycle, nor the CLI's modules (import-linter, with the contracts in
pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    contracts = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert f"Contracts: {contracts} kept, 0 broken." in done.stdout


def test_tasks_is_grouped_into_packages_by_stage_and_concern() -> None:
    loose = sorted(p.name for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside a stage package: {loose}"
    assert {p.name for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").is_file()} == {
        "corpus", "embedding", "context_tree", "apis", "dialogs", "verification", "formats", "dataset", "storage",
        "evaluation", "training", "mcp", "environments"}
