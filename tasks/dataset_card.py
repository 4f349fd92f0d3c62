"""The published dataset in the shape people pick up: parquet shards and a dataset card.

``dataset/data/train-NNNNN-of-MMMMM.parquet`` is read as it is by ``datasets.load_dataset("parquet",
data_files=...)`` (or by pointing ``load_dataset`` at the ``dataset/`` folder). One row per dialog:

- ``id``, ``domain``, ``dialog_type``, ``segments``, ``apis_used``, ``complexity_loss``;
- ``system`` and ``conversations`` (``[{"from", "value"}]``): ToolACE's own layout;
- ``messages``: OpenAI chat messages (``role``, ``content``, ``tool_calls`` with JSON-string ``arguments``,
  ``tool_call_id``), typed columns, so a chat template can be applied directly;
- ``tools``: the OpenAI ``tools`` list as a JSON string (parameter schemas differ per tool, which a
  parquet column type cannot hold without losing them).

``dataset/README.md`` is the dataset card: what made it (models, config, package versions), counts per
domain and dialog type, acceptance per check, the loss distribution, license and provenance.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import polars as pl

from schemas.records import Dialog
from tasks.publish import openai_row, toolace_row

ROWS_PER_SHARD = 5_000
LICENSE = "apache-2.0"

_MESSAGE = pl.Struct({
    "role": pl.String, "content": pl.String, "tool_call_id": pl.String,
    "tool_calls": pl.List(pl.Struct({"id": pl.String, "type": pl.String,
                                     "function": pl.Struct({"name": pl.String, "arguments": pl.String})})),
})
SHARD_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(), "domain": pl.String(), "dialog_type": pl.String(), "segments": pl.List(pl.String),
    "apis_used": pl.List(pl.String), "complexity_loss": pl.Float64(), "system": pl.String(),
    "conversations": pl.List(pl.Struct({"from": pl.String, "value": pl.String})),
    "messages": pl.List(_MESSAGE), "tools": pl.String(),
}


def shard_row(dialog: Dialog) -> dict[str, Any]:
    toolace, openai = toolace_row(dialog), openai_row(dialog)
    messages = [{"role": m["role"], "content": m.get("content"), "tool_call_id": m.get("tool_call_id"),
                 "tool_calls": m.get("tool_calls") or []} for m in openai["messages"]]
    return {"id": dialog.dialog_id, "domain": dialog.domain, "dialog_type": dialog.dialog_type,
            "segments": list(dialog.segments), "apis_used": list(dialog.apis_used),
            "complexity_loss": dialog.complexity_loss, "system": toolace["system"],
            "conversations": toolace["conversations"], "messages": messages,
            "tools": json.dumps(openai["tools"], ensure_ascii=False)}


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(manifest: dict[str, Any], types: Counter[str], domains: Counter[str], shards: list[str]) -> str:
    """The dataset card (Hugging Face README.md with YAML front matter), from the run's manifest and the
    accepted dialogs' counts per type and domain."""
    config, endpoint = manifest["config"], manifest["llm_endpoint"]
    loss = manifest["loss"]
    stages = manifest["stages"]
    checks = sorted(((stage, check, n) for stage, s in stages.items() for check, n in s["rejected_by"].items()),
                    key=lambda r: -r[2])
    acceptance = [(name, s["items_in"], s["accepted"], s["rejected"]) for name, s in stages.items()]
    front = "\n".join([
        "---", f"license: {LICENSE}", "task_categories:", "- text-generation", "tags:", "- function-calling",
        "- tool-use", "- synthetic", "- toolace", "configs:", "- config_name: default", "  data_files:",
        "  - split: train", "    path: data/train-*.parquet", "---"])
    embedded = (" This run used the embedded SmolLM2-135M model, which is for trying the platform: its data is "
                "poor." if endpoint.get("embedded") else "")
    verification = manifest.get("verification") or {}
    return f"""{front}

# ToolACE-style function-calling dialogs, run `{manifest['run_id']}`

{manifest['dataset']['dialogs']} verified multi-agent dialogs made by toolace-platform (the ToolACE method: API pool
synthesis from documents, self-guided dialog generation, dual-layer verification).{embedded}

## Loading

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files="data/train-*.parquet")["train"]
```

Columns: `id`, `domain`, `dialog_type`, `segments`, `apis_used`, `complexity_loss`, `system` +
`conversations` (ToolACE layout, calls as `[func(a=1)]`), `messages` (OpenAI chat messages with
`tool_calls`), `tools` (OpenAI tools list, JSON). Shards: {", ".join(f"`{s}`" for s in shards)}. The same
dialogs are in `toolace.jsonl` and `openai.jsonl`.

## What made it

- LLM: `{endpoint['model']}` at `{endpoint['base_url']}` (embedded: {endpoint.get('embedded')})
- complexity (target) model: `{config.get('target_model')}`; embedding model: `{config.get('embedding_model')}`
- run started {manifest['started_at']}, finished {manifest['finished_at']}
- config (no secrets): `{json.dumps({k: config[k] for k in sorted(config) if k != 'dialog_mix'})}`
- dialog mix asked for: `{json.dumps(config.get('dialog_mix'))}`
- packages: {", ".join(f"{k} {v}" for k, v in manifest['packages'].items())}

## Counts

{_table(("dialog type", "dialogs"), sorted(types.items()))}

{_table(("domain", "dialogs"), domains.most_common())}

## Acceptance per stage and check

{_table(("stage", "in", "accepted", "rejected"), acceptance)}

{_table(("stage", "rejecting check", "items"), checks) if checks else "No item was rejected."}

Verification: {verification.get('dialogs_checked', 0)} dialogs checked, {verification.get('rules_passed', 0)}
passed the rule layer, {verification.get('model_judged', 0)} judged by the model layer,
{verification.get('passed', 0)} passed both.

## Complexity (target-model loss over assistant tokens)

{_table(tuple(loss), [tuple(loss.values())])}

## License and provenance

- license: {LICENSE} (the generated dialogs); the source documents keep their own licenses
- source corpus: `{config.get('corpus')}`; API pool: `{config.get('pool')}`
- every rejected item, with the check that rejected it and the raw LLM output, is in the run's
  `tables/` folder; `manifest.json` lists every file with its size and sha256
- generator: toolace-platform {manifest['packages'].get('toolace-platform', '')}
"""
