"""JSON-schema ``response_format`` payloads generated from pydantic models (never written by hand)."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel


def _close_objects(node: Any) -> None:
    """Strict modes need every object closed and every property listed as required."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
            node["required"] = list(node["properties"])
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


@functools.cache
def _closed_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    _close_objects(schema)
    return schema


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, closed for strict modes; built once per model (a copy is returned)."""
    return copy.deepcopy(_closed_schema(model))


@functools.cache
def response_format_for(model: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` payload of a model, built once and shared by every request: read-only."""
    return json_schema_response_format(model.__name__, schema_for(model))


def json_schema_response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The standard OpenAI payload; also used for schemas that are data (an API's result schema)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
