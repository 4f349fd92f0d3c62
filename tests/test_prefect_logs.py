"""A flow run's INFO logs reach the Prefect API (a finished run opened in the UI shows them) while the terminal
stays quiet: the CLI's Prefect environment (`toolace.cli.prefect_env`) raises only Prefect's console handler to
WARNING and leaves PREFECT_LOGGING_LEVEL alone; `--verbose` shows INFO on the terminal too.

The flow runs in a subprocess, as `toolace run` does: the environment is prepared before Prefect is imported there
(its logging reads it once), against the session's Prefect test server, whose API then holds the logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest

from toolace.cli.prefect_env import CONSOLE_LEVEL, prepare_prefect_env

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import sys

from toolace.cli.prefect_env import prepare_prefect_env

prepare_prefect_env(verbose=sys.argv[1] == "verbose")  # what `toolace run` does before importing the flows

from prefect import flow, get_run_logger
from prefect.runtime import flow_run


@flow(name="toolace-log-check")
def log_check() -> str:
    get_run_logger().info("INFO-MARKER from the flow")
    get_run_logger().warning("WARNING-MARKER from the flow")
    return flow_run.id


print("FLOW-RUN-ID", log_check())
'''


def test_the_prefect_env_quiets_only_the_console():
    env: dict[str, str] = {}
    prepare_prefect_env(environ=env)
    assert env[CONSOLE_LEVEL] == "WARNING" and "PREFECT_LOGGING_LEVEL" not in env
    mine = {CONSOLE_LEVEL: "ERROR"}
    prepare_prefect_env(environ=mine)
    assert mine[CONSOLE_LEVEL] == "ERROR"  # the user's own setting wins...
    prepare_prefect_env(verbose=True, environ=mine)
    assert mine[CONSOLE_LEVEL] == "INFO"  # ...but not over --verbose


def flow_run_logs(flow_run_id: str) -> list[tuple[int, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])))
    return [(log.level, log.message) for log in logs]


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_flow_logs_reach_the_prefect_api_and_the_console_stays_quiet(prefect_harness, tmp_path, mode):
    from prefect.settings import PREFECT_API_URL

    script = tmp_path / "log_check.py"
    script.write_text(SCRIPT)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_LOGGING")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    done = subprocess.run([sys.executable, str(script), mode], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-3000:]
    flow_run_id = re.search(r"FLOW-RUN-ID (\S+)", done.stdout).group(1)

    deadline = time.monotonic() + 20
    logs = flow_run_logs(flow_run_id)
    while not any("INFO-MARKER" in message for _, message in logs) and time.monotonic() < deadline:
        time.sleep(0.5)
        logs = flow_run_logs(flow_run_id)
    assert (20, "INFO-MARKER from the flow") in logs  # the UI shows the run's INFO logs
    assert any("Finished in state Completed" in message for _, message in logs)  # Prefect's own, too

    assert "WARNING-MARKER from the flow" in terminal  # warnings still reach the terminal
    if mode == "quiet":
        assert "INFO-MARKER" not in terminal and "| INFO" not in terminal, terminal
    else:
        assert "INFO-MARKER from the flow" in terminal
