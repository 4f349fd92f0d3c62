"""Prefect deployment steps of our own, for the ``pull:`` section of ``deployments/prefect.yaml``.

Pull steps run in the flow-run process when a deployed run starts, before the flow is loaded; Prefect resolves
their ``{{ prefect.blocks.secret.NAME }}`` references at that moment. Block references anywhere else in a
deployment (``job_variables.env`` included) are resolved by ``prefect deploy`` and stored, value and all, with
the deployment, where its Configuration tab in the UI shows them.
"""

from __future__ import annotations

import os


def set_environment(**variables: str) -> dict[str, list[str]]:
    """Set environment variables of the flow-run process, e.g. the endpoint's key from a Secret block::

        pull:
          - toolace.deployment_steps.set_environment:
              OPENAI_API_KEY: "{{ prefect.blocks.secret.toolace-openai-api-key }}"

    Returns the names it set, never the values (step outputs may be printed)."""
    for name, value in variables.items():
        if not isinstance(value, str):
            raise ValueError(f"environment variable {name}: expected a string, got {type(value).__name__} (a Secret "
                             "block holding JSON? store the plain value)")
        os.environ[name] = value
    return {"environment": sorted(variables)}
