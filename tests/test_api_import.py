"""Importing real APIs: OpenAPI 3 / Swagger 2 documents and ToolACE / xLAM / BFCL function lists into a pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from tasks.api_import import (
    REF_CHECK,
    apis_from_function_list,
    apis_from_openapi,
    dialect_type,
    merge_into_pool,
    read_api_file,
    read_pool,
)
from toolace.cli import app
from toolace.errors import UserError

TOOLACE_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "toolace-sample.jsonl"

OPENAPI3 = {
    "openapi": "3.0.3",
    "info": {"title": "Pet Store", "version": "1"},
    "components": {
        "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer"},
                                 "description": "Max items"}},
        "schemas": {
            "Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
            "NewPet": {"type": "object", "properties": {"name": {"type": "string"}, "tag": {"type": "string"}},
                       "required": ["name"]},
            "Pet": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"$ref": "#/components/schemas/NewPet"}],
                    "description": "A pet"},
            "Node": {"type": "object", "properties": {"value": {"type": "string"},
                                                      "children": {"type": "array",
                                                                   "items": {"$ref": "#/components/schemas/Node"}}}},
            "Either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
    },
    "paths": {
        "/pets": {
            "get": {"operationId": "listPets", "summary": "List all pets", "tags": ["pets"],
                    "parameters": [{"$ref": "#/components/parameters/Limit"},
                                   {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {
                        "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}}}}}},
            "post": {"operationId": "createPet", "description": "Create a pet", "tags": ["pets"],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/NewPet"}}}},
                     "responses": {"201": {"description": "made", "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Pet"}}}}}},
        },
        "/pets/{petId}": {
            "parameters": [{"name": "petId", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"summary": "One pet",
                    "responses": {"default": {"description": "x", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Pet"}}}}}},
            "delete": {"operationId": "deletePet", "summary": "Delete a pet",
                       "parameters": [{"name": "reason", "in": "query",
                                       "schema": {"$ref": "#/components/schemas/Missing"}}],
                       "responses": {"204": {"description": "gone"}}},
        },
        "/trees": {
            "put": {"operationId": "putTree", "summary": "Store a tree",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
                    "responses": {"200": {"description": "ok", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Either"}}}}}},
        },
    },
}

SWAGGER2 = {
    "swagger": "2.0",
    "info": {"title": "Todo API", "version": "1"},
    "definitions": {
        "Todo": {"type": "object", "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
                 "required": ["title"]},
    },
    "parameters": {"Page": {"name": "page", "in": "query", "type": "integer", "description": "Page number"}},
    "paths": {
        "/todos": {
            "get": {"operationId": "list_todos", "summary": "List todos",
                    "parameters": [{"$ref": "#/parameters/Page"}],
                    "responses": {"200": {"description": "ok", "schema": {"type": "array",
                                                                           "items": {"$ref": "#/definitions/Todo"}}}}},
            "post": {"summary": "Add a todo",
                     "parameters": [{"name": "todo", "in": "body", "required": True,
                                     "schema": {"$ref": "#/definitions/Todo"}},
                                    {"name": "list", "in": "query", "type": "string", "required": True}],
                     "responses": {"201": {"description": "ok", "schema": {"$ref": "#/definitions/Todo"}}}},
        },
        "/upload": {
            "post": {"operationId": "upload", "summary": "Upload a raw file",
                     "parameters": [{"name": "payload", "in": "body",
                                     "schema": {"type": "array", "items": {"type": "string"}}}],
                     "responses": {}},
        },
    },
}


def by_name(apis):
    return {a.name: a for a in apis}


def assert_valid_schemas(api):
    Draft202012Validator.check_schema(api.parameters)
    Draft202012Validator.check_schema(api.result_schema)


def test_openapi3_operations_refs_body_allof_and_cycles():
    apis = by_name(apis_from_openapi(OPENAPI3, "pets.json"))
    assert set(apis) == {"list_pets", "create_pet", "get_pets_pet_id", "delete_pet", "put_tree"}
    for api in apis.values():
        assert api.operators == ["imported"] and api.node_ids == []
        if api.accepted:
            assert_valid_schemas(api)

    listed = apis["list_pets"]
    assert listed.accepted and listed.description == "List all pets" and listed.domain == "pets"
    assert listed.parameters["properties"]["limit"] == {"type": "integer", "description": "Max items"}
    assert "X-Trace" in listed.parameters["properties"] and listed.parameters["required"] == []
    pet = listed.result_schema["items"]  # allOf merged
    assert "allOf" not in pet and set(pet["properties"]) == {"id", "name", "tag"}
    assert pet["required"] == ["id", "name"] and pet["description"] == "A pet"

    created = apis["create_pet"]  # object body merged at top level, required because the body is
    assert created.description == "Create a pet"
    assert set(created.parameters["properties"]) == {"name", "tag"} and created.parameters["required"] == ["name"]
    assert set(created.result_schema["properties"]) == {"id", "name", "tag"}

    one = apis["get_pets_pet_id"]  # no operationId: method + path; no tag: the doc's title
    assert one.domain == "Pet Store" and one.parameters["required"] == ["petId"]
    assert "id" in one.result_schema["properties"]  # the default response

    tree = apis["put_tree"]  # the recursive ref is cut to a plain object
    assert set(tree.parameters["properties"]) == {"value", "children"}
    assert tree.parameters["properties"]["children"]["items"] == {"type": "object"}
    assert tree.result_schema == {"oneOf": [{"type": "string"}, {"type": "integer"}]}  # oneOf kept

    broken = apis["delete_pet"]
    assert broken.status == "rejected" and broken.rejected_by == REF_CHECK
    assert "#/components/schemas/Missing" in broken.reason
    assert broken.raw_outputs  # the operation is kept


def test_openapi_ids_are_stable():
    first = [a.api_id for a in apis_from_openapi(OPENAPI3, "a.json")]
    second = [a.api_id for a in apis_from_openapi(json.loads(json.dumps(OPENAPI3)), "b.json")]
    assert first == second and len(set(first)) == len(first)


def test_swagger2_body_parameter_and_definitions(tmp_path):
    path = tmp_path / "todo.yaml"
    path.write_text(yaml.safe_dump(SWAGGER2))
    apis = by_name(read_api_file(str(path)))
    assert set(apis) == {"list_todos", "post_todos", "upload"}
    assert all(a.accepted for a in apis.values())
    for api in apis.values():
        assert_valid_schemas(api)
        assert api.domain == "Todo API"
    assert apis["list_todos"].parameters["properties"]["page"] == {"type": "integer", "description": "Page number"}
    assert apis["list_todos"].result_schema["items"]["required"] == ["title"]
    post = apis["post_todos"]
    assert set(post.parameters["properties"]) == {"title", "done", "list"}
    assert post.parameters["required"] == ["list", "title"]
    assert post.result_schema["properties"]["done"] == {"type": "boolean"}
    upload = apis["upload"]  # a body that is not an object goes under "body"; no response schema: an object
    assert upload.parameters["properties"]["body"]["type"] == "array" and upload.parameters["required"] == []
    assert upload.result_schema == {"type": "object"}


def toolace_tools() -> list[dict]:
    tools = []
    for line in TOOLACE_SAMPLE.read_text().splitlines():
        system = json.loads(line)["system"]
        tools.extend(json.JSONDecoder().raw_decode(system.split("invoke:\n", 1)[1])[0])
    return tools


def test_toolace_sample_imports_every_tool():
    tools = toolace_tools()
    apis = read_api_file(str(TOOLACE_SAMPLE))
    assert len(apis) == len(tools) > 92
    assert all(a.accepted for a in apis), [a.reason for a in apis if not a.accepted]
    assert [a.name for a in apis] == [t["name"] for t in tools]
    assert any(" " in a.name for a in apis)  # names with spaces are kept verbatim
    kinds: set[str] = set()
    for api in apis:
        Draft202012Validator.check_schema(api.parameters)
        assert api.parameters["type"] == "object" and isinstance(api.parameters["required"], list)
        assert api.operators == ["imported"]
        kinds.update(p.get("type") for p in api.parameters["properties"].values())
    assert {"number", "integer", "string"} <= kinds
    assert not kinds & {"dict", "float", "int"}
    source = {t["name"]: t for t in tools}
    futures = next(a for a in apis if a.name == "Get Futures Prices")
    assert futures.parameters["required"] == source["Get Futures Prices"]["parameters"]["required"]


def test_bfcl_dialect_mapping():
    items = [{"name": "calc.area", "description": "Area",
              "parameters": {"type": "dict", "required": ["shape"], "properties": {
                  "shape": {"type": "string", "enum": ["circle", "square"]},
                  "size": {"type": "float"}, "count": {"type": "int"}, "exact": {"type": "bool"},
                  "point": {"type": "tuple", "items": {"type": "float"}}, "extra": {"type": "any"},
                  "options": {"type": "dict", "properties": {"unit": {"type": "str"}}}}},
              "required": None}]
    api = apis_from_function_list(items, "bfcl.json")[0]
    props = api.parameters["properties"]
    assert api.name == "calc.area" and api.parameters["required"] == ["shape"]
    assert props["size"] == {"type": "number"} and props["count"] == {"type": "integer"}
    assert props["exact"] == {"type": "boolean"} and props["extra"] == {}
    assert props["point"] == {"type": "array", "items": {"type": "number"}}
    assert props["options"]["type"] == "object" and props["options"]["properties"]["unit"] == {"type": "string"}
    Draft202012Validator.check_schema(api.parameters)


def test_xlam_flat_parameters_and_optional(tmp_path):
    row = {"query": "q", "answers": "[]", "tools": json.dumps([
        {"name": "search_products", "description": "Search the catalogue",
         "parameters": {"query": {"type": "str", "description": "Words"},
                        "limit": {"type": "int, optional", "description": "Max", "default": 10},
                        "tags": {"type": "List[str]", "description": "Tags"},
                        "filters": {"type": "Dict, optional", "description": "Filters"},
                        "price": {"type": "float", "description": "Price"},
                        "exact": {"type": "bool, optional", "description": "Exact"}}}])}
    path = tmp_path / "xlam.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [api] = read_api_file(str(path))
    props = api.parameters["properties"]
    assert api.accepted and api.parameters["required"] == ["query", "tags", "price"]
    assert props["limit"] == {"type": "integer", "description": "Max", "default": 10}
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["filters"]["type"] == "object" and props["exact"]["type"] == "boolean"
    Draft202012Validator.check_schema(api.parameters)
    assert dialect_type("str, optional") == ({"type": "string"}, True)


def test_json_function_list_and_bad_entries(tmp_path):
    path = tmp_path / "functions.json"
    path.write_text(json.dumps([{"type": "function", "function": {"name": "get_time", "description": "Now",
                                                                    "parameters": {"type": "object",
                                                                                   "properties": {}}}},
                                {"description": "no name"}]))
    good, bad = read_api_file(str(path))
    assert good.accepted and good.name == "get_time"
    assert bad.status == "rejected" and "no name" in bad.raw_outputs[0]


@pytest.mark.parametrize(("name", "text", "fragments"), [
    ("bad.json", '{"openapi": ', ["bad.json", "line 1"]),
    ("bad.jsonl", '{"name": "a"}\n{oops\n', ["bad.jsonl", "line 2"]),
    ("rows.jsonl", '{"text": "hello"}\n', ["rows.jsonl", "line 1", "neither a function"]),
    ("bad.yaml", "openapi: [1, 2\n", ["bad.yaml", "invalid YAML"]),
    ("empty.json", "", ["empty.json", "empty"]),
])
def test_invalid_files_raise_user_errors(tmp_path, name, text, fragments):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_api_file(str(path))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_pool_merge_is_idempotent(tmp_path, suffix):
    pool = str(tmp_path / "pools" / f"apis{suffix}")
    apis = apis_from_openapi(OPENAPI3, "pets.json") + read_api_file(str(TOOLACE_SAMPLE))[:30]
    first = merge_into_pool(pool, apis)
    assert first["read"] == len(apis) and first["rejected"] == 1
    assert first["added"] + first["duplicates"] == len(apis) and first["added"] > 0
    stored = read_pool(pool)
    assert len(stored) == first["added"]
    assert {a.api_id for a in stored} == {a.api_id for a in apis}
    originals = {a.api_id: a for a in apis}
    for api in stored:  # rows read back are the same APIs, rejected ones included
        assert api == originals[api.api_id]
    second = merge_into_pool(pool, apis)
    assert second == {"read": len(apis), "added": 0, "duplicates": len(apis), "rejected": 1}
    assert len(read_pool(pool)) == first["added"]
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in Path(pool).read_text().splitlines()]
        assert rows[0] == stored[0].model_dump(mode="json")


def test_pool_with_unknown_extension():
    with pytest.raises(UserError, match="jsonl or .parquet"):
        merge_into_pool("pool.csv", [])


runner = CliRunner()


def test_cli_import_apis(tmp_path):
    spec = tmp_path / "pets.json"
    spec.write_text(json.dumps(OPENAPI3))
    pool = tmp_path / "pool.jsonl"
    result = runner.invoke(app, ["import-apis", str(spec), str(TOOLACE_SAMPLE), "--pool", str(pool)])
    assert result.exit_code == 0, result.output
    assert "read 416" in result.output and "rejected 1" in result.output
    again = runner.invoke(app, ["import-apis", str(spec), "--pool", str(pool)])
    assert again.exit_code == 0 and "added 0" in again.output and "duplicates 5" in again.output


def test_cli_missing_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    pool = tmp_path / "pool.jsonl"
    result = runner.invoke(app, ["import-apis", str(missing), "--pool", str(pool)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "does not exist" in lines[0] and "Traceback" not in result.output
    assert not pool.exists()
