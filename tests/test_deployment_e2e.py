"""Integration: a real Prefect server, `toolace deploy`, a process worker and `prefect deployment run --watch`.

The refresh deployment of deployments/prefect.yaml is deployed with its parameters pointed at a tiny corpus, a
temporary output folder and the scripted LLM server; a worker started from the repository root runs it in a
subprocess, twice: the second run mines only the document added since the first and grows the same pool. Each run
takes the endpoint key from the Secret block its pull step reads (the worker's environment has none), and each
completed refresh triggers a run of the downstream-check deployment (deployed too, on a pool no worker serves, so
the triggered runs wait there instead of training a model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.scripted_llm_server import schema_name
from toolace.config import SAMPLE_CORPUS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
DEPLOYMENT = "toolace-refresh"
POOL = "toolace-process"
CHECK = "toolace-downstream-check"
PARKED_POOL = "toolace-parked"  # no worker: the triggered downstream checks are created, never run
KEY_BLOCK = "toolace-openai-api-key"
API_KEY = "sk-MARKER-deployed-key-4e1d"
TRIGGER_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 120
WATCH_TIMEOUT_S = 240


DOCS = ("01-skycast-current-conditions-api.md", "05-aerotrack-flight-status-api.md",
        "07-shelfwise-catalog-search-api.md", "08-relaytext-sms-api.md")
# what mining extracts from each document of the tiny corpus (the default answer to the mining schema is a
# random verdict, which may reject all of them)
EXTRACTIONS = {
    "SkyCast": ("Weather", "Current Conditions", "get current weather conditions for a location"),
    "AeroTrack": ("Travel", "Flight Status", "look up the live status of a flight"),
    "Shelfwise": ("Ecommerce", "Catalog Search", "search products in a store catalog"),
    "RelayText": ("Messaging", "SMS", "send a transactional text message"),
}


def mining_answers(body: dict[str, Any]) -> dict[str, Any] | None:
    if schema_name(body) != "DocumentExtraction":
        return None
    text = str(body["messages"])
    for brand, (domain, subdomain, functionality) in EXTRACTIONS.items():
        if brand in text:
            return {"json": {"describes_functionality": True, "domain": domain, "subdomains": [subdomain],
                             "functionalities": [functionality]}}
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process's group and every descendant (a flow run may sit in a session of its own), then
    SIGKILL what is left."""
    if process.poll() is not None:
        return
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:
        children = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for child in children:
            try:
                os.kill(child.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(process.pid, sig)  # started with start_new_session: its group id is its pid
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


class Background:
    """Long-running subprocesses with their logs in files, all stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append((process, log))
        return process, log

    def stop_all(self) -> None:
        for process, _ in reversed(self.started):
            stop(process)


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Background]:
    processes = Background(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_", "OPENAI_")) and key != "PYTEST_CURRENT_TEST"}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PYTHONUNBUFFERED": "1"})
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_server(background: Background, env: dict[str, str]) -> str:
    port = free_port()
    process, log = background.start("server", [sys.executable, "-m", "prefect", "server", "start",
                                               "--host", "127.0.0.1", "--port", str(port)], env)
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return api_url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server did not answer /api/health in {SERVER_START_TIMEOUT_S} s:\n{tail(log)}")


def tiny_corpus(folder: Path) -> list[Path]:
    """Four API documents of the bundled sample corpus, one per brand of EXTRACTIONS."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(Path(SAMPLE_CORPUS) / name, folder / name)) for name in DOCS]


def refresh_prefect_file(tmp_path: Path, base_url: str) -> Path:
    """deployments/prefect.yaml with the refresh deployment, its schedule paused, pointed at tmp_path, and the
    downstream check with its trigger, on a pool no worker serves."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    [refresh] = [d for d in spec["deployments"] if d["name"] == DEPLOYMENT]
    [check] = [d for d in spec["deployments"] if d["name"] == CHECK]
    check["work_pool"]["name"] = PARKED_POOL
    config = refresh["parameters"]["config"]
    config.update({"corpus": str(tmp_path / "incoming"), "out": str(tmp_path / "out"),
                   "pool": str(tmp_path / "out" / "api_pool.jsonl"), "apis": 2, "dialogs": 2, "batch_size": 4,
                   "target_model": None, "llm_base_url": base_url, "llm_model": "scripted-model"})
    for schedule in refresh["schedules"]:
        schedule["active"] = False  # the cron is deployed and parsed, but no nightly run is scheduled here
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({**spec, "deployments": [refresh, check]}, sort_keys=False))
    return path


def save_secret(env: dict[str, str], name: str, value: str) -> None:
    """A Secret block on the server, saved as a user would (the value travels in the environment, not argv)."""
    done = run_command([sys.executable, "-c", "import os; from prefect.blocks.system import Secret; "
                        "Secret(value=os.environ['SECRET_VALUE']).save(os.environ['SECRET_NAME'], overwrite=True)"],
                       {**env, "SECRET_NAME": name, "SECRET_VALUE": value}, 120)
    assert done.returncode == 0, done.stdout + done.stderr


def triggered_checks(api_url: str) -> list[dict[str, Any]]:
    """The flow runs of the downstream-check deployment (made by its trigger), oldest first."""
    response = httpx.post(f"{api_url}/flow_runs/filter", timeout=10,
                          json={"deployments": {"name": {"any_": [CHECK]}}, "sort": "EXPECTED_START_TIME_ASC"})
    response.raise_for_status()
    return response.json()


def wait_for_checks(api_url: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TRIGGER_TIMEOUT_S
    while len(runs := triggered_checks(api_url)) < count and time.monotonic() < deadline:
        time.sleep(1)
    return runs


def run_command(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def trigger(env: dict[str, str], worker_log: Path) -> tuple[str, float]:
    """`prefect deployment run --watch` from the CLI: exit 0 and the flow run's id."""
    started = time.monotonic()
    done = run_command([sys.executable, "-m", "prefect", "deployment", "run", f"toolace-pipeline/{DEPLOYMENT}",
                        "--watch", "--watch-timeout", str(WATCH_TIMEOUT_S)], env, WATCH_TIMEOUT_S + 60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output[-4000:]}\n--- worker ---\n{tail(worker_log, 80)}"
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1), time.monotonic() - started


def flow_run(api_url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def manifests(out: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (out / "runs").glob("*/manifest.json")]
    return sorted(found, key=lambda m: m["started_at"])


def test_deploy_then_trigger_the_refresh_from_the_cli(llm, tmp_path, background):
    llm.script(mining_answers)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        home = tmp_path / "prefect-home"
        api_url = start_server(background, prefect_env(home))
        timings["server"] = time.monotonic() - t0
        env = prefect_env(home, api_url)

        docs = tiny_corpus(tmp_path / "incoming")
        extra = docs.pop()
        extra_text = extra.read_bytes()
        extra.unlink()  # added before the second run
        prefect_file = refresh_prefect_file(tmp_path, llm.base_url)

        t0 = time.monotonic()
        save_secret(env, KEY_BLOCK, API_KEY)
        deployed = run_command([sys.executable, "-m", "toolace.cli", "deploy", "--prefect-file", str(prefect_file)],
                               env, 300)
        timings["deploy"] = time.monotonic() - t0
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"work pool {POOL}: created (process)" in deployed.stdout
        assert f"deployed toolace-pipeline/{DEPLOYMENT} (pool {POOL}, cron 0 3 * * * (UTC), paused)" in \
            deployed.stdout
        assert (f"deployed {CHECK}/{CHECK} (pool {PARKED_POOL}, no schedule; triggered on prefect.flow-run.Completed "
                f"of toolace-pipeline/{DEPLOYMENT})") in deployed.stdout, deployed.stdout
        assert f"prefect worker start --pool {POOL}" in deployed.stdout
        assert "note:" not in deployed.stdout  # the Secret block is there
        assert API_KEY not in deployed.stdout + deployed.stderr
        [check_deployment] = httpx.post(f"{api_url}/deployments/filter", timeout=10,
                                        json={"deployments": {"name": {"any_": [CHECK]}}}).json()
        [refresh_deployment] = httpx.post(f"{api_url}/deployments/filter", timeout=10,
                                          json={"deployments": {"name": {"any_": [DEPLOYMENT]}}}).json()
        for deployment in (check_deployment, refresh_deployment):  # the key is not stored with the deployment
            assert API_KEY not in json.dumps(deployment) and KEY_BLOCK in json.dumps(deployment["pull_steps"])
        assert not triggered_checks(api_url)

        _, worker_log = background.start("worker", [sys.executable, "-m", "prefect", "worker", "start",
                                                    "--pool", POOL, "--limit", "1"], env)

        first_id, timings["first_run"] = trigger(env, worker_log)
        assert flow_run(api_url, first_id)["state_type"] == "COMPLETED"
        assert llm.api_keys and set(llm.api_keys) == {API_KEY}, llm.api_keys  # from the block, every request
        t0 = time.monotonic()
        [check_run] = wait_for_checks(api_url, 1)  # the completed refresh triggered the downstream check
        timings["trigger"] = time.monotonic() - t0
        assert check_run["deployment_id"] == check_deployment["id"] and check_run["state_type"] == "SCHEDULED"
        [first] = manifests(tmp_path / "out")
        assert first["stages"]["mining"]["items_in"] == 3 and first["stages"]["mining"]["reused"] == 0
        assert first["stages"]["mining"]["accepted"] == 3
        assert first["config"]["corpus"] == str(tmp_path / "incoming")
        assert first["api_pool"]["apis_before"] == 0 and first["api_pool"]["added"] >= 1
        assert first["dataset"]["dialogs"] == 2
        mined_first = first["stages"]["mining"]["llm_requests"]

        (tmp_path / "incoming" / extra.name).write_bytes(extra_text)  # one new document arrives
        second_id, timings["second_run"] = trigger(env, worker_log)
        assert flow_run(api_url, second_id)["state_type"] == "COMPLETED"
        assert len(wait_for_checks(api_url, 2)) == 2  # one downstream check per completed refresh
        first, second = manifests(tmp_path / "out")
        assert second["stages"]["mining"]["items_in"] == 4
        assert second["stages"]["mining"]["reused"] == 3  # only the new document was mined
        assert 0 < second["stages"]["mining"]["llm_requests"] <= mined_first
        assert second["api_pool"]["apis_before"] == first["api_pool"]["apis_before"] + first["api_pool"]["added"]
        assert second["api_pool"]["added"] >= 1
        pool_rows = (tmp_path / "out" / "api_pool.jsonl").read_text().splitlines()
        assert len(pool_rows) >= first["api_pool"]["added"] + second["api_pool"]["added"]
    finally:
        background.stop_all()
        print("e2e timings (s):", {k: round(v, 1) for k, v in timings.items()})
