"""Result schemas for MCP tools that declare none, inferred from executed calls where that is allowed.

A tool listed without an ``outputSchema`` is imported with ``{"type": "object"}`` and ``result_schema: "unknown"``
in its provenance (:mod:`tasks.mcp.tool_import`). With ``toolace import-apis --infer-results`` each such tool that
may be executed under the import's policy (read-only, not destructive: :func:`tasks.mcp.execution.execution_refusal`)
and whose required parameters all have a value the schema itself gives (``default``, ``const``, the first of
``examples`` or ``enum``) is called once in the sandbox with those arguments; a call that succeeds sets the tool's
result schema to the one its result validates against (:func:`tasks.mcp.tool_import.infer_result_schema`) and its
provenance to ``inferred``. Every other tool keeps ``unknown``, with the reason in the returned notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.records import APISpec
from tasks.mcp.execution import ExecutionPolicy, MCPToolExecutor, execution_refusal
from tasks.mcp.tool_import import infer_result_schema

_MISSING = object()


@dataclass(frozen=True)
class Inference:
    """What happened to one tool: ``inferred`` or why it kept ``unknown``."""

    tool: str
    inferred: bool
    note: str


def example_value(schema: Any) -> Any:
    """A value the parameter's own schema offers (default, const, first example, first enum value), else a marker
    that there is none."""
    if not isinstance(schema, dict):
        return _MISSING
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("examples", "enum"):
        values = schema.get(key)
        if isinstance(values, list) and values:
            return values[0]
    return _MISSING


def example_arguments(parameters: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Arguments for the required parameters from their schemas; ``(None, why)`` when one has no value to offer."""
    properties = parameters.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in parameters.get("required") or []:
        value = example_value(properties.get(name))
        if value is _MISSING:
            return None, f"required parameter {name!r} has no default, const, example or enum value to call it with"
        arguments[name] = value
    return arguments, None


def needs_inference(api: APISpec) -> bool:
    provenance = api.mcp_provenance()
    return api.accepted and provenance is not None and provenance.result_schema == "unknown"


async def infer_result_schemas(apis: list[APISpec], policy: ExecutionPolicy) -> list[Inference]:
    """Call each tool of ``apis`` whose result schema is unknown, where ``policy`` allows it, and set its result
    schema from the result (see the module docstring). ``apis`` are updated in place; one note per tool tried."""
    executor = MCPToolExecutor(policy)
    notes: list[Inference] = []
    for api in apis:
        if not needs_inference(api):
            continue
        refusal = execution_refusal(api, policy)
        arguments, why = example_arguments(api.parameters) if refusal is None else (None, refusal)
        if arguments is None:
            notes.append(Inference(api.name, False, f"not called: {why}"))
            continue
        run = await executor.execute(api, arguments)
        if run.error is not None:
            notes.append(Inference(api.name, False, f"the call failed, schema stays unknown: {run.error}"))
            continue
        api.result_schema = infer_result_schema([run.result])
        provenance = api.mcp_provenance()
        assert provenance is not None  # needs_inference() checked it
        api.__pydantic_extra__["mcp"] = provenance.model_copy(update={"result_schema": "inferred"}).model_dump(
            mode="json", exclude_none=True)
        notes.append(Inference(api.name, True, f"inferred from one call with {arguments} ({run.duration_s:.1f} s)"))
    return notes
