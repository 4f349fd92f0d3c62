"""MCP tools as API pool records: a live server's ``tools/list`` (see :mod:`tasks.mcp.client`) or a saved one.

Each tool becomes an :class:`APISpec` with ``inputSchema`` as its parameters, ``outputSchema`` as its result schema
(``{"type": "object"}`` and ``result_schema: "unknown"`` in its provenance when the server declares none, until
executed calls infer one: :func:`infer_result_schema`), ``operators == ["imported", "mcp"]`` and its provenance in
``APISpec.mcp`` (:class:`schemas.records.MCPProvenance`: server name, version, protocol version, how to reach it,
the tool's annotations). A tool that cannot be imported (no name, an inputSchema that is no valid JSON Schema
object) is kept, rejected with the reason, and the others are imported.

This module imports no other package of ``tasks`` (``tasks.apis`` reads saved listings through it).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for

from schemas.records import APISpec, MCPProvenance
from toolace.safe_patterns import schema_hazard

if TYPE_CHECKING:  # the SDK is imported only where a server is reached
    from tasks.mcp.client import ServerListing, ServerTarget

ENTRY_CHECK = "mcp_tool_entry_v1"
SCHEMA_CHECK = "mcp_tool_schema_v1"
OPERATORS = ["imported", "mcp"]
UNKNOWN_RESULT: dict[str, Any] = {"type": "object"}
ANNOTATION_KEYS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
# the v2 SDK's attribute names, for listings saved from SDK objects without by_alias
_SNAKE = {"input_schema": "inputSchema", "output_schema": "outputSchema", "read_only_hint": "readOnlyHint",
          "destructive_hint": "destructiveHint", "idempotent_hint": "idempotentHint",
          "open_world_hint": "openWorldHint", "next_cursor": "nextCursor", "server_info": "serverInfo",
          "protocol_version": "protocolVersion"}


def camel_keys(value: dict[str, Any]) -> dict[str, Any]:
    """Top-level v2 snake_case keys as the protocol's camelCase (v1/v2 bridge for saved listings)."""
    return {_SNAKE.get(k, k): v for k, v in value.items()}


def _api_id(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def schema_object_problem(label: str, schema: Any) -> str | None:
    """Why ``schema`` is not a usable JSON Schema of an object, or None."""
    if not isinstance(schema, dict):
        return f"{label} is not a JSON object (got {type(schema).__name__})"
    if schema.get("type") != "object":
        return f"{label} must have type \"object\" (got {json.dumps(schema.get('type'))})"
    if hazard := schema_hazard(schema):
        return f"{label}: {hazard}"
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{label} is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    except RecursionError:
        return f"{label} nests too deeply to be read"
    return None


def _annotations(raw: Any) -> dict[str, bool]:
    if not isinstance(raw, dict):
        return {}
    raw = camel_keys(raw)
    return {k: raw[k] for k in ANNOTATION_KEYS if isinstance(raw.get(k), bool)}


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value else ""


def api_from_mcp_tool(raw: Any, base: MCPProvenance, where: str, index: int) -> APISpec:
    """One listed tool as an APISpec: accepted, or rejected with the check and the reason."""
    tool = camel_keys(raw) if isinstance(raw, dict) else raw
    server = base.server_name
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"].strip():
        return _rejected("" if not isinstance(tool, dict) else str(tool.get("name") or ""), "", server, ENTRY_CHECK,
                         f"{where}: tool {index} has no name", raw, base)
    name = tool["name"].strip()
    description = _text(tool.get("description")) or _text(tool.get("title")) or name
    problem = schema_object_problem("inputSchema", tool.get("inputSchema"))
    output = tool.get("outputSchema")
    if problem is None and output is not None:
        problem = schema_object_problem("outputSchema", output)
    if problem is not None:
        return _rejected(name, description, server, SCHEMA_CHECK, f"{where}: tool {name}: {problem}", raw, base)
    parameters = json.loads(json.dumps(tool["inputSchema"]))
    parameters.setdefault("properties", {})
    parameters.setdefault("required", [])
    result = json.loads(json.dumps(output)) if output is not None else dict(UNKNOWN_RESULT)
    provenance = base.model_copy(update={
        "tool_name": name, "title": _text(tool.get("title")) or None,
        "annotations": _annotations(tool.get("annotations")),
        "result_schema": "declared" if output is not None else "unknown"})
    return APISpec(api_id=_api_id(name, parameters, server), name=name, description=description,
                   parameters=parameters, result_schema=result, domain=server, node_ids=[], operators=list(OPERATORS),
                   mcp=provenance.model_dump(mode="json", exclude_none=True))


def _rejected(name: str, description: str, server: str, check: str, reason: str, raw: Any,
              base: MCPProvenance) -> APISpec:
    raw_text = json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str)
    spec = APISpec(api_id=_api_id(name, raw_text, server), name=name, description=description,
                   parameters={"type": "object", "properties": {}, "required": []}, result_schema=dict(UNKNOWN_RESULT),
                   domain=server, node_ids=[], operators=list(OPERATORS),
                   mcp=base.model_copy(update={"tool_name": name}).model_dump(mode="json", exclude_none=True))
    spec.reject(check, reason)
    spec.raw_outputs = [raw_text]
    return spec


def apis_from_mcp_tools(tools: list[Any], base: MCPProvenance, where: str) -> list[APISpec]:
    """Every listed tool as an APISpec (the rejected ones too, with their reasons)."""
    return [api_from_mcp_tool(raw, base, where, index) for index, raw in enumerate(tools)]


def apis_from_listing(listing: ServerListing) -> list[APISpec]:
    """A live server's listing as APISpecs, each with the server's provenance and how to reach it again."""
    target = listing.target
    base = MCPProvenance(server_name=listing.info.name, server_version=listing.info.version,
                         protocol_version=listing.info.protocol_version,
                         transport="streamable_http" if target.url else "stdio",
                         command=list(target.command) or None, url=target.url, tool_name="")
    return apis_from_mcp_tools(listing.tools, base, target.label)


def import_from_server(target: ServerTarget, timeout_s: float | None = None) -> list[APISpec]:
    """Start or reach an MCP server and import every tool it lists (raises MCPServerError naming it)."""
    from tasks.mcp.client import DEFAULT_TIMEOUT_S, list_server_tools

    return apis_from_listing(list_server_tools(target, timeout_s or DEFAULT_TIMEOUT_S))


# ------------------------------------------------------------------------------------------ saved listings


def tools_list_payload(value: Any) -> dict[str, Any] | None:
    """The ``tools/list`` result inside a saved document, or None when it is not one: a ListToolsResult
    (``{"tools": [...]}``, every entry with an ``inputSchema``) or a JSON-RPC response holding one
    (``{"jsonrpc": "2.0", "result": {...}}``), optionally with the ``serverInfo``/``protocolVersion`` of the
    initialize result beside the tools."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("result"), dict) and "jsonrpc" in value:
        inner = tools_list_payload(value["result"])
        if inner is not None:
            return {**{k: v for k, v in camel_keys(value).items() if k != "result"}, **inner}
        return None
    value = camel_keys(value)
    tools = value.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    if not all(isinstance(t, dict) and ("inputSchema" in t or "input_schema" in t) for t in tools):
        return None
    return value


def apis_from_tools_list_document(value: dict[str, Any], source: str) -> list[APISpec]:
    """A saved ``tools/list`` answer (see :func:`tools_list_payload`) imported as a live listing would be."""
    payload = tools_list_payload(value) or {"tools": []}
    info = payload.get("serverInfo") if isinstance(payload.get("serverInfo"), dict) else {}
    base = MCPProvenance(server_name=_text(info.get("name")) or source.rsplit("/", 1)[-1],
                         server_version=_text(info.get("version")) or None,
                         protocol_version=_text(payload.get("protocolVersion")) or None,
                         transport="file", source_file=source, tool_name="")
    return apis_from_mcp_tools(payload["tools"], base, source)


# -------------------------------------------------------------------------------------- result inference


def infer_result_schema(values: list[Any]) -> dict[str, Any]:
    """A JSON Schema every one of ``values`` (results of executed calls) validates against: types merged,
    object properties united, a property required when every object has it. ``{"type": "object"}`` for none."""
    if not values:
        return dict(UNKNOWN_RESULT)
    return _merge([_schema_of(v) for v in values])


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _schema_of(value: Any) -> dict[str, Any]:
    kind = _type_name(value)
    if kind == "object":
        return {"type": "object", "properties": {k: _schema_of(v) for k, v in value.items()},
                "required": sorted(value)}
    if kind == "array":
        return {"type": "array", "items": _merge([_schema_of(v) for v in value]) if value else {}}
    return {"type": kind}


def _merge(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = sorted({s["type"] for s in schemas})
    if kinds == ["integer", "number"]:
        kinds = ["number"]
    if len(kinds) > 1:
        return {"type": kinds}
    kind = kinds[0]
    if kind == "object":
        names = dict.fromkeys(k for s in schemas for k in s["properties"])
        properties = {k: _merge([s["properties"][k] for s in schemas if k in s["properties"]]) for k in names}
        required = [k for k in names if all(k in s["required"] for s in schemas)]
        return {"type": "object", "properties": properties, "required": required}
    if kind == "array":
        items = [s["items"] for s in schemas if s.get("items")]
        return {"type": "array", "items": _merge(items) if items else {}}
    return {"type": kind}
