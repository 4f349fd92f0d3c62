"""Result schemas inferred from executed calls where allowed: a read-only tool without an outputSchema, called once in
the sandbox with the example values its own schema gives; every other tool keeps ``unknown`` with the reason."""

from __future__ import annotations

import asyncio
import json

from jsonschema import Draft202012Validator

from tasks.mcp.client import ServerTarget
from tasks.mcp.execution import ExecutionPolicy
from tasks.mcp.result_inference import example_arguments, infer_result_schemas
from tasks.mcp.tool_import import import_from_server
from tests.mcp_support import fixture_command


def test_example_arguments_come_from_the_schema_or_the_tool_is_not_called():
    parameters = {"type": "object", "required": ["zone", "unit", "n"],
                  "properties": {"zone": {"type": "string", "examples": ["Europe/Paris"]},
                                 "unit": {"enum": ["c", "f"]}, "n": {"type": "integer", "default": 3},
                                 "optional": {"type": "string"}}}
    assert example_arguments(parameters) == ({"zone": "Europe/Paris", "unit": "c", "n": 3}, None)
    arguments, why = example_arguments({"required": ["seconds"], "properties": {"seconds": {"type": "number"}}})
    assert arguments is None and "'seconds' has no default, const, example or enum value" in why


def test_import_infers_the_result_schema_of_the_read_only_tools_it_may_call():
    apis = [a for a in import_from_server(ServerTarget.from_command(fixture_command()), 30) if a.accepted]
    by_name = {a.name: a for a in apis}
    policy = ExecutionPolicy(mode="read_only", time_limit_s=20, start_timeout_s=20)
    notes = {n.tool: n for n in asyncio.run(infer_result_schemas(apis, policy))}
    whereami = by_name["whereami"]
    assert notes["whereami"].inferred and whereami.mcp_provenance().result_schema == "inferred"
    # what the real answer (the sandbox's working folder) validates against
    assert whereami.result_schema == {"type": "object", "properties": {"cwd": {"type": "string"}}, "required": ["cwd"]}
    Draft202012Validator.check_schema(whereami.result_schema)
    assert not notes["sleep"].inferred and "'seconds' has no default" in notes["sleep"].note
    assert not notes["wipe_notes"].inferred and "destructive" in notes["wipe_notes"].note
    assert by_name["sleep"].mcp_provenance().result_schema == "unknown"
    assert "list_notes" not in notes  # declared: nothing to infer
    json.dumps([a.model_dump(mode="json") for a in apis])  # still serialisable for the pool
