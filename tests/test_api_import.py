"""Importing real APIs: OpenAPI 3 / Swagger 2 documents and ToolACE / xLAM / BFCL function lists into a pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator, SchemaError
from typer.testing import CliRunner

from tasks.apis.importing import (
    _YAML_LOADER,
    MAX_NESTING,
    REF_CHECK,
    SCHEMA_CHECK,
    apis_from_function_list,
    apis_from_openapi,
    merge_into_pool,
    read_api_file,
    read_pool,
)
from tasks.apis.schema_validity import (
    _META_ANY_ARRAY,
    _META_ANY_STRING,
    _META_ANYTHING,
    _META_SUBSCHEMA,
    _META_SUBSCHEMA_LISTS,
    _META_SUBSCHEMA_MAPS,
    _meta_keywords,
)
from tasks.apis.schema_validity import SchemaChecker as _SchemaChecker
from tasks.formats.type_dialects import type_says_optional, type_string_schema
from toolace.cli import app
from toolace.errors import UserError

TOOLACE_SAMPLE = Path(__file__).resolve().parent / "data" / "toolace-sample.jsonl"

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
    assert type_string_schema("str, optional") == {"type": "string"} and type_says_optional("str, optional")


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
    ("notes.yaml", "title: hello\nbody: not an API\n", ["notes.yaml", "neither a function"]),
    ("words.yml", "just some words\n", ["words.yml", "expected a function"]),
    ("tabs.yaml", "openapi: 3.0.0\npaths:\n\t/x: {}\n", ["tabs.yaml", "line 3", "invalid YAML"]),
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
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "does not exist" in lines[0] and "Traceback" not in result.output
    assert not pool.exists()


# ------------------------------------------------------------------------------------ large and broken documents

S = "#/components/schemas/"


def generated_openapi(operations: int, depth: int, chains: int = 8) -> dict:
    """A document with `operations` operations (a GET and a POST per path) over `$ref` chains `depth` deep.

    Flat{c}_{d} is an allOf of Flat{c}_{d+1} and a property p{d}: it flattens into one object with p0 ... and
    leaf{c}. Nest{c}_{d} nests Nest{c}_{d+1} under "next" (every third link inside a oneOf with null).
    """
    schemas: dict = {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}
    for c in range(chains):
        for d in range(depth):
            last = d == depth - 1
            schemas[f"Flat{c}_{d}"] = (
                {"type": "object", "properties": {f"leaf{c}": {"type": "string"}}, "required": [f"leaf{c}"]} if last
                else {"allOf": [{"$ref": f"{S}Flat{c}_{d + 1}"},
                                {"properties": {f"p{d}": {"type": "integer", "minimum": 0}}, "required": [f"p{d}"]}]})
            nxt: dict = {"$ref": f"{S}Nest{c}_{d + 1}"}
            schemas[f"Nest{c}_{d}"] = (
                {"type": "object", "properties": {"leaf": {"type": "boolean"}}} if last
                else {"type": "object", "properties": {f"n{d}": {"type": "string", "example": d},
                                                       "next": {"oneOf": [nxt, {"type": "null"}]} if d % 3 == 2
                                                       else nxt}})
    paths: dict = {}
    for i in range(operations // 2):
        c = i % chains
        paths[f"/c{c}/things{i}/{{thingId}}"] = {
            "parameters": [{"$ref": "#/components/parameters/ThingId"}],
            "get": {"operationId": f"getThing{i}", "summary": f"Get thing {i}", "tags": [f"chain{c}"],
                    "parameters": [{"$ref": "#/components/parameters/Limit"},
                                   {"$ref": "#/components/parameters/Trace"},
                                   {"name": "shape", "in": "query",
                                    "schema": {"oneOf": [{"$ref": f"{S}Nest{c}_0"}, {"type": "string"}]}}],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {
                        "schema": {"$ref": f"{S}Nest{c}_0"}}}}}},
            "post": {"operationId": f"createThing{i}", "summary": f"Create thing {i}",
                     "requestBody": {"$ref": f"#/components/requestBodies/Body{c}"},
                     "responses": {"201": {"description": "made", "content": {"application/json": {
                         "schema": {"allOf": [{"$ref": f"{S}Base"}, {"$ref": f"{S}Flat{c}_0"}]}}}}}},
        }
    return {
        "openapi": "3.0.3", "info": {"title": "Generated", "version": "1"}, "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "ThingId": {"name": "thingId", "in": "path", "required": True, "schema": {"type": "integer"}},
                "Limit": {"name": "limit", "in": "query", "schema": {"type": "integer"}, "description": "Max"},
                "Trace": {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
            },
            "requestBodies": {f"Body{c}": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"{S}Flat{c}_0"}}}} for c in range(chains)},
        },
    }


def nested_depth(schema: dict, depth: int) -> int:
    """How many Nest levels a resolved Nest{c}_0 has, checking each level on the way."""
    for d in range(depth - 1):
        assert schema["type"] == "object" and schema["properties"][f"n{d}"] == {"type": "string", "example": d}
        nxt = schema["properties"]["next"]
        schema = nxt["oneOf"][0] if d % 3 == 2 else nxt
        if d % 3 == 2:
            assert nxt["oneOf"][1] == {"type": "null"}
    assert schema == {"type": "object", "properties": {"leaf": {"type": "boolean"}}}
    return depth


@pytest.mark.parametrize(("fmt", "operations"), [("json", 2000), ("yaml", 600)])
def test_large_generated_document_imports_correctly(tmp_path, fmt, operations):
    depth, chains = 30, 8
    doc = generated_openapi(operations, depth, chains)
    path = tmp_path / f"big.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(doc))
    else:
        path.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
    apis = read_api_file(str(path))
    assert len(apis) == operations and all(a.accepted for a in apis), [a.reason for a in apis if not a.accepted][:3]
    assert len({a.api_id for a in apis}) == operations
    named = by_name(apis)
    for i in (0, 1, 7, operations // 2 - 1):  # spot checks, over different chains
        c = i % chains
        created = named[f"create_thing{i}"]  # path parameter + the object body's properties, allOf flattened
        flat = {f"p{d}" for d in range(depth - 1)} | {f"leaf{c}"}
        assert set(created.parameters["properties"]) == {"thingId"} | flat
        required = created.parameters["required"]
        assert required[0] == "thingId" and set(required) == {"thingId"} | flat and len(required) == len(flat) + 1
        assert created.parameters["properties"]["p3"] == {"type": "integer", "minimum": 0}
        assert set(created.result_schema["properties"]) == {"id"} | flat and "allOf" not in created.result_schema
        got = named[f"get_thing{i}"]
        props = got.parameters["properties"]
        assert set(props) == {"thingId", "limit", "X-Trace", "shape"} and got.parameters["required"] == ["thingId"]
        assert props["limit"] == {"type": "integer", "description": "Max"} and got.domain == f"chain{c}"
        assert props["shape"]["oneOf"][1] == {"type": "string"}
        assert nested_depth(props["shape"]["oneOf"][0], depth) == depth
        assert nested_depth(got.result_schema, depth) == depth
        assert_valid_schemas(created)
        assert_valid_schemas(got)
    # shared $ref targets are expanded once, but every API gets its own copy
    first, other = named["get_thing0"], named[f"get_thing{chains}"]
    first.parameters["properties"]["shape"]["oneOf"][0]["properties"]["n0"]["type"] = "integer"
    first.result_schema["properties"]["next"]["properties"].clear()
    assert other.parameters["properties"]["shape"]["oneOf"][0]["properties"]["n0"]["type"] == "string"
    assert nested_depth(other.result_schema, depth) == depth
    assert doc["components"]["schemas"]["Nest0_0"]["properties"]["next"] == {"$ref": f"{S}Nest0_1"}


RECURSIVE = {
    "openapi": "3.1.0", "info": {"title": "Recursive"},
    "components": {"schemas": {
        "A": {"type": "object", "properties": {"b": {"$ref": f"{S}B"}, "self": {"$ref": f"{S}A"}}},
        "B": {"type": "object", "properties": {"a": {"$ref": f"{S}A"}, "c": {"$ref": f"{S}C"}}},
        "C": {"allOf": [{"$ref": f"{S}B"}, {"properties": {"x": {"type": "string"}}}]},
        "Either": {"oneOf": [{"$ref": f"{S}A"}, {"$ref": f"{S}C"}]},
        "Named": {"type": "object", "properties": {"default": {"$ref": f"{S}C"}, "enum": {"type": "string"}}},
    }},
    "paths": {f"/{name.lower()}": {"post": {
        "operationId": f"post{name}",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": f"{S}{name}"}}}},
        "responses": {"200": {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": f"{S}{'A' if name != 'A' else 'B'}"}}}}}}}
        for name in ("A", "B", "C", "Either", "Named")},
}


def test_recursive_refs_are_cut_the_same_way_in_any_order():
    apis = by_name(apis_from_openapi(RECURSIVE, "recursive.json"))
    assert all(a.accepted for a in apis.values())
    for api in apis.values():
        assert_valid_schemas(api)
    c_inside_a = {"type": "object", "properties": {"x": {"type": "string"}}}  # C's B is cut: B is being expanded
    assert apis["post_a"].parameters["properties"] == {
        "b": {"type": "object", "properties": {"a": {"type": "object"}, "c": c_inside_a}},
        "self": {"type": "object"}}
    b_alone = apis["post_b"].parameters["properties"]
    assert b_alone["a"] == {"type": "object", "properties": {"b": {"type": "object"}, "self": {"type": "object"}}}
    assert b_alone["c"] == c_inside_a  # C's B is cut again: B is being expanded
    assert apis["post_a"].result_schema == {"type": "object", "properties": b_alone}
    either = apis["post_either"].parameters["properties"]["body"]["oneOf"]
    assert either[0] == {"type": "object", "properties": apis["post_a"].parameters["properties"]}
    named = apis["post_named"].parameters["properties"]  # property names that are also data keywords
    assert "$ref" not in json.dumps(named) and set(named["default"]["properties"]) == {"a", "c", "x"}
    assert named["enum"] == {"type": "string"}
    backwards = {**RECURSIVE, "paths": dict(reversed(list(RECURSIVE["paths"].items())))}
    again = by_name(apis_from_openapi(backwards, "recursive.json"))
    assert {n: (a.api_id, a.parameters, a.result_schema) for n, a in again.items()} == \
        {n: (a.api_id, a.parameters, a.result_schema) for n, a in apis.items()}


def test_broken_refs_reject_only_the_operations_using_them(tmp_path):
    ok = {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": f"{S}Good"}}}}}
    doc = {
        "openapi": "3.0.0", "info": {"title": "Broken"},
        "components": {"schemas": {
            "Good": {"type": "object", "properties": {"name": {"type": "string"}}},
            **{f"Deep{d}": {"type": "object", "properties": {"next": {"$ref": f"{S}Deep{d + 1}"}}} for d in range(5)},
            "Deep5": {"allOf": [{"$ref": f"{S}Good"}, {"$ref": f"{S}Missing"}]},
        }},
        "paths": {
            "/good": {"get": {"operationId": "getGood", "responses": ok}},
            "/deep": {"get": {"operationId": "getDeep", "parameters": [
                          {"name": "q", "in": "query", "schema": {"$ref": f"{S}Deep0"}}], "responses": ok},
                      "post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": f"{S}Deep2"}}}},
                               "responses": ok}},
            "/external": {"get": {"operationId": "getExternal", "responses": {"200": {"description": "ok", "content": {
                "application/json": {"schema": {"$ref": "other.yaml#/components/schemas/Thing"}}}}}}},
            "/items/{id}": {"parameters": [{"$ref": "#/components/parameters/Nope"}],
                            "get": {"responses": ok}, "delete": {"responses": ok}},
            "/fine": {"post": {"operationId": "postFine", "requestBody": {"content": {"application/json": {
                "schema": {"$ref": f"{S}Deep5/allOf/0"}}}}, "responses": ok}},
        },
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    apis = by_name(read_api_file(str(path)))
    assert {n for n, a in apis.items() if a.accepted} == {"get_good", "post_fine"}
    assert apis["post_fine"].parameters["properties"] == {"name": {"type": "string"}}
    expected = {
        "get_deep": ["GET /deep (operationId getDeep)", f"$ref {S}Missing points to nothing"],
        "post_deep": ["POST /deep: ", f"{S}Missing"],
        "get_external": ["GET /external (operationId getExternal)", "other.yaml#/components/schemas/Thing",
                         "not a local reference"],
        "get_items_id": ["GET /items/{id}", "#/components/parameters/Nope"],
        "delete_items_id": ["DELETE /items/{id}", "#/components/parameters/Nope"],
    }
    for name, fragments in expected.items():
        api = apis[name]
        assert api.status == "rejected" and api.rejected_by == REF_CHECK and api.raw_outputs
        assert api.reason.startswith(f"{path}: ")
        for fragment in fragments:
            assert fragment in api.reason, (fragment, api.reason)


def test_invalid_schema_rejects_only_its_operation():
    doc = {"openapi": "3.0.0", "info": {"title": "t"},
           "components": {"schemas": {"Bad": {"type": "object", "properties": {"code": {"pattern": "(["}}}}},
           "paths": {"/a": {"get": {"parameters": [{"name": "x", "in": "query", "schema": {"$ref": f"{S}Bad"}}],
                                    "responses": {}},
                            "put": {"parameters": [{"name": "y", "in": "query", "schema": {"type": "strin"}}],
                                    "responses": {}},
                            "post": {"responses": {}}}}}
    apis = by_name(apis_from_openapi(doc, "t.json"))
    assert apis["post_a"].accepted
    assert apis["get_a"].rejected_by == SCHEMA_CHECK and apis["get_a"].reason == (
        "t.json: GET /a: not a valid JSON Schema: pattern '([' is not a valid regular expression: "
        "unterminated character set at position 1")
    assert apis["put_a"].rejected_by == SCHEMA_CHECK and "'strin'" in apis["put_a"].reason
    assert apis["put_a"].reason.startswith("t.json: PUT /a: not a valid JSON Schema")


CHECKED_SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "string", "description": "x"}}, "required": ["a"]},
    {"type": "object", "required": ["a", "a"]},
    {"type": "object", "required": "a"},
    {"type": "object", "required": [1]},
    {"type": ["string", "null"], "enum": ["a", None], "default": 3, "example": {"$ref": 1}, "x-anything": [1]},
    {"type": "strin"},
    {"type": []},
    {"properties": {"a": {"properties": {"b": {"items": {"type": "bogus"}}}}}},
    {"properties": {"a": "not a schema"}},
    {"properties": {"a": True, "b": False}},
    {"items": [{"type": "string"}]},
    {"prefixItems": [{"type": "string"}, True]},
    {"prefixItems": []},
    {"anyOf": [{"type": "string"}, {"minLength": -1}]},
    {"oneOf": [{"pattern": "^a+$"}, {"pattern": "(["}]},
    {"patternProperties": {"^x-": {"type": "string"}}},
    {"patternProperties": {"([": {"type": "string"}}},
    {"$defs": {"a": {"type": "string"}}, "definitions": {"b": {"maximum": "ten"}}},
    {"dependencies": {"a": ["b"], "c": {"type": "object"}}},
    {"dependencies": {"a": [1]}},
    {"dependentRequired": {"a": ["b", "b"]}},
    {"description": 3},
    {"title": "t", "$comment": "c", "format": "date", "contentMediaType": "text/plain", "examples": [1, "a"]},
    {"enum": "a"},
    {"examples": {}},
    {"not": {"uniqueItems": "yes"}, "if": {"type": "string"}, "then": {"maxLength": 2}, "else": {"minItems": 1.5}},
    {"additionalProperties": {"type": "integer"}, "propertyNames": {"pattern": "^[a-z]+$"}},
    {"contentSchema": {"type": 7}},
    {"$ref": "#/$defs/a b"},
    {"$id": "http://example.com/x#frag"},
]


@pytest.mark.parametrize("schema", CHECKED_SCHEMAS)
def test_schema_checker_agrees_with_check_schema(schema):
    try:
        Draft202012Validator.check_schema(schema)
        expected = None
    except SchemaError as exc:
        expected = exc.message
    checker = _SchemaChecker()
    got = checker.problem(schema)
    assert (got is None) == (expected is None), (got, expected)
    assert checker.problem({"type": "object", "properties": {"nested": schema}}) == got  # memoised: the same verdict


def test_schema_checker_knows_the_meta_schema_keywords():
    known = _meta_keywords()
    assert known is not None
    for group in (_META_SUBSCHEMA, _META_SUBSCHEMA_MAPS, _META_SUBSCHEMA_LISTS, _META_ANY_STRING, _META_ANY_ARRAY,
                  _META_ANYTHING):
        assert group <= known
    assert _YAML_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_schemas_nested_too_deep_to_store_reject_their_operation(tmp_path):
    depth = MAX_NESTING // 2 + 5  # each link nests two levels: properties, then the property's schema
    schemas = {f"L{d}": {"type": "object", "properties": {"next": {"$ref": f"{S}L{d + 1}"}}} for d in range(depth)}
    schemas[f"L{depth}"] = {"type": "string"}
    schemas["Shallow"] = {"type": "object", "properties": {"next": {"$ref": f"{S}L{depth - 60}"}}}
    body = {"content": {"application/json": {"schema": {"$ref": f"{S}L0"}}}}
    doc = {"openapi": "3.0.0", "info": {"title": "deep"}, "components": {"schemas": schemas},
           "paths": {"/deep": {"post": {"requestBody": body, "responses": {}}},
                     "/shallow": {"post": {"requestBody": {"content": {"application/json": {
                         "schema": {"$ref": f"{S}Shallow"}}}}, "responses": {}}}}}
    apis = by_name(apis_from_openapi(doc, "deep.json"))
    assert apis["post_shallow"].accepted
    deep = apis["post_deep"]
    assert deep.rejected_by == SCHEMA_CHECK and f"at most {MAX_NESTING} levels" in deep.reason
    assert deep.reason.startswith("deep.json: POST /deep: ")
    pool = tmp_path / "pool.jsonl"
    assert merge_into_pool(str(pool), list(apis.values()))["added"] == 2 and len(read_pool(str(pool))) == 2
