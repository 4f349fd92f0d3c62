"""What deployments/prefect.yaml deploys must import and its parameters must validate; the refresh deployment is
scheduled and incremental, and its completed runs trigger the downstream check; deployed runs work in this checkout
and take their endpoint key from a Secret block when they start; the CI workflow triggers and watches the refresh;
`toolace deploy` fails clearly. No server, except the session's Prefect test harness for the pull steps."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import socket
import uuid
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from typer.testing import CliRunner

from toolace.cli import app
from toolace.config import RunConfig
from toolace.deploy import DeployedDeployment, DeployResult, _trigger_text, secret_blocks, summary_lines, with_pool

DEPLOYMENTS = Path(__file__).parents[1] / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
CI_TRIGGER = DEPLOYMENTS / "ci-trigger.yml"
SECRET_WORDS = ("api_key", "apikey", "secret", "password", "token")
KEY_BLOCK = "toolace-openai-api-key"
SECRET_STEP = "toolace.deployment_steps.set_environment"


def deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


def keys_of(value: object) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value] + [k for v in value.values() for k in keys_of(v)]
    if isinstance(value, list):
        return [k for v in value for k in keys_of(v)]
    return []


def test_every_deployment_points_at_a_flow_with_valid_parameters():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow)
        flow.validate_parameters(deployment["parameters"])  # pydantic-checks the config against the flow
        assert "api_key" not in str(deployment).lower()


def test_downstream_deployment_checks_the_latest_run_at_the_documented_budget():
    from tasks.evaluation.downstream import DownstreamConfig

    config = DownstreamConfig(**deployments()["toolace-downstream-check"]["parameters"]["config"])
    assert (config.run, config.steps, config.lr, config.batch_size, config.limit) == ("./data", 60, 5e-5, 1, 100)
    assert config.categories == ["simple_python"]


def test_refresh_deployment_is_scheduled_on_the_process_pool_and_incremental():
    refresh = deployments()["toolace-refresh"]
    assert deployments()["toolace-run"]  # the one-off deployment stays
    assert refresh["work_pool"]["name"] == "toolace-process"
    [schedule] = refresh["schedules"]
    assert len(schedule["cron"].split()) == 5 and schedule["timezone"] == "UTC" and schedule["active"] is True
    config = RunConfig(**refresh["parameters"]["config"])
    assert config.reuse_mined is True  # documents mined before come from the ledger: only new ones are mined
    assert config.pool and config.pool.startswith(config.out.rstrip("/") + "/")  # the pool grows beside the runs
    assert config.corpus != RunConfig().corpus  # new documents, not the bundled sample corpus
    assert config.run_id is None  # every refresh is a new run folder
    assert refresh.get("concurrency_limit") == 1  # runs share the pool and the ledger


def test_prefect_file_holds_no_secret_or_endpoint():
    """The key is named only by the pull step that reads it from its Secret block when a run starts; nothing
    resolved at deploy time (job variables, parameters) names a key."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    pull = spec["pull"]
    for key in keys_of({**spec, "pull": [step for step in pull if SECRET_STEP not in step]}):
        assert not any(word in key.lower() for word in SECRET_WORDS), key
    for step in pull:
        for name, value in (step.get(SECRET_STEP) or {}).items():
            assert re.fullmatch(r"\{\{ prefect\.blocks\.secret\.[\w-]+ \}\}", value), (name, value)
    for deployment in spec["deployments"]:
        config = deployment["parameters"]["config"]
        assert "llm_base_url" not in config  # the worker's OPENAI_BASE_URL decides
        assert not (deployment.get("work_pool") or {}).get("job_variables", {}).get("env")
        assert "pull" not in deployment and "build" not in deployment  # the file's own steps apply to every one


def test_deployed_runs_work_in_this_checkout_and_read_the_key_from_a_secret_block():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    [build] = spec["build"]
    assert build["prefect.deployments.steps.run_shell_script"] == {"id": "checkout", "script": "pwd",
                                                                   "stream_output": False}
    workdir, environment = spec["pull"]
    assert workdir == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.stdout }}"}}
    assert environment == {SECRET_STEP: {"OPENAI_API_KEY": f"{{{{ prefect.blocks.secret.{KEY_BLOCK} }}}}"}}
    assert secret_blocks(spec) == [KEY_BLOCK]
    for step in (build, workdir, environment):  # every step names a function that imports
        module, name = next(iter(step)).rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


def test_the_pull_steps_run_as_a_deployed_run_runs_them(prefect_harness, tmp_path, monkeypatch):
    """Prefect's own step runner, as a flow run calls it: the working directory is set and the key comes from
    the Secret block, resolved when the steps run."""
    from prefect.blocks.system import Secret
    from prefect.deployments.steps.core import run_steps
    from prefect.utilities.templating import apply_values

    monkeypatch.chdir(tmp_path)  # put back after the test, as OPENAI_API_KEY is
    monkeypatch.setenv("OPENAI_API_KEY", "the worker's own")
    Secret(value="sk-MARKER-from-the-block").save(KEY_BLOCK, overwrite=True)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    pull = apply_values(yaml.safe_load(PREFECT_YAML.read_text())["pull"], {"checkout": {"stdout": str(checkout)}},
                        remove_notset=False)  # what `prefect deploy` does with the build step's output
    assert KEY_BLOCK in str(pull)  # the reference is kept for the run, not resolved at deploy time
    outputs = asyncio.run(run_steps(pull))
    assert Path.cwd() == checkout and outputs["directory"] == str(checkout)
    assert os.environ["OPENAI_API_KEY"] == "sk-MARKER-from-the-block"
    assert "sk-MARKER" not in str(outputs)  # step outputs name the variables only


def test_a_completed_refresh_triggers_the_downstream_check():
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    refresh, check = deployments()["toolace-refresh"], deployments()["toolace-downstream-check"]
    [trigger] = _initialize_deployment_triggers(check["name"], check["triggers"])  # as `prefect deploy` reads them
    deployment_id = uuid.uuid4()
    trigger.set_deployment_id(deployment_id)
    automation = trigger.as_automation()
    assert automation.enabled and [a.type for a in automation.actions] == ["run-deployment"]
    assert automation.actions[0].deployment_id == deployment_id and automation.actions[0].parameters is None
    assert _trigger_text(automation) == "on prefect.flow-run.Completed of toolace-pipeline/toolace-refresh"
    # the check's own parameters: the latest run under the output root the refresh publishes to
    assert check["parameters"]["config"]["run"] == refresh["parameters"]["config"]["out"]
    path, name = refresh["entrypoint"].split(":")
    refresh_flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name).name

    server_trigger = EventTrigger.model_validate(automation.trigger.model_dump(mode="json"))

    def event(state: str, flow: str, deployment: str) -> ReceivedEvent:
        run_id = uuid.uuid4()
        return ReceivedEvent(
            occurred="2026-01-01T03:10:00Z", event=f"prefect.flow-run.{state}", id=uuid.uuid4(),
            resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": "clever-fox"},
            related=[{"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}", "prefect.resource.role": "flow",
                      "prefect.resource.name": flow},
                     {"prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}",
                      "prefect.resource.role": "deployment", "prefect.resource.name": deployment}])

    assert server_trigger.immediate  # reactive, fires on the event itself
    assert server_trigger.covers(event("Completed", refresh_flow, "toolace-refresh"))
    assert not server_trigger.covers(event("Failed", refresh_flow, "toolace-refresh"))  # e.g. a rejected dataset
    assert not server_trigger.covers(event("Running", refresh_flow, "toolace-refresh"))
    assert not server_trigger.covers(event("Completed", refresh_flow, "toolace-run"))
    assert not server_trigger.covers(event("Completed", "toolace-downstream-check", "toolace-downstream-check"))


def test_ci_workflow_triggers_the_refresh_and_waits_for_it():
    workflow = yaml.safe_load(CI_TRIGGER.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "workflow_dispatch" in triggers
    [job] = workflow["jobs"].values()
    assert job["env"]["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
    assert job["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    assert "toolace-pipeline/toolace-refresh" in job["env"]["DEPLOYMENT"]
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert re.search(r"prefect deployment run \S+ --watch --watch-timeout \S+", commands)
    assert "pip install" in commands
    assert not any("continue-on-error" in step for step in job["steps"])  # a failed run fails the job


def test_with_pool_rewrites_only_the_selected_deployments():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    refresh = [d for d in spec["deployments"] if d["name"] == "toolace-refresh"]
    derived = with_pool(spec, refresh, "other-pool")
    pools = {d["name"]: d["work_pool"]["name"] for d in derived["deployments"]}
    assert pools == {"toolace-run": "toolace-process", "toolace-refresh": "other-pool",
                     "toolace-downstream-check": "toolace-process"}
    assert spec["deployments"][1]["work_pool"]["name"] == "toolace-process"  # the original is untouched


def test_summary_says_what_was_deployed_and_how_to_start_a_worker():
    trigger = "on prefect.flow-run.Completed of toolace-pipeline/toolace-refresh"
    result = DeployResult(api_url="http://127.0.0.1:4200/api", prefect_file=PREFECT_YAML,
                          pools_created=["toolace-process"], secret_blocks=[KEY_BLOCK],
                          deployed=[DeployedDeployment("toolace-pipeline/toolace-refresh", "toolace-process",
                                                       ["cron 0 3 * * * (UTC)"]),
                                    DeployedDeployment("toolace-downstream-check/toolace-downstream-check",
                                                       "toolace-process", [], [trigger])])
    text = "\n".join(summary_lines(result))
    assert "work pool toolace-process: created" in text
    assert "deployed toolace-pipeline/toolace-refresh (pool toolace-process, cron 0 3 * * * (UTC))" in text
    assert ("deployed toolace-downstream-check/toolace-downstream-check (pool toolace-process, no schedule; "
            f"triggered {trigger})") in text
    assert f"the runs read its key from the Secret block {KEY_BLOCK}" in text
    assert "prefect worker start --pool toolace-process" in text
    assert "prefect deployment run 'toolace-downstream-check/toolace-downstream-check' --watch" in text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def invoke_deploy(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["deploy", *args], env=env)


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_deploy_to_an_unreachable_api_names_prefect_api_url():
    url = f"http://127.0.0.1:{closed_port()}/api"
    assert_user_error(invoke_deploy("--api-url", url), "PREFECT_API_URL", url, "not reachable", "prefect server start")
    assert_user_error(invoke_deploy(env={"PREFECT_API_URL": url}), "PREFECT_API_URL", url)


def test_deploy_without_any_api_url_says_to_set_one(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert_user_error(invoke_deploy(), "PREFECT_API_URL is not set")


def test_deploy_with_a_missing_prefect_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert_user_error(invoke_deploy("--prefect-file", str(missing)), str(missing), "does not exist")


@pytest.mark.parametrize("text, fragment", [("deployments: [\n", "not valid YAML"),
                                            ("name: x\n", "no `deployments:` list"),
                                            ("deployments:\n  - name: a\n", "needs a name and an entrypoint")])
def test_deploy_with_a_broken_prefect_file(tmp_path, text, fragment):
    path = tmp_path / "prefect.yaml"
    path.write_text(text)
    assert_user_error(invoke_deploy("--prefect-file", str(path)), fragment)


def test_deploy_of_an_unknown_deployment_lists_the_known_ones():
    assert_user_error(invoke_deploy("--name", "nope", "--api-url", "http://127.0.0.1:1/api"),
                      "no deployment named nope", "toolace-refresh")
