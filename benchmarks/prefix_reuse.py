"""Does the next step of a multi-turn conversation reuse its evaluated prompt? (issue 21: multi-turn evaluation cost)

    .venv/bin/python benchmarks/prefix_reuse.py [--instances 2] [--max-tokens 32]

Through the real embedded server over HTTP (SmolLM2, ``--instances`` llama.cpp instances), two BFCL multi-turn
conversations with different class docs (multi_turn_base entries 1 and 100: GorillaFileSystem alone, TradingBot
alone, about 4,500 prompt tokens each) are asked their first step together, then their second step together (the
first answer and a tool result appended), then a third conversation of entry 1's group (entry 3: same docs, another
question). Printed: each request's latency. With prefix affinity each second step lands on the instance that holds
its conversation and evaluates only the new tokens; the third reuses the shared docs. Without it, a step that lands
on the other instance evaluates its whole prompt again. CPU work elsewhere slows every figure: the load average is
printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402

from tasks.evaluation.bfcl_eval import load_items  # noqa: E402
from tasks.evaluation.bfcl_multi_turn import first_turn_messages  # noqa: E402
from toolace.llm.endpoint import embedded_endpoint  # noqa: E402


async def ask(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, str]], max_tokens: int,
              label: str) -> tuple[str, float, str]:
    started = time.perf_counter()
    response = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                    temperature=0.0, timeout=900)
    return label, time.perf_counter() - started, response.choices[0].message.content or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    entries = load_items(["multi_turn_base"], 101)["multi_turn_base"]
    a, b, c = (first_turn_messages(entries[i]) for i in (1, 100, 3))
    load_before = os.getloadavg()

    async def run(base_url: str, model: str) -> list[tuple[str, float, str]]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
        try:
            first = await asyncio.gather(ask(client, model, a, args.max_tokens, "A step 1 (entry 1)"),
                                         ask(client, model, b, args.max_tokens, "B step 1 (entry 100)"))
            tool = {"role": "user", "content": "[{'role': 'tool', 'name': 'ls()', 'content': \"{'current_directory_"
                                               "content': ['report.txt', 'notes']}\"}]"}
            a2 = [*a, {"role": "assistant", "content": first[0][2]}, tool]
            b2 = [*b, {"role": "assistant", "content": first[1][2]}, tool]
            second = await asyncio.gather(ask(client, model, b2, args.max_tokens, "B step 2"),
                                          ask(client, model, a2, args.max_tokens, "A step 2"))
            third = [await ask(client, model, c, args.max_tokens, "C step 1 (entry 3, A's docs)")]
            return [*first, *second, *third]
        finally:
            await client.close()

    with embedded_endpoint(instances=args.instances) as endpoint:
        results = asyncio.run(run(endpoint.base_url, endpoint.model))
    load_after = os.getloadavg()
    print(f"date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs); instances: {args.instances}; max tokens {args.max_tokens}")
    for label, seconds, _ in results:
        print(f"  {label:<30} {seconds:7.1f} s")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
