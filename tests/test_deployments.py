"""What deployments/prefect.yaml deploys must import and its parameters must validate."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow

from toolace.config import RunConfig

PREFECT_YAML = Path(__file__).parents[1] / "deployments" / "prefect.yaml"


def test_every_deployment_points_at_a_flow_with_valid_parameters():
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow)
        RunConfig(**deployment["parameters"]["config"])
        assert "api_key" not in str(deployment).lower()
