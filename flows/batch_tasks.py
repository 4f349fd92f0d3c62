"""The thin Prefect layer over the stage functions: retries, result persistence and caching per batch.

Each task builds its gateway from :class:`GatewaySettings` (no secret inside: the key comes from the
environment), runs one batch with it, and returns the batch's records and LLM counts. A task's cache
key is its inputs and source, so a rerun with the same ``--run-id`` skips the batches already done.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from schemas.records import APISpec, Dialog, Document, MinedDocument, StageStats, TreeNode
from tasks.apis import synthesis as api_synthesis
from tasks.context_tree import building as context_tree
from tasks.corpus import mining
from tasks.dialogs import generation as dialog_generation
from tasks.dialogs.complexity import LossScorer
from tasks.embedding.text_embedding import shared_embedder
from tasks.environments import agentic_dialogs
from tasks.environments.agentic_guidance import GuidedBlueprint
from tasks.environments.blueprints import STAGE as AGENTIC_STAGE
from tasks.evaluation import bfcl_eval
from tasks.mcp.execution import ExecutionPolicy, MCPToolExecutor
from tasks.verification import dialogs as dialog_verification
from tasks.verification import model_judges
from tasks.verification import rules as verification
from toolace.dask_progress import worker_relay
from toolace.errors import UserError
from toolace.llm.gateway import GatewaySettings, LLMGateway
from toolace.llm.rate_limit import REQUEST_PRIORITY
from toolace.llm.shared_loop import CURRENT_LLM, LlmRuntime
from toolace.stall_watchdog import CURRENT_WATCHDOG, StallWatchdog

T = TypeVar("T")
PROBE_MAX_TOKENS = 128  # a probe's right answer is one short call list
GRACE_S = 5.0  # a batch's wait on the flow's watchdog fires this much after the flow's own wait would


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed batch, unless what failed it is for the user to fix (an endpoint that refuses a request
    parameter, a model file that is missing): every retry would fail the same way, after a delay."""
    return not isinstance(getattr(state, "data", None), UserError)


# The endpoint URL (a random port for the embedded model) is not part of the cache key; the run scope
# (run id + model name) is, so a rerun of the same run reuses finished batches and nothing else does.
# Results are persisted (resume, caching) but not also kept in memory: Prefect's result store otherwise holds
# the last 1,000 task results, which made the flow's memory grow with every batch of dialogs.
BATCH_TASK: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": _retry_unless_user_error,
                              "persist_result": True, "cache_result_in_memory": False,
                              "cache_policy": (INPUTS - "settings") + TASK_SOURCE}


def _run_with_gateway(settings: GatewaySettings, stage: str, work: Callable[[LLMGateway], Awaitable[list[T]]],
                      priority: int = 0, batch: str = "?") -> tuple[list[T], StageStats]:
    """``work`` with a fresh gateway, on the run's LLM event loop with the run's endpoint limits (this thread waits
    for it): the flow's :class:`~toolace.llm.shared_loop.LlmRuntime` when the task runs in the flow's process (it
    comes with the context), else one of the batch's own (a Dask worker). Its requests wait for a slot with
    ``priority`` (lower first) unless a request's own task sets another.

    The wait is watched (:class:`~toolace.stall_watchdog.StallWatchdog`): the flow's own watchdog when the task
    runs in the flow's process (it comes with the context), else one of the batch's own with the run's
    ``stall_timeout_s`` (a Dask worker). ``batch`` names the batch in a stall's message."""
    flows_own = CURRENT_WATCHDOG.get()
    # on a Dask worker the batch's own watchdog also relays each answer to the flow's (a Dask event)
    watchdog = flows_own or StallWatchdog(settings.stall_timeout_s, relay=worker_relay())

    runtime = CURRENT_LLM.get()
    own = runtime is None
    runtime = runtime or LlmRuntime()

    async def main() -> tuple[list[T], StageStats]:
        REQUEST_PRIORITY.set(priority)
        gateway = LLMGateway(settings, watchdog=watchdog, limits=runtime.limits, tls=runtime.tls)
        try:
            records = await work(gateway)
        finally:
            await gateway.aclose()
        llm = gateway.stats.get(stage)
        stats = StageStats()
        if llm:
            stats.llm_requests, stats.cache_hits, stats.retries = llm.requests, llm.cache_hits, llm.retries
            stats.tokens_in, stats.tokens_out = llm.tokens_in, llm.tokens_out
            stats.llm_latency_s = round(llm.latency_s, 3)
            stats.hedges = llm.hedges
        return records, stats

    # the flow's wait on this task names the batch as the flow numbers it: this one fires only if that one cannot
    try:
        return runtime.loop.run(main(), watchdog, stage, batch, grace_s=GRACE_S if flows_own is not None else 0.0)
    finally:
        if own:
            runtime.loop.close()


def _first(indexes: Sequence[int]) -> str:
    """A batch named by its items' first plan index, as the flow numbers plans."""
    return f"from item {min(indexes)}" if indexes else "(empty)"


@task(name="mine-documents", **BATCH_TASK)
def mine_batch(run_scope: str, docs: list[Document], settings: GatewaySettings, threshold: float,
               max_chars: int, embedding_model: str | None = None,
               embed_every: bool = False) -> tuple[list[MinedDocument], StageStats]:
    def embed(texts: Sequence[str]) -> np.ndarray:  # the model loads on first use, while the LLM already works
        return shared_embedder(embedding_model).embed(texts)

    return _run_with_gateway(settings, mining.STAGE,
                             lambda gw: mining.mine_documents(docs, gw, threshold, max_chars, embed, embed_every),
                             batch=f"of {len(docs)} documents from {docs[0].source if docs else '(none)'}")


def _progress_reporter() -> Callable[[], None]:
    """What a CPU task calls when a step is done, so the run's stall watchdog never takes a long but moving CPU
    stage for a stalled one: the flow's watchdog in the flow's process, a relay to it on a Dask worker.

    Asking for it is the task's first report: the task is running and what it loads first (the embedder, the target
    model) is in, so the time its batch spent queued for the runner, in Prefect's orchestration or loading is not
    counted against its first step. Ask for it once that is done."""
    watchdog = CURRENT_WATCHDOG.get()
    report: Callable[[], None]
    if watchdog is not None:
        report = watchdog.progress
    else:
        relay = worker_relay()
        report = relay if relay is not None else _nothing
    report()
    return report


def _nothing() -> None:
    return None


@task(name="build-context-tree", persist_result=True, cache_policy=INPUTS + TASK_SOURCE)
def build_tree(run_scope: str, mined: list[MinedDocument], embedding_model: str | None = None,
               category_threshold: float = 0.75, leaf_threshold: float = 0.85) -> list[TreeNode]:
    embed = shared_embedder(embedding_model).embed
    progressed = _progress_reporter()

    def embed_with_progress(texts: Sequence[str]) -> np.ndarray:
        vectors = embed(texts)
        progressed()
        return vectors

    return context_tree.build_tree(mined, embed_with_progress, category_threshold, leaf_threshold)


@task(name="synthesize-apis", **BATCH_TASK)
def synthesize_batch(run_scope: str, plans: list[api_synthesis.APIPlan], settings: GatewaySettings,
                     examples: list[APISpec | None]) -> tuple[list[APISpec], StageStats]:
    return _run_with_gateway(settings, api_synthesis.STAGE,
                             lambda gw: api_synthesis.synthesize_apis(plans, gw, examples),
                             batch=_first([p.index for p in plans]))


@task(name="generate-dialogs", **BATCH_TASK)
def generate_dialog_batch(run_scope: str, plans: list[dialog_generation.DialogPlan], apis: list[APISpec],
                          settings: GatewaySettings, seed: int, decision_samples: int = 1,
                          execution: ExecutionPolicy | None = None) -> tuple[list[Dialog], StageStats]:
    """``execution``: calls of imported MCP tools are made for real under this policy (None: all simulated)."""
    executor = MCPToolExecutor(execution) if execution is not None else None
    return _run_with_gateway(settings, dialog_generation.STAGE,
                             lambda gw: dialog_generation.generate_dialogs(plans, apis, gw, seed, decision_samples,
                                                                           executor),
                             batch=_first([p.index for p in plans]))


@functools.lru_cache(maxsize=2)
def _scorer(target: str) -> LossScorer:
    """One model per worker process, reused by every batch."""
    return LossScorer(target)


@task(name="complexity-loss", retries=1, persist_result=True, cache_result_in_memory=False,
      cache_policy=INPUTS + TASK_SOURCE)
def complexity_batch(run_scope: str, dialogs: list[Dialog], target_model: str) -> list[Dialog]:
    """The target model's loss of each generated dialog; a dialog longer than the model's context is
    rejected with that reason (never truncated)."""
    scored = [d.model_copy(deep=True) for d in dialogs]
    ready = [d for d in scored if d.accepted]
    scores = _scorer(target_model).score_detailed(ready, on_batch=_progress_reporter())
    for dialog, result in zip(ready, scores, strict=True):
        dialog.complexity_loss = result.loss
        if result.rejected_by:
            dialog.reject(result.rejected_by, result.reason or "no loss")
    return scored


@task(name="probe-target-model", persist_result=True, cache_policy=INPUTS + TASK_SOURCE)
def probe_batch(run_scope: str, dialogs: list[Dialog], target_model: str) -> list[dict[str, Any]]:
    """Calibration probes, scored as ``toolace eval`` scores BFCL items: each probe's first request becomes a
    BFCL item (:func:`tasks.evaluation.bfcl_eval.item_from_dialog`), the target model answers it in BFCL's prompt mode,
    and the BFCL checker judges the answer (decoded with ``ast``, never evaluated)."""
    items = [(d, item) for d in dialogs if (item := bfcl_eval.item_from_dialog(d)) is not None]
    source = bfcl_eval.LocalModelAnswers(target_model, max_new_tokens=PROBE_MAX_TOKENS,
                                         scorer=_scorer(target_model), on_batch=_progress_reporter()) if items else None
    answers = source.answer([bfcl_eval.build_messages(item) for _, item in items]) if source else []
    rows: list[dict[str, Any]] = []
    for (dialog, item), answer in zip(items, answers, strict=True):
        result = bfcl_eval.score_item(item, answer)
        rows.append({"dialog_id": dialog.dialog_id, "loss": dialog.complexity_loss, "answer": answer.text,
                     "correct": result.verdict.valid, "error_type": result.verdict.error_type,
                     "category": item.category})
    return rows


@task(name="agentic-dialogs", **BATCH_TASK)
def agentic_dialog_batch(run_scope: str, apis: list[APISpec], nodes: list[TreeNode], settings: GatewaySettings,
                         agentic: agentic_dialogs.AgenticSettings, guided: list[GuidedBlueprint] | None = None,
                         environments: list[Any] | None = None) -> tuple[agentic_dialogs.AgenticBatch, StageStats]:
    """``agentic_multi_turn`` dialogs (:mod:`tasks.environments.agentic_dialogs`): environments proposed per API
    family, blueprints executed, trajectories executed in the sandbox; every dialog (accepted or rejected with its
    check), the counts of the run report and the accepted environments.

    ``guided``: a round of loss steering instead (:func:`~tasks.environments.agentic_dialogs.make_guided_dialogs`):
    one replacement blueprint per request, for its environment among ``environments``, with the request's guidance;
    the requests (round, guidance, the task replaced) are part of the cache key, ``apis`` and ``nodes`` unused."""
    async def work(gateway: LLMGateway) -> agentic_dialogs.AgenticBatch:
        if guided:
            made, outcomes = await agentic_dialogs.make_guided_dialogs(guided, environments or [], gateway, agentic)
            return agentic_dialogs.AgenticBatch.of(made, outcomes)
        return agentic_dialogs.AgenticBatch.of(await agentic_dialogs.make_agentic_dialogs(apis, nodes, gateway,
                                                                                           agentic))

    name = f"of {len(guided)} guided agentic dialogs (round {guided[0].round})" if guided else \
        f"of {agentic.dialogs} agentic dialogs"
    return _run_with_gateway(settings, AGENTIC_STAGE, work, batch=name)  # type: ignore[arg-type, return-value]


@task(name="verify-dialogs", **BATCH_TASK)
def verify_batch(run_scope: str, dialogs: list[Dialog], settings: GatewaySettings, max_assistant_chars: int,
                 model_checks: bool = True, judge_votes: int = 1,
                 priority: int = 0) -> tuple[tuple[list[Dialog], list[dict[str, Any]]], StageStats]:
    """Rule layer, then (``model_checks``) the LLM judges on the dialogs the rules passed. ``priority``: the
    batch's first plan index, so its judges go before the dialogs of later batches that generate meanwhile."""
    limits = verification.RuleLimits(max_assistant_chars=max_assistant_chars)

    async def work(gateway: LLMGateway) -> tuple[list[Dialog], list[dict[str, Any]]]:
        return await dialog_verification.verify_dialogs(dialogs, gateway if model_checks else None, limits,
                                                        judge_votes)

    return _run_with_gateway(settings, model_judges.STAGE, work, priority,  # type: ignore[arg-type, return-value]
                             batch=f"from item {priority}")
