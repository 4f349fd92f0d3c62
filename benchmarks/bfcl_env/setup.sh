#!/usr/bin/env bash
# Build the separate environment in which BFCL's own AST checker runs (benchmarks/bfcl_ast_timing.py).
# bfcl-eval is installed with --no-deps (its declared deps pin old numpy and pull many vendor SDKs,
# sentence-transformers, faiss...); requirements.txt holds only what its ast_checker module imports.
# Idempotent: a venv whose stamp matches this script's pins is left alone. Usage:
#   benchmarks/bfcl_env/setup.sh            # PYTHON=python3.11 to pick the interpreter
set -euo pipefail

BFCL_EVAL_VERSION=2026.3.23
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.bfcl-installed"
WANT="bfcl-eval==$BFCL_EVAL_VERSION $(sha256sum "$HERE/requirements.txt" | cut -c1-16)"
CHECK='from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker'

start=$(date +%s)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    echo "bfcl env up to date: $VENV ($WANT)"
    exit 0
fi

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "bfcl-eval==$BFCL_EVAL_VERSION"
"$VENV/bin/python" -c "$CHECK"
echo "$WANT" > "$STAMP"
echo "bfcl env ready: $VENV ($WANT) in $(( $(date +%s) - start ))s"
