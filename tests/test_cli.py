"""The `toolace` CLI: user errors stop at once with one clear line and exit status 2, no traceback."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from toolace.cli import app

runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one line, no traceback
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], result.output
    assert "Traceback" not in result.output


def test_missing_corpus(tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(invoke("run", "--corpus", str(missing), "--llm-base-url", "http://127.0.0.1:1/v1"),
                      str(missing), "does not exist")


def test_unreachable_endpoint(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert_user_error(invoke("run", "--llm-base-url", url, "--out", str(tmp_path)), "cannot reach", url)


def test_model_not_served(llm, tmp_path):
    assert_user_error(invoke("run", "--llm-base-url", llm.base_url, "--llm-model", "gpt-9", "--out", str(tmp_path)),
                      "does not serve model 'gpt-9'", "scripted-model", "--llm-model")


@pytest.mark.parametrize(("name", "text", "fragment"), [
    ("bad.yaml", "apis: [1, 2\n", "is not valid yaml"),
    ("bad.toml", "apis = \n", "is not valid toml"),
    ("unknown.yaml", "apiss: 3\n", "apiss"),
    ("secret.yaml", "api_key: sk-123\n", "holds a secret"),
    ("wrong.yaml", "dialogs: -1\n", "dialogs"),
])
def test_malformed_config(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    result = invoke("run", "--config", str(path))
    assert_user_error(result, fragment, str(path))
    assert "sk-123" not in result.output


def test_missing_config_file(tmp_path):
    assert_user_error(invoke("run", "--config", str(tmp_path / "none.yaml")), "none.yaml", "does not exist")


def test_flags_override_config_file(tmp_path, llm):
    """The file points at a closed port; the flag's endpoint (with an unknown model) is the one checked."""
    path = tmp_path / "c.yaml"
    path.write_text(f"llm_base_url: http://127.0.0.1:{closed_port()}/v1\nllm_model: x\n")
    result = invoke("run", "--config", str(path), "--llm-base-url", llm.base_url, "--out", str(tmp_path))
    assert_user_error(result, "does not serve model 'x'")


def test_help_lists_every_documented_option():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--corpus", "--out", "--apis", "--dialogs", "--llm-base-url", "--llm-model", "--concurrency",
                   "--target-model", "--config", "--run-id"):
        assert option in result.output
    assert invoke("serve-llm", "--help").exit_code == 0


# ------------------------------------------------------------ `toolace run` with no endpoint: embedded settings


@pytest.fixture
def captured_runs(monkeypatch):
    """Stops `toolace run` after its config is resolved: the configs it would run, in order."""
    import toolace.cli

    configs = []
    monkeypatch.setattr(toolace.cli, "_run", configs.append)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return configs


def test_run_without_flags_applies_the_embedded_settings_in_one_line(captured_runs):
    result = invoke("run")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("no endpoint, so the embedded model's settings apply: "), lines
    (config,) = captured_runs
    assert (config.apis, config.dialogs, config.decision_samples, config.guidance_rounds, config.model_checks) == \
        (8, 10, 1, 0, False)
    assert "multi_turn" not in config.dialog_mix


def test_explicit_flags_and_config_keys_win_over_the_embedded_settings(captured_runs, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decision_samples: 3\nmodel_checks: true\n")
    result = invoke("run", "--config", str(path), "--dialogs", "25")
    assert result.exit_code == 0, result.output
    (config,) = captured_runs
    assert (config.dialogs, config.decision_samples, config.model_checks) == (25, 3, True)
    assert (config.apis, config.guidance_rounds) == (8, 0)
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert "decision_samples" not in line and "model_checks" not in line and "dialogs 10" not in line
    assert "apis 8" in line and "guidance_rounds 0" in line


def test_run_with_an_endpoint_keeps_the_defaults_and_says_nothing(captured_runs):
    result = invoke("run", "--llm-base-url", "http://127.0.0.1:1/v1")
    assert result.exit_code == 0 and not result.output.strip(), result.output
    (config,) = captured_runs
    assert (config.apis, config.dialogs, config.decision_samples, config.guidance_rounds, config.model_checks) == \
        (20, 20, 3, 2, True)
