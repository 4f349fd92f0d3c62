"""Two costs every run pays before or during mining, before and after (docs/benchmarks.md, "Startup and mining").

    .venv/bin/python benchmarks/startup_reads.py [--repeat 3] [--batch-size 16] [--runs 2]

1. The target model's chat template from the shipped SmolLM2 GGUF (the default ``--target-model``): gguf-py's
   ``GGUFReader`` (what the template gate used) against ``tasks.formats.gguf_metadata.read_metadata`` (the header's
   key-value pairs only). Best of ``--repeat``.
2. Mining's first-pass embedding of the bundled sample corpus in batches of ``--batch-size`` (the run's
   ``batch_size``) at the default relevance threshold: every batch embeds mining's five prototype texts with the
   documents the heuristic does not settle. A fresh embedder with its
   memory off (as before) against one with it on, over ``--runs`` passes of the corpus (a long-lived process mining
   again: a Prefect worker, a test session). Printed: seconds and texts through the model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.corpus.mining import first_pass  # noqa: E402
from tasks.corpus.reading import iter_documents  # noqa: E402
from tasks.embedding.text_embedding import TextEmbedder  # noqa: E402
from tasks.formats.gguf_metadata import read_metadata  # noqa: E402
from tasks.verification.template_gate import GGUF_KEYS  # noqa: E402
from toolace.config import SAMPLE_CORPUS, RunConfig  # noqa: E402
from toolace.llm.embedded_server import default_gguf_path  # noqa: E402


class Counted:
    """The embedder's model, counting the texts it is given."""

    def __init__(self, model: Any) -> None:
        self.model, self.texts = model, 0

    def __call__(self, **batch: Any) -> Any:
        self.texts += int(batch["input_ids"].shape[0])
        return self.model(**batch)


def best_of(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    from gguf import GGUFReader

    path = default_gguf_path()

    def with_gguf_py() -> None:
        reader = GGUFReader(str(path))
        for key in GGUF_KEYS:
            field = reader.get_field(key)
            if field is not None:
                field.contents()

    print(f"GGUF metadata of {path.name} ({path.stat().st_size / 2**20:.0f} MiB), best of {args.repeat}:")
    print(f"  gguf-py GGUFReader:          {best_of(args.repeat, with_gguf_py):7.3f} s")
    print(f"  header key-value pairs only: {best_of(args.repeat, lambda: read_metadata(path, GGUF_KEYS)):7.3f} s")

    batches = [b.documents for b in iter_documents(SAMPLE_CORPUS, batch_size=args.batch_size)]
    threshold = RunConfig().relevance_threshold
    print(f"mining's first pass (threshold {threshold}, the documents the heuristic does not settle embedded): "
          f"{sum(map(len, batches))} documents of the sample corpus in {len(batches)} batches of {args.batch_size}, "
          f"{args.runs} passes:")
    for memo in (0, 4096):
        embedder = TextEmbedder(memo_texts=memo)
        counted = Counted(embedder.model)
        embedder.model = counted
        label = "memory off (as before)" if not memo else f"memory of {memo} texts"
        for run in range(1, args.runs + 1):
            started, before = time.perf_counter(), counted.texts
            for batch in batches:
                first_pass(batch, embedder.embed, threshold)
            print(f"  {label:24s} pass {run}: {time.perf_counter() - started:6.2f} s, "
                  f"{counted.texts - before} texts through the model")


if __name__ == "__main__":
    main()
