"""Scoring a model on BFCL's single-turn categories in prompt mode, with our own checker.

Prompts are built as BFCL builds them for a prompting model (``bfcl_eval`` 2026.3.23, default system prompt
format ``ret_fmt=python&tool_call_tag=False&func_doc_fmt=json&prompt_fmt=plaintext&style=classic``): each
function's description gets BFCL's Python hint, the function list goes into the system prompt as indented
JSON, and the system prompt is put first (or in front of the item's own system message, with a blank line
between). The model answers with a Python-style call list; :func:`tasks.evaluation.bfcl_checker.judge_answer` decodes
(with :mod:`ast`, never ``eval``) and checks it as BFCL's eval runner does.

Answers come from a local model (``transformers``, greedy, see :class:`LocalModelAnswers`) or from an
OpenAI-compatible endpoint through the one :class:`~toolace.llm.gateway.LLMGateway` (temperature 0).

The multi-turn categories (``multi_turn_*``) are loaded and run by the same :func:`load_items` and
:func:`evaluate`, which hand them to :mod:`tasks.evaluation.bfcl_multi_turn` (executed against BFCL's classes in a
sandbox; in both modes). The prompt text and the shared shapes live in :mod:`tasks.evaluation.bfcl_prompting`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.evaluation.bfcl_checker import Verdict, jsonable, judge_answer
from tasks.evaluation.bfcl_data import (
    MULTI_TURN_CATEGORIES,
    BfclItem,
    MultiTurnEntry,
    check_any_categories,
    load_category,
    load_multi_turn_category,
)
from tasks.evaluation.bfcl_prompting import (  # noqa: F401 (re-exported: bfcl_eval.X is the public name)
    MULTITURN_BEHAVIOR,
    OUTPUT_FORMAT,
    PERSONA,
    PYTHON_HINT,
    TASK,
    TOOL_CALL_FORMAT,
    Answer,
    AnswerSource,
    CategoryScore,
    prompt_functions,
    prompted_first_turn,
    system_prompt,
)
from tasks.evaluation.call_list_prefix import CallListPrefixRule
from tasks.formats.type_dialects import to_bfcl_dialect
from toolace.errors import EndpointError, UserError

if TYPE_CHECKING:
    from toolace.llm.gateway import StopRule

EVAL_STAGE = "bfcl_eval"


async def chat_all(settings: Any,
                   requests: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]],
                   stop: StopRule | None = None) -> list[Any]:
    """Every request (messages, tools or None) answered by the endpoint through one gateway, concurrently within
    its limits; an endpoint that cannot answer is one :class:`EndpointError`, not a wrong answer per item. Two
    refusals are that item's failure, their place holding the exception (:func:`failed_answer` makes it the
    failed answer): a request longer than the model's context
    (:class:`~toolace.llm.gateway.ContextLengthExceeded`), and a chat the chat template refuses
    (:class:`~toolace.llm.gateway.ChatTemplateRefused`) when it holds the model's own calls (Llama 3.x's
    templates refuse several calls in one message: the model made a history its template cannot write, BFCL's
    inference error). A template that refuses a chat holding no calls, one the evaluation wrote, refuses every
    item: one :class:`EndpointError`.
    ``stop``: each answer streamed and closed once the rule says it is settled (see ``LLMGateway.chat``)."""
    from toolace.llm.gateway import ChatTemplateRefused, ContextLengthExceeded, LLMCallFailed, LLMGateway

    gateway = LLMGateway(settings)
    try:
        results = await asyncio.gather(*(gateway.chat(messages, stage=EVAL_STAGE, tools=tools, stop=stop)
                                         for messages, tools in requests), return_exceptions=True)
    finally:
        await gateway.aclose()
    for (messages, _), result in zip(requests, results, strict=True):
        if isinstance(result, EndpointError):
            raise result
        if isinstance(result, ContextLengthExceeded):
            continue
        if isinstance(result, ChatTemplateRefused):
            if holds_model_calls(messages):
                continue
            raise EndpointError(f"the chat template of the endpoint {settings.base_url} refused a chat the "
                                f"evaluation wrote (no call of the model's in it), so it would refuse every item: "
                                f"{result}")
        if isinstance(result, LLMCallFailed):
            raise EndpointError(f"the endpoint {settings.base_url} failed to answer: {result}")
        if isinstance(result, BaseException):
            raise result
    return list(results)


def holds_model_calls(messages: list[dict[str, Any]]) -> bool:
    """Whether a chat's history holds calls of the model's (an assistant message with ``tool_calls``)."""
    return any(m.get("role") == "assistant" and m.get("tool_calls") for m in messages)


def failed_answer(result: Any) -> Answer | None:
    """The failed answer of a request :func:`chat_all` kept as its item's failure (over the model's context, or
    refused by the chat template), else None."""
    from toolace.llm.gateway import ChatTemplateRefused, ContextLengthExceeded

    if isinstance(result, ContextLengthExceeded):
        return Answer(None, f"context_length: {result}")
    if isinstance(result, ChatTemplateRefused):
        return Answer(None, f"chat_template: {result}")
    return None


def stop_note(stop: StopRule | None, reason: str | None) -> str | None:
    """What an answer cut short by ``stop`` records (:attr:`Answer.stopped`): the rule's name and its reason."""
    return f"{stop.name}: {reason}" if stop is not None and reason else None


def build_messages(item: BfclItem) -> list[dict[str, str]]:
    """The chat sent to the model for one item: BFCL's system prompt, then the item's first turn."""
    return prompted_first_turn(item.question, item.functions)


# -------------------------------------------------------------------------------------------- answer sources


class LocalModelAnswers:
    """Greedy answers of a local model (``smollm2``, a Hugging Face folder or id) through ``transformers``,
    reusing the complexity stage's loader and batched generation."""

    def __init__(self, target: str, max_new_tokens: int = 512, batch_size: int = 8, device: str | None = None,
                 scorer: Any = None, on_batch: Callable[[], None] | None = None) -> None:
        """``scorer``: a :class:`tasks.dialogs.complexity.LossScorer` already loaded for ``target`` (the complexity
        stage's), so the model is not loaded twice. ``on_batch``: called after each generation batch."""
        from tasks.dialogs.complexity import LossScorer, resolve_target

        if scorer is None:
            resolve_target(target, "model")  # a missing folder or file fails here, before torch is imported
            scorer = LossScorer(target, device=device)
        self.scorer = scorer
        self.target = target
        self.description = f"local model {target} ({self.scorer.device})"
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.chunk_size = batch_size * 4
        self.on_batch = on_batch

    def _prompt_tokens(self, chat: list[dict[str, str]]) -> int:
        from tasks.dialogs.complexity import TargetModelError

        tokenizer = self.scorer.tokenizer
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception as exc:
            raise TargetModelError(f"model {self.target}: its chat template refused a BFCL chat "
                                   f"({type(exc).__name__}: {str(exc)[:200]})") from exc
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer(self, chats: list[list[dict[str, str]]]) -> list[Answer]:
        return self.answer_until(chats, None)

    def answer_until(self, chats: list[list[dict[str, str]]], stop: StopRule | None) -> list[Answer]:
        """The answers, each ended as soon as ``stop`` says its verdict is settled (see ``EndpointAnswers``)."""
        answers = [Answer(None)] * len(chats)
        limit = self.scorer.max_length
        fits: list[int] = []
        for i, chat in enumerate(chats):
            tokens = self._prompt_tokens(chat)
            if limit is not None and tokens + self.max_new_tokens > limit:
                answers[i] = Answer(None, f"context_length: prompt of {tokens} tokens + {self.max_new_tokens} new "
                                    f"ones is over the model's context of {limit}")
            else:
                fits.append(i)
        texts = self.scorer.generate_until([chats[i] for i in fits], stop, max_new_tokens=self.max_new_tokens,
                                           batch_size=self.batch_size, on_batch=self.on_batch) if fits else []
        for i, (text, reason) in zip(fits, texts, strict=True):
            answers[i] = Answer(text, stopped=stop_note(stop, reason))
        return answers


class EndpointAnswers:
    """Answers of a model at an OpenAI-compatible endpoint, through the LLM gateway, at temperature 0. The
    endpoint is checked first (unreachable, or not serving the model: a one-line error naming the URL)."""

    conversations: int | None = None  # multi-turn conversations held at once (None: chunk_size)

    def __init__(self, base_url: str, model: str | None, max_tokens: int = 512, concurrency: int = 8,
                 max_retries: int = 2, timeout_s: float = 120.0, hedge: bool = True) -> None:
        """``hedge=False`` for a local server: a hedged second request would only add to its queue."""
        from toolace.llm.endpoint import check_endpoint
        from toolace.llm.gateway import GatewaySettings

        endpoint = check_endpoint(base_url, model)
        self.settings = GatewaySettings(base_url=endpoint.base_url, model=endpoint.model, concurrency=concurrency,
                                        max_retries=max_retries, timeout_s=timeout_s, temperature=0.0,
                                        max_tokens=max_tokens, hedge=hedge)
        self.description = f"{endpoint.model} at {endpoint.base_url}"
        self.chunk_size = concurrency * 4

    def answer(self, chats: list[list[dict[str, str]]]) -> list[Answer]:
        return self.answer_until(chats, None)

    def answer_until(self, chats: list[list[dict[str, str]]], stop: StopRule | None) -> list[Answer]:
        """The answers, each streamed and closed as soon as ``stop`` says its verdict is settled (its
        :attr:`Answer.stopped` then names the rule and the reason)."""
        return asyncio.run(self._answer_all(chats, stop))

    async def _answer_all(self, chats: list[list[dict[str, str]]], stop: StopRule | None) -> list[Answer]:
        results = await chat_all(self.settings, [(chat, None) for chat in chats], stop)
        return [failed_answer(result) or Answer(result.content or "", stopped=stop_note(stop, result.stopped))
                for result in results]


# ------------------------------------------------------------------------------------------------- scoring


@dataclass
class ItemResult:
    item: BfclItem
    answer: Answer
    verdict: Verdict

    def row(self, model: str) -> dict[str, Any]:
        return {"id": self.item.id, "category": self.item.category, "model": model, "answer": self.answer.text,
                "answer_error": self.answer.error, "answer_stopped": self.answer.stopped, "valid": self.verdict.valid,
                "error_type": self.verdict.error_type, "errors": jsonable(self.verdict.errors),
                "decoded": jsonable(self.verdict.decoded)}


def score_item(item: BfclItem, answer: Answer) -> ItemResult:
    """One item's verdict; an item without an answer (its prompt did not fit, ...) is wrong."""
    if answer.text is None:
        reason = answer.error or "no answer"
        verdict = Verdict(False, "generation_error:" + reason.split(":", 1)[0], [reason], None)
    else:
        verdict = judge_answer(item.kind, item.functions, answer.text, item.possible_answer)
    return ItemResult(item, answer, verdict)


def overall(scores: list[CategoryScore]) -> CategoryScore:
    """All items of all categories together (micro average)."""
    return CategoryScore("overall", sum(s.items for s in scores), sum(s.correct for s in scores),
                         tuple(o for s in scores for o in s.outcomes))


Progress = Callable[[str, int, int], None]


def load_items(categories: list[str], limit: int | None = None) -> dict[str, list[Any]]:
    """Every category's items (first ``limit`` of each), read before any model is loaded: :class:`BfclItem`
    for the single-turn categories, :class:`MultiTurnEntry` for the multi-turn ones."""
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    return {category: load_multi_turn_category(category, limit) if category in MULTI_TURN_CATEGORIES
            else load_category(category, limit) for category in check_any_categories(categories)}


def evaluate(items: dict[str, list[BfclItem]], source: AnswerSource, output: str | None = None,
             progress: Progress | None = None, mode: str | None = None,
             early_stop: bool = True) -> list[CategoryScore]:
    """Ask ``source`` every item, judge each answer, write one JSONL row per item to ``output`` (a path or
    fsspec URL) as it goes, and return the accuracy per category. ``mode``: ``prompt``, or ``fc`` for BFCL's
    function-calling mode, whose answer sources (:mod:`tasks.evaluation.bfcl_fc`) say ``mode = "fc"`` and
    build the requests (``answer_items``) and judge the answers (``score``) themselves; None: the source's own
    ``mode``, else prompt.

    ``early_stop`` (single-turn prompt mode, a source with ``answer_until``): each answer is streamed and stopped as
    soon as no continuation of it could decode as a call list (:mod:`tasks.evaluation.call_list_prefix`), which
    leaves every verdict as it would be and saves decoding the rest of a prose answer. The multi-turn categories
    always get whole answers (each goes back into the conversation); there ``early_stop`` (either mode) checks each
    turn as it ends and asks an entry no more turns once one fails, which leaves every verdict as it would be
    (``settle``, see :func:`tasks.evaluation.bfcl_multi_turn.run_entries`)."""
    import fsspec

    mode = mode or getattr(source, "mode", "prompt")
    if mode == "fc":
        ask = getattr(source, "answer_items", None)
        judge = getattr(source, "score", None)
        single_turn = any(c not in MULTI_TURN_CATEGORIES for c in items)
        if getattr(source, "mode", "prompt") != "fc" or getattr(source, "answer_fc", None) is None or (
                single_turn and (ask is None or judge is None)):
            raise UserError(f"{source.description} cannot answer in BFCL's function-calling mode")
    elif mode == "prompt":
        stop = CallListPrefixRule() if early_stop else None
        answer_until = getattr(source, "answer_until", None) if stop is not None else None

        def ask(chunk: list[BfclItem]) -> list[Answer]:
            chats = [build_messages(item) for item in chunk]
            return answer_until(chats, stop) if answer_until is not None else source.answer(chats)

        judge = score_item
    else:
        raise UserError(f"unknown BFCL mode {mode!r}: choose prompt or fc")

    handle = None
    if output:
        try:
            handle = fsspec.open(output, "w", encoding="utf-8").open()
        except OSError as exc:
            raise UserError(f"cannot write --output {output}: {exc}") from exc
    scores: list[CategoryScore] = []
    try:
        for category, category_items in items.items():
            if category in MULTI_TURN_CATEGORIES:  # executed turn by turn against BFCL's classes
                scores.append(_evaluate_multi_turn(category, category_items, source, handle, progress, mode,
                                                   early_stop))
                continue
            correct, outcomes = 0, []
            if progress:
                progress(category, 0, len(category_items))
            step = max(1, source.chunk_size)
            for start in range(0, len(category_items), step):
                chunk = category_items[start: start + step]
                answers = ask(chunk)
                for item, answer in zip(chunk, answers, strict=True):
                    result = judge(item, answer)
                    correct += result.verdict.valid
                    outcomes.append(bool(result.verdict.valid))
                    if handle is not None:
                        handle.write(json.dumps(result.row(source.description), ensure_ascii=False) + "\n")
                if handle is not None:
                    handle.flush()
                if progress:
                    progress(category, start + len(chunk), len(category_items))
            scores.append(CategoryScore(category, len(category_items), correct, tuple(outcomes)))
    finally:
        if handle is not None:
            handle.close()
    return scores


def _evaluate_multi_turn(category: str, entries: list[MultiTurnEntry], source: AnswerSource, handle: Any,
                        progress: Progress | None, mode: str, settle: bool) -> CategoryScore:
    from tasks.evaluation.bfcl_multi_turn import evaluate_category

    def write_row(row: dict[str, Any]) -> None:
        if handle is not None:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            handle.flush()

    return evaluate_category(category, entries, source, write_row, progress, mode=mode, settle=settle)


# ------------------------------------------------------------------------------------ our dialogs as items

# Our APIs' parameters in BFCL's type names: the one writer is tasks.formats.type_dialects.to_bfcl_dialect.
bfcl_parameters = to_bfcl_dialect


def item_from_dialog(dialog: Any) -> BfclItem | None:
    """The first request of one of our dialogs as a BFCL item (what self-guidance's probes ask the target
    model): the turns before the first assistant turn with calls, our tools in BFCL's dialect, and that
    turn's calls as the only acceptable answer. Scored as ``parallel_multiple`` (order-free) when it makes
    several calls, else ``multiple`` (the right function among those offered) or ``simple_python``. None when
    the dialog makes no call."""
    index = next((i for i, t in enumerate(dialog.turns) if t.role == "assistant" and t.tool_calls), None)
    if index is None:
        return None
    question = [{"role": t.role, "content": t.content or ""} for t in dialog.turns[:index]
                if t.role in ("user", "assistant") and not t.tool_calls]
    calls = dialog.turns[index].tool_calls
    functions = [{"name": t.name, "description": t.description, "parameters": bfcl_parameters(t.parameters)}
                 for t in dialog.tools]
    category = "parallel_multiple" if len(calls) > 1 else "multiple" if len(functions) > 1 else "simple_python"
    return BfclItem(id=str(dialog.dialog_id), category=category, question=[question], functions=functions,
                    possible_answer=[{c.name: {k: [v] for k, v in c.arguments.items()}} for c in calls])
