"""The `toolace` CLI: user errors stop at once with one clear line and exit status 1, no traceback; usage errors
exit 2 (Click's own); a rejected dataset exits 3. --help shows every default, --version the package version."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

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
    assert result.exit_code == 1, result.output
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
    import toolace.cli.run

    configs = []
    monkeypatch.setattr(toolace.cli.run, "_run", configs.append)
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


def test_run_takes_openai_base_url_after_the_config_file(captured_runs, tmp_path, monkeypatch):
    """OPENAI_BASE_URL is the flag's environment variable (shown in --help), yet only fills in for an endpoint
    neither the flag nor the config file sets."""
    path = tmp_path / "c.yaml"
    path.write_text("llm_base_url: http://from-the-file/v1\n")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://from-the-env/v1")
    assert invoke("run", "--config", str(path)).exit_code == 0
    assert invoke("run").exit_code == 0
    assert invoke("run", "--config", str(path), "--llm-base-url", "http://from-the-flag/v1").exit_code == 0
    assert [c.llm_base_url for c in captured_runs] == ["http://from-the-file/v1", "http://from-the-env/v1",
                                                       "http://from-the-flag/v1"]


def test_choices_are_checked_by_the_parser(captured_runs):
    assert invoke("run", "--task-runner", "dask").exit_code == 0
    assert captured_runs[-1].task_runner == "dask"
    result = invoke("run", "--task-runner", "ray")
    assert result.exit_code == 2 and "'ray' is not one of 'thread', 'dask'" in unboxed(result.output)
    assert len(captured_runs) == 1


def test_a_rejected_dataset_exits_3(captured_runs, monkeypatch):
    import toolace.cli.run
    from flows.toolace_pipeline import DatasetRejected

    def rejected(cfg):
        raise DatasetRejected("run x: the published-dataset expectation suite failed (gx_unique_ids_v1)")

    monkeypatch.setattr(toolace.cli.run, "_run", rejected)
    result = invoke("run", "--llm-base-url", "http://127.0.0.1:1/v1")
    assert result.exit_code == 3, result.output
    assert result.output.strip() == "error: run x: the published-dataset expectation suite failed (gx_unique_ids_v1)"


def test_run_keeps_prefect_logs_for_the_api_and_the_console_quiet(captured_runs, monkeypatch):
    from toolace.cli.prefect_env import CONSOLE_LEVEL

    monkeypatch.delenv(CONSOLE_LEVEL, raising=False)
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    assert invoke("run", "--llm-base-url", "http://127.0.0.1:1/v1").exit_code == 0
    assert os.environ[CONSOLE_LEVEL] == "WARNING" and "PREFECT_LOGGING_LEVEL" not in os.environ
    assert invoke("run", "-v", "--llm-base-url", "http://127.0.0.1:1/v1").exit_code == 0
    assert os.environ[CONSOLE_LEVEL] == "INFO"


def test_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"toolace {version('toolace-platform')}\n"
    done = subprocess.run([sys.executable, "-m", "toolace.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == result.output


def unboxed(output: str) -> str:
    """Typer's rich output without the boxes and the line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def plain_help(*args: str) -> str:
    result = invoke(*args, "--help")
    assert result.exit_code == 0, result.output
    return unboxed(result.output)


def test_help_shows_the_exit_statuses_and_the_key_variable():
    text = plain_help()
    for status in ("0 done", "1 user error", "2 usage error", "3 the dataset failed its expectation suite"):
        assert status in text
    assert "OPENAI_API_KEY" in text and "OPENAI_BASE_URL" in text


def test_help_shows_every_default():
    """Every option that takes a value shows its default: the signature's, or, for options a config file may
    also set (None in the signature, so that the file's value wins), the one that applies."""
    import typer.main

    from toolace.cli import app

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))
            else:
                yield (*prefix, name), command

    checked = 0
    for path, command in commands(typer.main.get_command(app)):
        for param in command.params:
            if param.param_type_name != "option" or param.is_flag or param.name == "help":
                continue
            if param.required:
                continue
            assert param.show_default is not False, (path, param.name)
            assert param.default is not None or isinstance(param.show_default, str), (path, param.name)
            checked += 1
    assert checked > 50
    run_help = plain_help("run")
    assert "[default: (20; 8 with the embedded model)]" in run_help
    assert "[default: (20; 10 with the embedded model)]" in run_help
    assert "[env var: OPENAI_BASE_URL]" in run_help and "OPENAI_API_KEY" in run_help
    assert "<thread|dask>" in run_help and "[default: (thread)]" in run_help
    assert "[default: auto]" in plain_help("verify") and "<rules|all>" in plain_help("verify")
    assert "[env var: PREFECT_API_URL]" in plain_help("deploy")


def test_log_lines_reach_a_narrow_terminal_whole_and_as_written():
    """Training and evaluation report through ``line_printer``: a line longer than the terminal is not broken (a long
    path stays whole, the words after it stay on its line) and brackets in a path are not read as markup."""
    import io

    from rich.console import Console

    from toolace.cli.log_lines import line_printer

    out = io.StringIO()
    line = ("read 2 samples from /tmp/pytest-of-root/pytest-12/popen-gw1/[run 3]/native0/openai.jsonl: 2 used, "
            "skipped 0; 6 examples, native format")
    line_printer(Console(file=out, width=40))(line)
    assert out.getvalue() == line + "\n"


def test_the_run_summary_prints_a_folder_and_run_id_that_read_as_markup_as_they_are():
    import io

    from rich.console import Console

    from toolace.cli.run import _print_summary

    out = io.StringIO()
    stage = {"items_in": 1, "accepted": 1, "rejected": 0, "reused": 0, "llm_requests": 2, "tokens_in": 3,
             "tokens_out": 4, "cache_hits": 0, "wall_time_s": 0.5}
    _print_summary(Console(file=out, width=200), {"run_id": "[bold]r", "run_dir": "/data/[/x]/runs/r",
                                                  "accepted_dialogs": 1, "stages": {"mining": stage}})
    assert "run [bold]r" in out.getvalue()
    assert "1 accepted dialogs: /data/[/x]/runs/r/dataset/{toolace,openai}.jsonl" in out.getvalue()
