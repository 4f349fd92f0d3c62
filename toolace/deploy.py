"""``toolace deploy``: apply the deployments of a prefect.yaml to a running Prefect API.

The API must be reachable first (a deployment made on a temporary local server would vanish with it). Missing
work pools are created as process pools, then ``prefect --no-prompt deploy`` runs from the repository root, so
the entrypoints resolve and the deployments' working directory is this checkout. What was deployed is read back
from the API.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolace.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREFECT_FILE = Path("deployments") / "prefect.yaml"
DEFAULT_POOL = "toolace-process"
HEALTH_TIMEOUT_S = 10.0
DEPLOY_TIMEOUT_S = 600
SECRET_REFERENCE = re.compile(r"\{\{\s*prefect\.blocks\.secret\.([\w-]+)(?:\.value)?\s*\}\}")
START_SERVER_HINT = ("start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
                     "(or PREFECT_API_URL and PREFECT_API_KEY of a Prefect Cloud workspace), or pass --api-url")


@dataclass(frozen=True)
class DeployedDeployment:
    name: str  # flow/deployment, as `prefect deployment run` takes it
    work_pool: str | None
    schedules: list[str]
    triggers: list[str] = field(default_factory=list)  # the automations the deployment owns, described


@dataclass
class DeployResult:
    api_url: str
    prefect_file: Path
    pools_created: list[str] = field(default_factory=list)
    pools_found: list[str] = field(default_factory=list)
    deployed: list[DeployedDeployment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    secret_blocks: list[str] = field(default_factory=list)  # the Secret blocks deployed runs read


def resolve_api_url(api_url: str | None = None) -> str:
    """``--api-url``, else PREFECT_API_URL from the environment or the active Prefect profile."""
    if api_url:
        return api_url.rstrip("/")
    from prefect.settings import PREFECT_API_URL

    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not configured:
        raise UserError(f"PREFECT_API_URL is not set, so there is no Prefect API to deploy to: {START_SERVER_HINT}")
    return str(configured).rstrip("/")


def check_api(api_url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """GET ``{api_url}/health``; a UserError naming PREFECT_API_URL when the API does not answer."""
    import httpx

    headers = {"Authorization": f"Bearer {os.environ['PREFECT_API_KEY']}"} if os.environ.get("PREFECT_API_KEY") else {}
    try:
        response = httpx.get(f"{api_url}/health", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        raise UserError(f"the Prefect API at {api_url} (PREFECT_API_URL) is not reachable ({detail}): "
                        f"{START_SERVER_HINT}") from None
    if response.status_code != 200:
        raise UserError(f"the Prefect API at {api_url} (PREFECT_API_URL) answered /health with HTTP "
                        f"{response.status_code}: check PREFECT_API_URL (it ends in /api) and PREFECT_API_KEY")


def load_prefect_file(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"prefect file {file} does not exist: pass --prefect-file (default {DEFAULT_PREFECT_FILE} "
                        "of the repository)")
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"prefect file {file} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list) or not spec["deployments"]:
        raise UserError(f"prefect file {file} has no `deployments:` list")
    for number, deployment in enumerate(spec["deployments"], start=1):
        if not isinstance(deployment, dict) or not deployment.get("name") or not deployment.get("entrypoint"):
            raise UserError(f"prefect file {file}: deployment {number} needs a name and an entrypoint")
    return spec


def select_deployments(spec: dict[str, Any], names: list[str], prefect_file: Path) -> list[dict[str, Any]]:
    """The deployments named (all when none is), in file order."""
    available = [d["name"] for d in spec["deployments"]]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"no deployment named {', '.join(unknown)} in {prefect_file}: choose from "
                        f"{', '.join(available)}")
    return [d for d in spec["deployments"] if not names or d["name"] in names]


def pool_of(deployment: dict[str, Any]) -> str | None:
    work_pool = deployment.get("work_pool")
    return work_pool.get("name") if isinstance(work_pool, dict) else None


def with_pool(spec: dict[str, Any], selected: list[dict[str, Any]], pool: str) -> dict[str, Any]:
    """A copy of the prefect file whose selected deployments use ``pool``."""
    names = {d["name"] for d in selected}
    deployments = []
    for deployment in spec["deployments"]:
        if deployment["name"] in names:
            work_pool = dict(deployment.get("work_pool") or {})
            work_pool["name"] = pool
            deployment = {**deployment, "work_pool": work_pool}
        deployments.append(deployment)
    return {**spec, "deployments": deployments}


def missing_inputs(selected: list[dict[str, Any]], root: Path) -> list[str]:
    """Notes on local corpus folders that do not exist yet (a run would fail on them)."""
    notes = []
    for deployment in selected:
        config = (deployment.get("parameters") or {}).get("config") or {}
        corpus = config.get("corpus")
        if isinstance(corpus, str) and "://" not in corpus and not (root / corpus).exists():
            notes.append(f"{deployment['name']}: corpus {corpus} does not exist yet under {root}: put documents "
                         "there before its first run")
    return notes


def secret_blocks(spec: dict[str, Any]) -> list[str]:
    """The Secret blocks the prefect file refers to (``{{ prefect.blocks.secret.NAME }}``), in order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.extend(SECRET_REFERENCE.findall(value))

    walk(spec)
    return list(dict.fromkeys(found))


def missing_secrets(api_url: str, names: list[str]) -> list[str]:
    """Notes on Secret blocks the API does not hold (a deployed run would stop at its pull step); their values
    are never read."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    notes = []
    with _api_errors(api_url), temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_block_document_by_name(name, block_type_slug="secret", include_secrets=False)
            except ObjectNotFound:
                notes.append(f"Secret block {name} does not exist yet: deployed runs stop at their pull step until "
                             "you create it (`prefect block create secret` links to the form in the UI; any value, "
                             "such as EMPTY, for an endpoint without a key)")
    return notes


def ensure_process_pools(api_url: str, pools: list[str]) -> tuple[list[str], list[str]]:
    """Create each missing pool as a process pool; returns (created, already there)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    created, found = [], []
    with _api_errors(api_url), temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        for pool in pools:
            try:
                existing = client.read_work_pool(pool)
                found.append(f"{pool} ({existing.type})")
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(
                    name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
                created.append(pool)
    return created, found


def run_prefect_deploy(api_url: str, prefect_file: Path, names: list[str], root: Path) -> None:
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    command += [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    env = {**os.environ, "PREFECT_API_URL": api_url}
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"`prefect deploy` did not finish in {DEPLOY_TIMEOUT_S} s against {api_url}") from None
    if done.returncode != 0:
        raise UserError(f"`prefect deploy` failed (exit {done.returncode}): {_tail(done.stdout + done.stderr)}")


def read_back(api_url: str, names: list[str]) -> list[DeployedDeployment]:
    """The deployments of these names as the API now holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    found = []
    with _api_errors(api_url), temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        deployments = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))
        flow_names: dict[Any, str] = {}
        for deployment in deployments:
            if deployment.flow_id not in flow_names:
                flow_names[deployment.flow_id] = client.read_flow(deployment.flow_id).name
            automations = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
            found.append(DeployedDeployment(
                name=f"{flow_names[deployment.flow_id]}/{deployment.name}",
                work_pool=deployment.work_pool_name,
                schedules=[_schedule_text(s.schedule, s.active) for s in deployment.schedules or []],
                triggers=[_trigger_text(a) for a in automations if _runs(a, deployment.id)],
            ))
    return sorted(found, key=lambda d: names.index(d.name.split("/", 1)[1]))


def deploy(prefect_file: str | Path = DEFAULT_PREFECT_FILE, names: list[str] | None = None, pool: str | None = None,
           api_url: str | None = None, root: Path = PROJECT_ROOT) -> DeployResult:
    """Check the API, create missing work pools, deploy, and read the deployments back."""
    names = list(names or [])
    file = Path(prefect_file)
    file = file if file.is_absolute() or file.is_file() else root / file  # the default is relative to the repo
    spec = load_prefect_file(file)
    selected = select_deployments(spec, names, file)
    url = resolve_api_url(api_url)
    check_api(url)
    result = DeployResult(api_url=url, prefect_file=file.resolve(), notes=missing_inputs(selected, root))
    # --pool, or a deployment without a work pool, needs a copy of the file with the pool filled in
    rewrite = [d for d in selected if pool or not pool_of(d)]
    effective = with_pool(spec, rewrite, pool or DEFAULT_POOL) if rewrite else spec
    pools = list(dict.fromkeys(str(pool_of(d)) for d in select_deployments(effective, names, file)))
    result.pools_created, result.pools_found = ensure_process_pools(url, pools)
    result.secret_blocks = secret_blocks(effective)
    result.notes += missing_secrets(url, result.secret_blocks)
    if not rewrite:
        run_prefect_deploy(url, result.prefect_file, names, root)
    else:
        with tempfile.TemporaryDirectory(prefix="toolace-deploy-") as folder:
            copy = Path(folder) / "prefect.yaml"
            copy.write_text(yaml.safe_dump(effective, sort_keys=False), encoding="utf-8")
            run_prefect_deploy(url, copy, names, root)
    wanted = [d["name"] for d in selected]
    result.deployed = read_back(url, wanted)
    missing = sorted(set(wanted) - {d.name.split("/", 1)[1] for d in result.deployed})
    if missing:
        raise UserError(f"`prefect deploy` ran but {url} holds no deployment {', '.join(missing)}: run "
                        f"`prefect --no-prompt deploy --all --prefect-file {file}` from {root} to see why")
    return result


def summary_lines(result: DeployResult) -> list[str]:
    lines = [f"Prefect API: {result.api_url}"]
    lines += [f"work pool {pool}: created (process)" for pool in result.pools_created]
    lines += [f"work pool {pool}: already there" for pool in result.pools_found]
    for deployment in result.deployed:
        schedule = "; ".join(deployment.schedules) or "no schedule"
        triggers = "".join(f"; triggered {trigger}" for trigger in deployment.triggers)
        lines.append(f"deployed {deployment.name} (pool {deployment.work_pool}, {schedule}{triggers})")
    lines += [f"note: {note}" for note in result.notes]
    pools = sorted({d.work_pool for d in result.deployed if d.work_pool})
    lines.append("next:")
    endpoint = (f"OPENAI_BASE_URL set for a real endpoint; the runs read its key from the Secret block "
                f"{', '.join(result.secret_blocks)}" if result.secret_blocks
                else "OPENAI_BASE_URL / OPENAI_API_KEY set for a real endpoint")
    for pool in pools:
        lines.append(f"  start a worker from {PROJECT_ROOT} (with {endpoint}): prefect worker start --pool {pool}")
    if result.deployed:
        lines.append(f"  run one now and wait for it: prefect deployment run '{result.deployed[-1].name}' --watch")
    return lines


@contextlib.contextmanager
def _api_errors(api_url: str) -> Iterator[None]:
    """HTTP errors of the Prefect client as one-line user errors."""
    import httpx

    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise UserError(f"the Prefect API at {api_url} refused {exc.request.method} {exc.request.url.path} with HTTP "
                        f"{exc.response.status_code}: check PREFECT_API_URL and PREFECT_API_KEY") from None
    except httpx.HTTPError as exc:
        raise UserError(f"the Prefect API at {api_url} (PREFECT_API_URL) stopped answering: {exc}") from None


def _schedule_text(schedule: Any, active: bool) -> str:
    if getattr(schedule, "cron", None):
        text = f"cron {schedule.cron} ({schedule.timezone or 'UTC'})"
    elif getattr(schedule, "interval", None):
        text = f"every {schedule.interval}"
    elif getattr(schedule, "rrule", None):
        text = f"rrule {schedule.rrule}"
    else:
        text = str(schedule)
    return text if active else f"{text}, paused"


def _runs(automation: Any, deployment_id: Any) -> bool:
    """Whether the automation runs this deployment (a deployment trigger does)."""
    return any(action.type == "run-deployment" and getattr(action, "deployment_id", None) == deployment_id
               for action in automation.actions)


def _trigger_text(automation: Any) -> str:
    """``on prefect.flow-run.Completed of toolace-pipeline/toolace-refresh`` for a deployment trigger."""
    trigger = automation.trigger
    events = ", ".join(sorted(getattr(trigger, "expect", None) or ())) or f"a {trigger.type} trigger"
    related = getattr(trigger, "match_related", None) or []
    specs = related if isinstance(related, list) else [related]
    names = [str(spec.root["prefect.resource.name"]) for spec in specs if spec.root.get("prefect.resource.name")]
    text = f"on {events}" + (f" of {'/'.join(names)}" if names else "")
    return text if automation.enabled else f"{text}, disabled"


def _tail(output: str, lines: int = 12) -> str:
    kept = [line.rstrip() for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"
