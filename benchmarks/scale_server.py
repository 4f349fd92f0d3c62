"""The scripted OpenAI-compatible server of the scale benchmarks, with answers as varied as an LLM's.

    python -m benchmarks.scale_server --port 8765 [--latency 0.2]

The plain scripted server (``tests.scripted_llm_server``) derives every string from the schema and a 4-hex
hash of the prompt (``name_1a2b``, ``description_1a2b``): at the paper's scale its API answers collide by name
and are near duplicates of each other by embedding, so the pool's admission rejects most of them and 26,500
APIs cannot be reached at all. This server answers two schemas the way a real model would vary them, and
leaves every other request (dialog agents, judges) to the default answers:

- ``DocumentExtraction`` (mining): a domain (scope and sector), a sub-domain and 3-4 functionalities ("verb
  object"), picked from word lists with a generator seeded by the document's text, so the 2,000 generated
  documents give a context tree of many domains and leaves;
- the API-generation schemas: :class:`benchmarks.pool_growth.APIAnswers` (names, descriptions and
  parameters combined from word lists along the sampled subtree, a few percent deliberate copies of the
  prompt's example API, which must end as duplicate rejections).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pool_growth import FACETS, OBJECTS, SCOPES, SECTORS, VERBS, APIAnswers  # noqa: E402
from tests.scripted_llm_server import DEFAULT_MODEL, ScriptedLLMServer, last_user_text, schema_name  # noqa: E402


def mining_answer(body: dict[str, Any]) -> dict[str, Any] | None:
    """A varied ``DocumentExtraction``: the same document always gets the same answer."""
    if schema_name(body) != "DocumentExtraction":
        return None
    rng = random.Random(last_user_text(body))
    leaves = sorted({f"{verb} {obj}" for (verb, _), obj in zip(rng.sample(VERBS, 5), rng.sample(OBJECTS, 5),
                                                               strict=True)})
    return {"json": {"describes_functionality": True, "domain": f"{rng.choice(SCOPES)} {rng.choice(SECTORS)}",
                     "subdomains": [rng.choice(FACETS)], "functionalities": leaves[:rng.randint(3, 4)]}}


def build_server(host: str, port: int, latency: float) -> ScriptedLLMServer:
    server = ScriptedLLMServer([DEFAULT_MODEL], host=host, port=port, latency=latency, keep_requests=False)
    server.script(APIAnswers())
    server.script(mining_answer)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat completion")
    args = parser.parse_args(argv)
    server = build_server(args.host, args.port, args.latency)
    print(f"scale server: base_url http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
