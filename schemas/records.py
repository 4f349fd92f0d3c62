"""The records each stage produces. Every record ends accepted or rejected, never dropped.

A rejected record names the versioned check that rejected it (``rejected_by``, e.g.
``required_params_v1``), a human-readable reason, and keeps the raw LLM output that led to it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

Status = Literal["accepted", "rejected"]
# ``agentic_multi_turn``: a conversation executed against a stateful environment (tasks/environments); made only
# when a run's ``dialog_mix`` names it, so the default mix (and every default output) is unchanged
DialogType = Literal["single", "parallel", "dependent", "non_tool", "clarification", "multi_turn",
                     "agentic_multi_turn"]
DIALOG_TYPES: tuple[DialogType, ...] = ("single", "parallel", "dependent", "non_tool", "clarification", "multi_turn",
                                        "agentic_multi_turn")
SegmentType = Literal["single", "parallel", "dependent", "non_tool", "clarification"]
SEGMENT_TYPES: tuple[SegmentType, ...] = ("single", "parallel", "dependent", "non_tool", "clarification")


class Outcome(BaseModel):
    status: Status = "accepted"
    rejected_by: str | None = None
    reason: str | None = None
    raw_outputs: list[str] = Field(default_factory=list)

    def reject(self, check: str, reason: str) -> None:
        self.status = "rejected"
        self.rejected_by = check
        self.reason = reason

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class Document(BaseModel):
    doc_id: str = Field(description="sha256 of the text: stable across reruns")
    source: str
    title: str
    text: str


class MinedDocument(Outcome):
    """One corpus document after mining. Scores (what was measured) and the decision (``status``,
    ``rejected_by``, ``reason``, ``decided_by``) are separate fields; every document gets a reason."""

    doc_id: str
    source: str = Field(description="Where it was read: file path or URL, with #L<line> / #R<row> for JSONL/parquet")
    title: str
    chars: int = 0
    heuristic_score: float | None = Field(None, description="Share of API cue groups present (0-1)")
    embedding_score: float | None = Field(None, description="Cosine similarity to API-description prototypes")
    relevance_score: float | None = Field(None, description="Combined first-pass score compared to the threshold")
    decided_by: str | None = Field(None, description="Versioned check that made the keep/drop decision")
    domain: str | None = None
    subdomains: list[str] = Field(default_factory=list)
    functionalities: list[str] = Field(default_factory=list)
    reused_from: str | None = Field(None, description="Run id whose mining result was reused (incremental refresh)")


class CorpusBatch(BaseModel):
    """What the corpus reader yields: readable documents, and rows/files it could not read, already
    rejected (``corpus_*_v1`` checks) with the file, row and reason in ``source`` / ``reason``."""

    documents: list[Document] = Field(default_factory=list)
    rejected: list[MinedDocument] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.documents) + len(self.rejected)


class TreeNode(BaseModel):
    node_id: str
    parent_id: str | None
    name: str
    level: int = Field(description="0 for a domain, 1 for its sub-domains ..., leaves are functionalities")
    is_functionality: bool
    doc_ids: list[str]
    aliases: list[str] = Field(default_factory=list, description="Other names merged into this node")


class MCPProvenance(BaseModel):
    """Where an API imported from an MCP server came from (``APISpec.mcp``), and what the server says of it."""

    server_name: str
    server_version: str | None = None
    protocol_version: str | None = None
    transport: Literal["stdio", "streamable_http", "file"]
    command: list[str] | None = Field(None, description="The stdio server's command line")
    url: str | None = Field(None, description="The streamable-HTTP server's URL")
    source_file: str | None = Field(None, description="The saved tools/list file it was read from")
    tool_name: str = Field(description="The tool's name on the server (tools/call uses it)")
    title: str | None = None
    annotations: dict[str, bool] = Field(
        default_factory=dict, description="readOnlyHint, destructiveHint, idempotentHint, openWorldHint as given")
    result_schema: Literal["declared", "inferred", "unknown"] = Field(
        "unknown", description="declared: the tool's outputSchema; inferred: from executed calls; unknown: neither")

    @property
    def read_only(self) -> bool:
        return self.annotations.get("readOnlyHint") is True

    @property
    def destructive(self) -> bool:
        """MCP's defaults: a tool that is not read-only is destructive unless it says it is not."""
        return not self.read_only and self.annotations.get("destructiveHint", True) is not False


class APISpec(Outcome):
    # extra fields are kept, not dropped: ``mcp`` (an MCPProvenance as a dict) on tools imported from an MCP server,
    # ``imported_from: "openapi"`` on OpenAPI operations. No declared field, so the stage tables (fixed columns) and
    # every synthesised API's rows stay as they were.
    model_config = ConfigDict(extra="allow")

    api_id: str
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema (type object) of the arguments")
    result_schema: dict[str, Any] = Field(description="JSON Schema of what the API returns")
    domain: str
    node_ids: list[str] = Field(description="Context-tree nodes the API was grown from")
    operators: list[str] = Field(description="Evolution operators applied")
    example_api_id: str | None = None

    def mcp_provenance(self) -> MCPProvenance | None:
        """The MCP server this API was imported from, if it was."""
        raw = (self.model_extra or {}).get("mcp")
        if isinstance(raw, MCPProvenance):
            return raw
        return MCPProvenance.model_validate(raw) if isinstance(raw, dict) else None

    def tool_source(self) -> Literal["mcp", "openapi", "imported", "synthesised"]:
        """Where the API came from: an MCP server, an OpenAPI document, another import (function lists), or
        synthesis from documents."""
        extra = self.model_extra or {}
        if "mcp" in extra:
            return "mcp"
        if extra.get("imported_from") == "openapi":
            return "openapi"
        return "imported" if "imported" in self.operators else "synthesised"

    def tool_definition(self) -> dict[str, Any]:
        """The tool as an OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]


class Turn(BaseModel):
    role: Literal["user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = Field(default=None, description="API name on a tool turn")
    reasoning_content: str | None = Field(
        default=None, description="The reasoning the endpoint returned with an assistant turn (reasoning models)")
    executed: bool = Field(False, description="A tool turn that is the result of really calling the tool (MCP)")
    duration_s: float | None = Field(None, description="How long the executed call took")
    error: str | None = Field(None, description="Why the executed call failed")

    @model_serializer(mode="wrap")
    def _omit_unexecuted(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """A simulated turn is written as before execution existed (no executed/duration_s/error keys)."""
        data: dict[str, Any] = handler(self)
        if not self.executed and self.duration_s is None and self.error is None:
            for key in _EXECUTION_FIELDS:
                data.pop(key, None)
        return data


_EXECUTION_FIELDS = ("executed", "duration_s", "error")


class Dialog(Outcome):
    dialog_id: str
    dialog_type: DialogType
    domain: str
    tools: list[APISpec]
    turns: list[Turn] = Field(default_factory=list)
    segments: list[SegmentType] = Field(
        default_factory=list, description="The dialog types chained in it, in order (one for a one-part dialog)"
    )
    apis_used: list[str] = Field(default_factory=list)
    complexity_loss: float | None = Field(None, description="Target model loss of the final version")
    losses: list[float | None] = Field(default_factory=list, description="Loss of each self-guidance round")
    guidance_rounds: int = Field(0, description="Rewrites made by self-guidance")
    guidance: dict[str, Any] | None = Field(None, description="Bounds, per-round loss, verdict and change")
    decision_samples: int = Field(1, description="Samples of each tool-call decision that had to agree")


class StageStats(BaseModel):
    """What one stage did: counts, time and LLM traffic. Written to the manifest."""

    items_in: int = 0
    accepted: int = 0
    rejected: int = 0
    reused: int = Field(0, description="Items whose result was reused from an earlier run (mining ledger)")
    wall_time_s: float = 0.0
    llm_requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hits: int = 0
    retries: int = 0
    hedges: int = Field(0, description="Hedged second requests sent for requests past their deadline")
    llm_latency_s: float = Field(0.0, description="Summed seconds waiting on LLM answers (overlapping)")
    rejected_by: dict[str, int] = Field(default_factory=dict)

    def add(self, other: StageStats) -> StageStats:
        merged = self.model_copy(deep=True)
        for field in ("items_in", "accepted", "rejected", "reused", "llm_requests", "tokens_in", "tokens_out",
                      "cache_hits", "retries", "hedges"):
            setattr(merged, field, getattr(self, field) + getattr(other, field))
        merged.wall_time_s = round(self.wall_time_s + other.wall_time_s, 3)
        merged.llm_latency_s = round(self.llm_latency_s + other.llm_latency_s, 3)
        for check, count in other.rejected_by.items():
            merged.rejected_by[check] = merged.rejected_by.get(check, 0) + count
        return merged

    def count(self, outcomes: list[Outcome]) -> None:
        self.items_in += len(outcomes)
        for item in outcomes:
            if item.accepted:
                self.accepted += 1
            else:
                self.rejected += 1
                key = item.rejected_by or "unknown"
                self.rejected_by[key] = self.rejected_by.get(key, 0) + 1
