"""Resolving the LLM endpoint of a run: check a configured one, or start the embedded model.

Failures here are user errors (unreachable server, unknown model) and stop the run at once with one
line that says what to fix.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai

from toolace.errors import EndpointError
from toolace.llm.embedded_server import DEFAULT_ALIAS


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    embedded: bool


def served_models(base_url: str, timeout_s: float = 10.0) -> list[str]:
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                           max_retries=1, timeout=timeout_s)
    try:
        return [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise EndpointError(
            f"cannot reach the LLM endpoint at {base_url} ({type(exc.__cause__ or exc).__name__}): start the "
            "server, fix --llm-base-url, or leave it unset to use the embedded model"
        ) from exc
    except openai.AuthenticationError as exc:
        raise EndpointError(f"the LLM endpoint at {base_url} refused the API key: set OPENAI_API_KEY") from exc
    except openai.APIStatusError as exc:
        raise EndpointError(
            f"the LLM endpoint at {base_url} answered HTTP {exc.status_code} to GET /models: is it an "
            "OpenAI-compatible /v1 base URL?"
        ) from exc
    finally:
        client.close()


def check_endpoint(base_url: str, model: str | None) -> Endpoint:
    models = served_models(base_url)
    if model is None:
        if len(models) != 1:
            raise EndpointError(
                f"the endpoint at {base_url} serves {len(models)} models ({', '.join(models[:10])}): "
                "choose one with --llm-model"
            )
        model = models[0]
    elif models and model not in models:
        raise EndpointError(
            f"the endpoint at {base_url} does not serve model '{model}' (it serves: {', '.join(models[:10])}): "
            "fix --llm-model"
        )
    return Endpoint(base_url=base_url, model=model, embedded=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def embedded_endpoint(startup_timeout_s: float = 180.0, model_path: str | None = None, alias: str = DEFAULT_ALIAS,
                      instances: int | None = None, n_ctx: int | None = None,
                      tool_template_file: str | None = None) -> Iterator[Endpoint]:
    """Start the embedded model server on 127.0.0.1, wait until it answers, stop it afterwards. By default it
    serves SmolLM2 under :data:`DEFAULT_ALIAS`; ``model_path`` (a GGUF file) and ``alias`` serve another model,
    ``instances`` sets its parallel slots (default ``TOOLACE_LLM_INSTANCES`` or the CPU count), ``n_ctx`` each
    slot's context (default the server's), ``tool_template_file`` a chat template that offers tools the model's own
    way (:class:`toolace.llm.embedded_server.EmbeddedModel`)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise EndpointError(
            "no LLM endpoint is configured and the embedded model's llama-cpp-python is not installed: "
            "pip install 'toolace-platform[embedded]' (or run `make setup`), or pass --llm-base-url"
        ) from exc
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = tempfile.TemporaryFile()
    command = [sys.executable, "-m", "toolace.llm.embedded_server", "--host", "127.0.0.1", "--port", str(port),
               "--parent-pid", str(os.getpid())]  # the server stops if this process dies before stopping it
    if model_path is not None:
        command += ["--model-path", str(model_path)]
    if alias != DEFAULT_ALIAS:
        command += ["--alias", alias]
    if n_ctx is not None:
        command += ["--n-ctx", str(n_ctx)]
    if tool_template_file is not None:
        command += ["--tool-template", str(tool_template_file)]
    env = {**os.environ, "TOOLACE_LLM_INSTANCES": str(instances)} if instances is not None else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
                raise EndpointError(f"the embedded model server exited at start-up: {' '.join(tail)}")
            try:
                ready = alias in served_models(base_url, timeout_s=2.0)
            except EndpointError:
                ready = False
            if time.monotonic() > deadline:  # an answer that came after the deadline is late all the same
                raise EndpointError(f"the embedded model server did not answer within {startup_timeout_s:.0f} s")
            if ready:
                break
            time.sleep(0.5)
        yield Endpoint(base_url=base_url, model=alias, embedded=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def llm_endpoint(base_url: str | None, model: str | None) -> Iterator[Endpoint]:
    """The configured endpoint, checked; or, when none is configured, the embedded model."""
    if base_url:
        yield check_endpoint(base_url, model)
    else:
        with embedded_endpoint() as endpoint:
            yield endpoint
