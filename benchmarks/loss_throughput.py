"""Throughput of the complexity-loss task against a plain forward pass of the same model.

Builds N realistic tool-use dialogs of varied lengths (a few APIs, user turns, assistant calls and
summaries, tool results), loads the target model once, and times, best of --repeats after a warm-up:

  (a) the loss task: ``LossScorer.score`` (templating + encoding + batched loss) and
      ``LossScorer.score_encoded`` (the same without templating/encoding);
  (b) a plain batched forward pass, ``model(input_ids, attention_mask)`` under inference_mode, over the
      same token sequences in the same length-sorted batches (tensors built and moved beforehand).

Usage: python benchmarks/loss_throughput.py [--target smollm2] [--dialogs 64] [--device cpu|cuda]
Runs unchanged on CPU (float32) and on a CUDA GPU (bfloat16).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from schemas.records import APISpec, Dialog, ToolCall, Turn  # noqa: E402
from tasks.dialogs.complexity import LossScorer  # noqa: E402

CITIES = ["Lisbon", "Rio de Janeiro", "Oslo", "Nairobi", "Osaka", "Vancouver", "Kraków", "Buenos Aires", "Hanoi",
          "Marrakesh", "Reykjavík", "Melbourne"]


def _api(api_id: str, name: str, description: str, params: dict, required: list[str], result: dict,
         domain: str) -> APISpec:
    return APISpec(api_id=api_id, name=name, description=description,
                   parameters={"type": "object", "properties": params, "required": required},
                   result_schema={"type": "object", "properties": result}, domain=domain, node_ids=["n1"],
                   operators=[])


APIS = [
    _api("a1", "get_forecast", "Hourly weather forecast for a city: temperature, wind and precipitation chance.",
         {"city": {"type": "string", "description": "City name"},
          "days": {"type": "integer", "description": "Days ahead, 1-7"},
          "units": {"type": "string", "enum": ["metric", "imperial"]}}, ["city"],
         {"temp_c": {"type": "number"}, "wind_kph": {"type": "number"}, "rain_pct": {"type": "integer"}}, "Weather"),
    _api("a2", "search_flights", "Search one-way flights between two airports on a date, cheapest first.",
         {"origin": {"type": "string", "description": "IATA code"}, "destination": {"type": "string"},
          "date": {"type": "string", "format": "date"}, "max_stops": {"type": "integer"}},
         ["origin", "destination", "date"],
         {"flights": {"type": "array", "items": {"type": "object"}}}, "Travel"),
    _api("a3", "convert_currency", "Convert an amount between two ISO 4217 currencies at today's mid-market rate.",
         {"amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"}},
         ["amount", "from_currency", "to_currency"], {"converted": {"type": "number"}, "rate": {"type": "number"}},
         "Finance"),
    _api("a4", "create_event", "Create a calendar event with a title, start time, duration and attendees.",
         {"title": {"type": "string"}, "start": {"type": "string", "format": "date-time"},
          "duration_min": {"type": "integer"}, "attendees": {"type": "array", "items": {"type": "string"}}},
         ["title", "start"], {"event_id": {"type": "string"}, "status": {"type": "string"}}, "Productivity"),
    _api("a5", "find_restaurants", "Find restaurants near a place by cuisine, price level and minimum rating.",
         {"near": {"type": "string"}, "cuisine": {"type": "string"}, "price_level": {"type": "integer"},
          "min_rating": {"type": "number"}}, ["near"],
         {"results": {"type": "array", "items": {"type": "object"}}}, "Food"),
]


def _exchange(rng: random.Random, call_id: str) -> list[Turn]:
    """One user request, the assistant's call(s), the tool result(s) and the assistant's summary."""
    city, other = rng.sample(CITIES, 2)
    kind = rng.randrange(5)
    if kind == 0:
        calls = [ToolCall(id=call_id, name="get_forecast", arguments={"city": city, "days": rng.randint(1, 5)})]
        results = [{"temp_c": round(rng.uniform(-5, 35), 1), "wind_kph": rng.randint(0, 60),
                    "rain_pct": rng.randint(0, 100)}]
        ask = f"What will the weather be like in {city} over the next few days? I'm packing tonight."
        summary = (f"In {city} expect around {results[0]['temp_c']} °C with winds up to {results[0]['wind_kph']} "
                   f"km/h and a {results[0]['rain_pct']}% chance of rain, so pack a light jacket.")
    elif kind == 1:
        date = f"2026-12-0{rng.randint(1, 9)}"
        calls = [ToolCall(id=call_id, name="search_flights",
                          arguments={"origin": "LIS", "destination": "OSL", "date": date})]
        hours = sorted(rng.sample(range(6, 23), rng.randint(2, 6)))
        flights = [{"carrier": rng.choice(["TP", "SK", "FR", "LH"]), "depart": f"{h:02d}:{rng.randint(0, 59):02d}",
                    "price_eur": rng.randint(49, 420), "stops": rng.randint(0, 2)} for h in hours]
        results = [{"flights": flights}]
        ask = "Can you find me a flight from Lisbon to Oslo early next month? Cheapest is best, a stop is fine."
        summary = (f"I found {len(flights)} flights. The cheapest is {min(f['price_eur'] for f in flights)} EUR; "
                   "tell me which departure time suits you and I can look at the return leg too.")
    elif kind == 2:
        amount = rng.randint(10, 5000)
        calls = [ToolCall(id=call_id, name="convert_currency",
                          arguments={"amount": amount, "from_currency": "EUR", "to_currency": "JPY"}),
                 ToolCall(id=call_id + "b", name="convert_currency",
                          arguments={"amount": amount, "from_currency": "EUR", "to_currency": "USD"})]
        results = [{"converted": round(amount * 162.3, 2), "rate": 162.3}, {"converted": round(amount * 1.08, 2),
                                                                             "rate": 1.08}]
        ask = f"How much is {amount} euros in yen, and in US dollars while you're at it?"
        summary = f"{amount} EUR is about {results[0]['converted']} JPY and {results[1]['converted']} USD today."
    elif kind == 3:
        calls = [ToolCall(id=call_id, name="create_event",
                          arguments={"title": f"Trip planning: {city}", "start": "2026-12-02T10:00:00",
                                     "duration_min": 45, "attendees": ["ana@example.com", "li@example.com"]})]
        results = [{"event_id": f"evt_{rng.randint(1000, 9999)}", "status": "confirmed"}]
        ask = f"Put a 45 minute meeting about our {city} trip in my calendar on December 2nd at 10, with Ana and Li."
        summary = f"Done: 'Trip planning: {city}' is booked for December 2 at 10:00 with Ana and Li (confirmed)."
    else:
        calls = [ToolCall(id=call_id, name="find_restaurants",
                          arguments={"near": f"{city} old town", "cuisine": rng.choice(["seafood", "vegan", "ramen"]),
                                     "min_rating": 4.2})]
        places = [{"name": f"{rng.choice(['Casa', 'Chez', 'Taberna', 'Noodle Bar'])} {rng.randint(1, 99)}",
                   "rating": round(rng.uniform(4.2, 4.9), 1), "price_level": rng.randint(1, 4)}
                  for _ in range(rng.randint(2, 7))]
        results = [{"results": places}]
        ask = f"Any good places to eat near the old town in {city}? Rated above 4.2 please."
        summary = "Top picks: " + "; ".join(f"{p['name']} ({p['rating']})" for p in places[:3]) + "."
    turns = [Turn(role="user", content=ask), Turn(role="assistant", tool_calls=calls)]
    turns += [Turn(role="tool", tool_call_id=c.id, name=c.name, content=json.dumps(r)) for c, r in zip(calls, results,
                                                                                                       strict=True)]
    turns.append(Turn(role="assistant", content=summary))
    return turns


def build_dialogs(n: int, seed: int = 7) -> list[Dialog]:
    """Dialogs of 1-4 exchanges over 2-5 offered APIs, some opening with a clarification question."""
    rng = random.Random(seed)
    dialogs = []
    for k in range(n):
        turns: list[Turn] = []
        if rng.random() < 0.25:
            turns += [Turn(role="user", content="I need some help planning a trip."),
                      Turn(role="assistant", content="Happy to help! Where are you going, and when?")]
        for e in range(rng.choice([1, 1, 2, 2, 3, 4])):
            turns += _exchange(rng, f"c{k}_{e}")
        dialogs.append(Dialog(dialog_id=f"bench-{k}", dialog_type="multi_turn", domain="Travel",
                              tools=rng.sample(APIS, rng.randint(2, 5)), turns=turns))
    return dialogs


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="smollm2")
    parser.add_argument("--dialogs", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if available]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top operators of one loss pass")
    args = parser.parse_args()

    scorer = LossScorer(args.target, device=args.device)
    on_cuda = torch.device(scorer.device).type == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(scorer.device)

    dialogs = build_dialogs(args.dialogs)
    encoded = scorer.encode(dialogs)
    batches = scorer.batches(encoded)
    scored = [i for b in batches for i in b]
    if len(scored) != len(dialogs):
        print(f"warning: {len(dialogs) - len(scored)} dialogs do not fit the context or have no assistant tokens")
    padded = [scorer.pad([encoded[i] for i in b]) for b in batches]
    tokens = sum(len(encoded[i].input_ids) for i in scored)
    assistant = sum(encoded[i].assistant_tokens for i in scored)
    padded_tokens = sum(ids.numel() for ids, _ in padded)

    def plain() -> None:
        with torch.inference_mode():
            for ids, attention in padded:
                scorer.model(input_ids=ids, attention_mask=attention)
        sync()

    def loss_with_encoding() -> None:
        scorer.score(dialogs)
        sync()

    def loss_without_encoding() -> None:
        scorer.score_encoded(encoded)
        sync()

    runs = {"plain": plain, "loss": loss_without_encoding, "loss+encoding": loss_with_encoding}
    warm = build_dialogs(4, seed=1)  # warm-up: kernels, allocator, template compilation
    scorer.score(warm)
    with torch.inference_mode():
        for ids, attention in [scorer.pad([e]) for e in scorer.encode(warm)]:
            scorer.model(input_ids=ids, attention_mask=attention)
    sync()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):  # interleaved, so drift hits every measurement alike
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    started = time.perf_counter()
    scorer.encode(dialogs)
    encoding = time.perf_counter() - started

    dtype = next(scorer.model.parameters()).dtype
    print(f"target: {args.target}; device: {scorer.device} ({device_name(scorer.device)}), dtype {dtype}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"dialogs: {len(dialogs)} ({len(scored)} scored) in {len(batches)} batches; tokens: {tokens} "
          f"({padded_tokens} padded), assistant tokens: {assistant}; output head on assistant positions only: "
          f"{scorer.fast_head}")
    print(f"best of {args.repeats}:")
    for name in runs:
        print(f"  {name:<15}{best[name]:>9.3f} s {tokens / best[name]:>12,.0f} tokens/s")
    print(f"  {'(encoding)':<15}{encoding:>9.3f} s")
    print(f"ratio loss/plain: {best['plain'] / best['loss']:.3f} without encoding, "
          f"{best['plain'] / best['loss+encoding']:.3f} with encoding (target >= 0.9)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=activities) as prof:
            loss_with_encoding()
        key = "cuda_time_total" if on_cuda else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
