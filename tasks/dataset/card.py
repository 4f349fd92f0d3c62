"""The published dataset in the shape people pick up: parquet shards and a dataset card.

``dataset/data/train-NNNNN-of-MMMMM.parquet`` is read as it is by ``datasets.load_dataset("parquet",
data_files=...)`` (or by pointing ``load_dataset`` at the ``dataset/`` folder). One row per dialog:

- ``id``, ``domain``, ``dialog_type``, ``segments``, ``apis_used``, ``complexity_loss``;
- ``toolace_system`` and ``toolace_conversations`` (``[{"from", "value"}]``): ToolACE's own layout (named
  apart from ``messages``: TRL's ``SFTTrainer`` would take a ``conversations`` column of ``from``/``value``
  pairs for the chat and overwrite ``messages`` with it);
- ``messages``: chat messages in the Hugging Face convention (:func:`tasks.formats.call_format.chat_messages`), what
  ``tokenizer.apply_chat_template(row["messages"], tools=row["tools"])`` and TRL's ``SFTTrainer`` take as
  they are: only the keys a role uses, ``tool_calls`` with ``arguments`` as objects, 9-character call ids,
  ``tool`` messages naming the ``tool_call_id`` they answer (and ``reasoning_content`` on assistant messages
  with ``publish_reasoning``);
- ``tools``: ``[{"type": "function", "function": {"name", "description", "parameters"}}]``;
- ``environment``: for an ``agentic_multi_turn`` dialog, its environment as in the JSON rows' ``meta`` (id, source,
  initial state, ground-truth actions, required outputs, final state diff; the server for an MCP environment);
  null for every other type.

``messages`` and ``tools`` are lists of JSON values (Arrow's canonical ``arrow.json`` extension type, the
``datasets`` feature ``List(Json())``): a struct column would unify keys across rows, so every argument object,
parameter schema and message would come back with the other rows' keys as nulls. ``datasets`` (>= 4.7) reads
them back as the exact dicts written; the schema also carries the ``datasets`` features in its metadata.

``dataset/README.md`` is the dataset card: what made it (models, config, package versions), counts per
domain and dialog type, acceptance per check, the chat-template check per model family, the loss
distribution, license and provenance.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from schemas.environments import AgenticDialog
from schemas.records import Dialog
from tasks.dataset.rows import toolace_row
from tasks.formats.call_format import chat_messages, with_published_ids

ROWS_PER_SHARD = 5_000
LICENSE = "apache-2.0"
TOOL_SOURCES = ("synthesised", "openapi", "mcp", "imported")
REAL_TOOLS_SHOWN = 50


@dataclass
class ToolTally:
    """The published dialogs' tools by source (each tool once) and their tool turns, executed (the tool really
    called: an MCP tool with ``execute_tools``) or simulated by the tool agent."""

    sources: Counter[str] = field(default_factory=Counter)
    turns: Counter[str] = field(default_factory=Counter)
    executed: Counter[str] = field(default_factory=Counter)  # "tool (server)": executed turns
    _seen: set[str] = field(default_factory=set)

    def add(self, dialog: Dialog) -> None:
        for api in dialog.tools:
            if api.api_id not in self._seen:
                self._seen.add(api.api_id)
                self.sources[api.tool_source()] += 1
        servers = {a.name: p.server_name for a in dialog.tools if (p := a.mcp_provenance()) is not None}
        for turn in dialog.turns:
            if turn.role != "tool":
                continue
            self.turns["executed" if turn.executed else "simulated"] += 1
            if turn.executed and turn.name:
                self.executed[f"{turn.name} ({servers.get(turn.name, 'MCP')})"] += 1

    def report(self) -> dict[str, Any]:
        return {"by_source": {s: self.sources.get(s, 0) for s in TOOL_SOURCES},
                "tool_turns": {"executed": self.turns.get("executed", 0), "simulated": self.turns.get("simulated", 0)},
                "executed_tools": dict(self.executed.most_common())}


def tools_section(report: dict[str, Any] | None) -> str:
    """The card's account of the tools: how many came from where, and which tool turns are real results."""
    if not report:
        return "Not recorded for this run."
    by_source, turns = report["by_source"], report["tool_turns"]
    table = _table(("tools offered in the dialogs, by source", "tools"),
                   [("synthesised from documents", by_source.get("synthesised", 0)),
                    ("imported from OpenAPI documents", by_source.get("openapi", 0)),
                    ("imported from MCP servers", by_source.get("mcp", 0)),
                    ("imported from function lists", by_source.get("imported", 0))])
    executed = report.get("executed_tools") or {}
    real = ", ".join(f"`{name}` ({n})" for name, n in list(executed.items())[:REAL_TOOLS_SHOWN])
    more = f" and {len(executed) - REAL_TOOLS_SHOWN} more" if len(executed) > REAL_TOOLS_SHOWN else ""
    said = (f"Real tools (results from actually calling them, with the number of turns): {real}{more}."
            if executed else "No tool was called for real: every tool result was written by the tool agent.")
    return (f"{table}\n\nTool turns: {turns.get('executed', 0)} executed (the tool's real result), "
            f"{turns.get('simulated', 0)} simulated by the tool agent. {said}")

_JSON_LIST = pa.list_(pa.json_())
_STRING_LIST = pa.list_(pa.string())
# The `datasets` features of the shard columns (Features.to_dict()), kept in the parquet schema's metadata.
HF_FEATURES: dict[str, Any] = {
    "id": {"dtype": "string", "_type": "Value"},
    "domain": {"dtype": "string", "_type": "Value"},
    "dialog_type": {"dtype": "string", "_type": "Value"},
    "segments": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    "apis_used": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    "complexity_loss": {"dtype": "float64", "_type": "Value"},
    "toolace_system": {"dtype": "string", "_type": "Value"},
    "toolace_conversations": {"feature": {"from": {"dtype": "string", "_type": "Value"},
                                  "value": {"dtype": "string", "_type": "Value"}}, "_type": "List"},
    "messages": {"feature": {"_type": "Json"}, "_type": "List"},
    "tools": {"feature": {"_type": "Json"}, "_type": "List"},
    "environment": {"_type": "Json"},
}
SHARD_SCHEMA = pa.schema(
    [("id", pa.string()), ("domain", pa.string()), ("dialog_type", pa.string()), ("segments", _STRING_LIST),
     ("apis_used", _STRING_LIST), ("complexity_loss", pa.float64()), ("toolace_system", pa.string()),
     ("toolace_conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
     ("messages", _JSON_LIST), ("tools", _JSON_LIST), ("environment", pa.json_())],
    metadata={"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})
JSON_COLUMNS = ("messages", "tools")


def chat_row(dialog: Dialog, reasoning: bool = False) -> dict[str, Any]:
    """The dialog's ``messages`` (Hugging Face chat convention, published call ids) and ``tools``."""
    return {"messages": chat_messages(with_published_ids(dialog.dialog_id, dialog.turns), reasoning=reasoning),
            "tools": [t.tool_definition() for t in dialog.tools]}


def shard_row(dialog: Dialog, reasoning: bool = False, toolace: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the shards (see the module docstring); ``reasoning`` puts the turns' ``reasoning_content`` on
    the assistant messages (the ``publish_reasoning`` setting); ``toolace``: the dialog's ToolACE row, when
    already made."""
    toolace = toolace or toolace_row(dialog)
    return {"id": dialog.dialog_id, "domain": dialog.domain, "dialog_type": dialog.dialog_type,
            "segments": list(dialog.segments), "apis_used": list(dialog.apis_used),
            "complexity_loss": dialog.complexity_loss, "toolace_system": toolace["system"],
            "toolace_conversations": toolace["conversations"], **chat_row(dialog, reasoning),
            "environment": dialog.meta if isinstance(dialog, AgenticDialog) else None}


def _json_list(cells: list[list[Any]]) -> pa.Array:
    offsets, values = [0], []
    for cell in cells:
        values.extend(json.dumps(v, ensure_ascii=False) for v in cell)
        offsets.append(len(values))
    storage = pa.ExtensionArray.from_storage(pa.json_(), pa.array(values, pa.string()))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), storage, type=_JSON_LIST)


def shard_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Shard rows as an Arrow table of :data:`SHARD_SCHEMA` (``messages``/``tools`` as JSON lists)."""
    columns = []
    for column in SHARD_SCHEMA:
        cells = [row[column.name] for row in rows]
        if column.name in JSON_COLUMNS:
            columns.append(_json_list(cells))
        elif column.name == "environment":
            values = [None if cell is None else json.dumps(cell, ensure_ascii=False) for cell in cells]
            columns.append(pa.ExtensionArray.from_storage(pa.json_(), pa.array(values, pa.string())))
        else:
            columns.append(pa.array(cells, column.type))
    return pa.Table.from_arrays(columns, schema=SHARD_SCHEMA)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def template_section(report: Any) -> str:
    """The card's chat-template section: per family, the sampled rows rendered, failed, and those the family
    cannot take at all, with the reason (a :class:`tasks.formats.chat_templates.TemplateReport` or its dict)."""
    if report is None:
        return "The rows were not rendered through chat templates in this run (`template_check_rows: 0`)."
    data = report if isinstance(report, dict) else report.model_dump()
    rows = []
    for name, family in data["families"].items():
        unsupported = sum(family["unsupported"].values())
        reasons = "; ".join(f"{n}: {reason}" for reason, n in family["unsupported"].items()) or "-"
        rows.append((name, f"`{family['template']}`", family["rendered"], family["failed"], unsupported, reasons))
    table = _table(("family", "template", "rendered", "failed", "cannot take", "why not"), rows) if rows else ""
    note = f"\n\n{data['target_note']}." if data.get("target_note") else ""
    return (f"{data['rows_checked']} of the {data['rows_published']} rows (a seeded sample) were rendered with "
            "transformers' `apply_chat_template` renderer through the real chat templates of these model families "
            "(llama.cpp's copies of the models' own templates) and of the target model. A row a family cannot "
            "take at all is counted, not rendered: train that family on the other rows.\n\n" + table + note)


def dataset_card(manifest: dict[str, Any], types: Counter[str], domains: Counter[str], shards: list[str],
                 templates: Any = None) -> str:
    """The dataset card (Hugging Face README.md with YAML front matter), from the run's manifest, the
    accepted dialogs' counts per type and domain, and the chat-template check (``templates``: a
    :class:`tasks.formats.chat_templates.TemplateReport`, None when it did not run)."""
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

Columns: `id`, `domain`, `dialog_type`, `segments`, `apis_used`, `complexity_loss`, `toolace_system` +
`toolace_conversations` (ToolACE layout, calls as `[func(a=1)]`), `messages` (chat messages in the Hugging Face
convention: `tool_calls` with `arguments` as objects and 9-character ids, `tool` messages naming the
`tool_call_id` they answer) and `tools` (`[{{"type": "function", "function": {{...}}}}]`), ready for
`tokenizer.apply_chat_template(row["messages"], tools=row["tools"])` and TRL's `SFTTrainer`. `messages` and
`tools` are stored as JSON values (`datasets` >= 4.7 reads them back as the exact dicts written). Shards:
{", ".join(f"`{s}`" for s in shards)}. The same dialogs are in `toolace.jsonl` (with ids and meta) and
`openai.jsonl` (OpenAI's fine-tuning format, `arguments` as JSON strings), row for row.

## Chat templates

{template_section(templates)}

## What made it

- LLM: `{endpoint['model']}` at `{endpoint['base_url']}` (embedded: {endpoint.get('embedded')})
- complexity (target) model: `{config.get('target_model')}`; embedding model: `{config.get('embedding_model')}`
- run started {manifest['started_at']}, finished {manifest['finished_at']}
- config (no secrets): `{json.dumps({k: config[k] for k in sorted(config) if k != 'dialog_mix'})}`
- dialog mix asked for: `{json.dumps(config.get('dialog_mix'))}`
- packages: {", ".join(f"{k} {v}" for k, v in manifest['packages'].items())}

## Counts

{_table(("dialog type", "dialogs"), sorted(types.items()))}

## Tools

{tools_section(manifest.get("tools"))}

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
