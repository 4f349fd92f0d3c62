"""JSON-schema ``response_format`` payloads generated from pydantic models (never written by hand)."""

from __future__ import annotations

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


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    _close_objects(schema)
    return schema


def response_format_for(model: type[BaseModel]) -> dict[str, Any]:
    return json_schema_response_format(model.__name__, schema_for(model))


def json_schema_response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The standard OpenAI payload; also used for schemas that are data (an API's result schema)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
