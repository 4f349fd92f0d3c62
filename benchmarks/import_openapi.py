"""Time importing a large generated OpenAPI 3 document, as `toolace import-apis` does it.

The document has OPERATIONS operations (four per path: get, post, put, delete), component schemas chained through
`$ref`s DEPTH deep (every third link an `allOf`, every third a `oneOf`), `allOf` / `oneOf` entities built on the
chains, shared parameters and request bodies through `components/parameters` / `components/requestBodies` refs, and
a recursive schema. It is written as JSON and as YAML to a temporary folder and each file is imported, in a fresh
process, through `tasks.apis.importing.read_api_file`, the function the CLI uses. Prints, per format: operations, APIs
imported (accepted / rejected), wall and CPU seconds, operations/s and the importing process's peak RSS.

Usage: python benchmarks/import_openapi.py [--operations 5000] [--depth 50] [--chains 16] [--profile 25]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = "#/components/schemas/"


def chain_name(chain: int, level: int) -> str:
    return f"Chain{chain}L{level}"


def build_document(operations: int = 5000, depth: int = 50, chains: int = 16) -> dict[str, Any]:
    """An OpenAPI 3 document with `operations` operations and `$ref` chains `depth` deep."""
    depth = max(depth, 1)
    schemas: dict[str, Any] = {
        "Base": {"type": "object", "properties": {"id": {"type": "integer"}, "created": {"type": "string",
                                                                                     "format": "date-time"}},
                 "required": ["id"]},
        "Node": {"type": "object", "description": "A recursive tree",
                 "properties": {"label": {"type": "string"},
                                "children": {"type": "array", "items": {"$ref": SCHEMAS + "Node"}}}},
        "Error": {"type": "object", "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}},
    }
    for chain in range(chains):
        for level in range(depth):
            here = f"c{chain}l{level}"
            if level == depth - 1:
                schemas[chain_name(chain, level)] = {
                    "type": "object", "properties": {f"leaf_{chain}": {"type": "string", "example": "x"}},
                    "required": [f"leaf_{chain}"]}
                continue
            nxt = {"$ref": SCHEMAS + chain_name(chain, level + 1)}
            if level % 3 == 0:
                schema = {"type": "object", "properties": {f"f_{here}": {"type": "integer"}, "next": nxt},
                          "required": [f"f_{here}"]}
            elif level % 3 == 1:
                schema = {"allOf": [nxt, {"type": "object", "properties": {f"g_{here}": {"type": "string"}},
                                          "required": [f"g_{here}"]}], "description": f"level {level}"}
            else:
                schema = {"type": "object", "properties": {f"h_{here}": {"oneOf": [nxt, {"type": "string"}]},
                                                           "tags": {"type": "array", "items": {"type": "string"}}}}
            schemas[chain_name(chain, level)] = schema
        schemas[f"Entity{chain}"] = {"allOf": [{"$ref": SCHEMAS + "Base"}, {"$ref": SCHEMAS + chain_name(chain, 0)},
                                               {"properties": {f"name_{chain}": {"type": "string"}},
                                                "required": [f"name_{chain}"]}],
                                     "description": f"Entity {chain}"}
        schemas[f"Choice{chain}"] = {"oneOf": [{"$ref": SCHEMAS + f"Entity{chain}"},
                                               {"$ref": SCHEMAS + chain_name(chain, depth // 2)}]}
    parameters = {
        "ItemId": {"name": "itemId", "in": "path", "required": True, "schema": {"type": "integer"}},
        "Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20},
                  "description": "Max items"},
        "Offset": {"name": "offset", "in": "query", "schema": {"type": "integer"}},
        "Trace": {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
    }
    request_bodies = {f"EntityBody{chain}": {"required": True, "description": f"Entity {chain}", "content": {
        "application/json": {"schema": {"$ref": SCHEMAS + f"Entity{chain}"}}}} for chain in range(chains)}

    def ok(schema: dict[str, Any]) -> dict[str, Any]:
        return {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}},
                "default": {"description": "error", "content": {"application/json": {
                    "schema": {"$ref": SCHEMAS + "Error"}}}}}

    paths: dict[str, Any] = {}
    for index in range((operations + 3) // 4):
        chain = index % chains
        entity = {"$ref": SCHEMAS + f"Entity{chain}"}
        item: dict[str, Any] = {"parameters": [{"$ref": "#/components/parameters/ItemId"}]}
        item["get"] = {"operationId": f"getItem{index}", "summary": f"Get item {index}", "tags": [f"group{chain}"],
                       "parameters": [{"$ref": "#/components/parameters/Limit"},
                                      {"$ref": "#/components/parameters/Offset"},
                                      {"$ref": "#/components/parameters/Trace"},
                                      {"name": "filter", "in": "query",
                                       "schema": {"$ref": SCHEMAS + chain_name(chain, depth - 1)}}],
                       "responses": ok({"type": "array", "items": entity})}
        item["post"] = {"operationId": f"createItem{index}", "summary": f"Create item {index}",
                        "requestBody": {"$ref": f"#/components/requestBodies/EntityBody{chain}"},
                        "responses": ok(entity)}
        item["put"] = {"operationId": f"replaceItem{index}", "summary": f"Replace item {index}",
                       "parameters": [{"$ref": "#/components/parameters/Trace"}],
                       "requestBody": {"required": True, "content": {"application/json": {
                           "schema": {"$ref": SCHEMAS + f"Choice{chain}"}}}},
                       "responses": ok({"$ref": SCHEMAS + "Node"} if index % 2 else entity)}
        item["delete"] = {"operationId": f"deleteItem{index}", "summary": f"Delete item {index}",
                          "parameters": [{"name": "reason", "in": "query", "schema": {"type": "string"}}],
                          "responses": {"204": {"description": "gone"}}}
        left = operations - 4 * index
        for method in ("get", "post", "put", "delete")[min(left, 4):]:
            del item[method]
        paths[f"/groups/{chain}/items{index}/{{itemId}}"] = item
    return {"openapi": "3.0.3", "info": {"title": "Generated benchmark API", "version": "1"},
            "paths": paths,
            "components": {"schemas": schemas, "parameters": parameters, "requestBodies": request_bodies}}


def import_one(path: str, profile: int) -> dict[str, Any]:
    """Import one file in this process: seconds, API counts and peak RSS (MiB)."""
    sys.path.insert(0, str(ROOT))
    from tasks.apis.importing import read_api_file

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    apis = read_api_file(path)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(profile)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accepted = sum(api.accepted for api in apis)
    return {"apis": len(apis), "accepted": accepted, "rejected": len(apis) - accepted, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=5000)
    parser.add_argument("--depth", type=int, default=50, help="length of the $ref chains")
    parser.add_argument("--chains", type=int, default=16, help="number of distinct $ref chains")
    parser.add_argument("--formats", default="json,yaml", help="comma-separated: json, yaml")
    parser.add_argument("--profile", type=int, default=0, help="print the top N cProfile entries per import")
    parser.add_argument("--import-file", help=argparse.SUPPRESS)  # internal: import one file, print JSON
    args = parser.parse_args()
    if args.import_file:
        print(json.dumps(import_one(args.import_file, args.profile)))
        return

    doc = build_document(args.operations, args.depth, args.chains)
    operations = sum(1 for item in doc["paths"].values() for key in item if key != "parameters")
    print(f"python {platform.python_version()} on {platform.machine()}, {len(doc['components']['schemas'])} "
          f"schemas, {operations} operations, $ref depth {args.depth}, libyaml {yaml.__with_libyaml__}")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"json": Path(tmp) / "openapi.json", "yaml": Path(tmp) / "openapi.yaml"}
        files["json"].write_text(json.dumps(doc))
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        files["yaml"].write_text(yaml.dump(doc, Dumper=dumper, sort_keys=False))
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            path = files[fmt]
            command = [sys.executable, __file__, "--import-file", str(path), "--profile", str(args.profile)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            if args.profile:
                print(done.stderr, file=sys.stderr)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rate = operations / result["seconds"] if result["seconds"] else float("inf")
            print(f"{fmt:4}  {path.stat().st_size / 2**20:5.1f} MiB  operations {operations}  "
                  f"APIs {result['apis']} (accepted {result['accepted']}, rejected {result['rejected']})  "
                  f"{result['seconds']:7.2f} s (CPU {result['cpu_seconds']:.2f} s)  {rate:7.0f} ops/s  "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
