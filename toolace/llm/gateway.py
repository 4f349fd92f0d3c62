"""The LLM gateway: every LLM call of every stage goes through :class:`LLMGateway`.

It owns an async ``openai`` client against any OpenAI-compatible endpoint and adds what a data run
needs: a cap on requests in flight, optional requests/tokens-per-minute limits, bounded retries with
exponential backoff and jitter (honouring ``Retry-After``, capped), structured answers validated against the
pydantic model that generated the ``response_format`` (with one repair attempt), an on-disk response
cache keyed by the full request, and per-stage counts of requests, tokens, latency and cache hits.

Requests follow the documented rules of real endpoints: every schema sent with ``strict: true`` meets OpenAI's
strict structured-output rules (:mod:`toolace.llm.response_format`); reasoning models (OpenAI's o-series and
gpt-5 families, by name, or ``reasoning_model`` in the config) get ``max_completion_tokens`` and no
``temperature``. An endpoint that refuses a parameter or a schema as unsupported stops the run at its first
refusal with :class:`RequestRefused`, one line naming the parameter and the config key that fixes it, instead
of one rejected item per request. The reasoning an endpoint returns beside the answer (``reasoning_content``
or ``reasoning``: vLLM, DeepSeek, Qwen3, OpenRouter) is kept (:attr:`ChatResult.reasoning`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import jsonschema
import openai
import orjson
from openai._base_client import make_request_options
from pydantic import BaseModel, ValidationError

from toolace.errors import EndpointError
from toolace.llm.rate_limit import EndpointLimits, retry_after_s
from toolace.llm.response_cache import ResponseCache, request_key
from toolace.llm.response_format import (
    data_response_format,
    model_adds_nulls,
    model_schema,
    response_format_for,
    strip_added_nulls,
)
from toolace.safe_patterns import SafeValidator, schema_hazard
from toolace.stall_watchdog import StallError, StallWatchdog

T = TypeVar("T")
logger = logging.getLogger(__name__)
# The body goes out as JSON bytes the gateway encodes, with the client's bearer auth: ``chat.completions.create``
# would first walk every nested value of it (JSON schemas, tool lists) through the SDK's type-driven transform,
# about 4 ms of CPU a request here, a third of the pipeline's CPU per request. Our bodies are already plain JSON.
_CHAT_OPTIONS = make_request_options(security={"bearer_auth": True})
M = TypeVar("M", bound=BaseModel)

STRUCTURED_OUTPUT_CHECK = "structured_output_v1"
LLM_REQUEST_CHECK = "llm_request_v1"


@dataclass(frozen=True)
class GatewaySettings:
    base_url: str
    model: str
    concurrency: int = 8
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_retries: int = 5
    timeout_s: float = 300.0
    temperature: float = 0.7
    max_tokens: int = 512
    cache_dir: str | None = None
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    reasoning_model: bool | None = None  # None: by the model name (:func:`is_reasoning_model`)
    reasoning_effort: str | None = None  # sent to reasoning models only, when set
    retry_after_cap_s: float = 60.0
    strict_schemas: bool = True  # False: every response format goes with ``strict: false``
    # hedging (:func:`hedge_deadline_s`): a request unanswered past its deadline gets a second one; first wins
    hedge: bool = True
    hedge_floor_s: float = 10.0  # never hedge sooner than this
    hedge_p95_factor: float = 3.0  # the deadline: this times the p95 of recent answer times
    hedge_initial_s: float = 30.0  # the deadline until hedge_min_samples answers were timed
    hedge_min_samples: int = 10
    # the run's stall watchdog fires after this long without progress; every wait for a slot, the rate limit or
    # the first answer has twice this as its own deadline, a backstop (and the deadline where no watchdog is)
    stall_timeout_s: float = 600.0

    @property
    def reasoning(self) -> bool:
        """Whether requests follow the reasoning models' rules (``max_completion_tokens``, no temperature)."""
        return is_reasoning_model(self.model) if self.reasoning_model is None else self.reasoning_model


# OpenAI's reasoning models: o1, o3-mini, o4-mini-2025-04-16 ..., gpt-5, gpt-5-mini, gpt-5.1 ... (and later
# gpt-N), also behind a provider prefix (openai/gpt-5-mini) or as a fine-tune (ft:o4-mini-...:org::id)
_O_SERIES = re.compile(r"o\d+(?:-|$)")
_GPT_N = re.compile(r"gpt-(\d+)(?:[.\-]|$)")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names one of OpenAI's reasoning models, which refuse ``max_tokens`` and any
    temperature but the default. Other reasoning models (DeepSeek-R1, Qwen3 on vLLM) take the usual
    parameters; a deployment whose name says nothing sets ``reasoning_model`` in the config."""
    name = model.rsplit("/", 1)[-1].lower().removeprefix("ft:")
    if _O_SERIES.match(name):
        return True
    found = _GPT_N.match(name)
    return bool(found and int(found.group(1)) >= 5)


@dataclass
class LLMStats:
    requests: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    failures: int = 0
    latency_s: float = 0.0
    hedges: int = 0  # second requests sent because the first passed its deadline
    hedge_wins: int = 0  # of them, answered before the first request

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


class LLMCallFailed(Exception):
    """A request that failed for good (retries spent or refused): the item it served is rejected."""

    check = LLM_REQUEST_CHECK


class ContextLengthExceeded(LLMCallFailed):
    """The endpoint refused a request whose prompt (and answer budget) is longer than the model's context: that
    request's item alone fails (a multi-turn conversation that outgrew the model), never the run."""


class ChatTemplateRefused(LLMCallFailed):
    """The endpoint's chat template refused to render this chat (our embedded server's ``chat_template_refused``
    400: a template's ``raise_exception``, such as Llama 3.x's "only supports single tool-calls at once"). The
    caller decides: a chat of the model's own making (a history holding its calls) fails its item alone; a chat
    the evaluation wrote itself is a configuration error (``tasks.evaluation.bfcl_eval.chat_all``)."""


# the error code our embedded server (toolace.llm.embedded_server) answers a chat its template refuses with
CHAT_TEMPLATE_REFUSED_CODE = "chat_template_refused"


def template_refusal(exc: openai.APIError) -> bool:
    """Whether an error says the chat template refused the chat: a 400, or a streamed answer's error event (the
    SDK raises it as an ``APIError`` whose body is the event's ``error``: a stream begins with HTTP 200 before the
    server knows)."""
    if isinstance(exc, openai.APIStatusError) and exc.status_code != 400:
        return False
    return _error_fields(exc)[2] == CHAT_TEMPLATE_REFUSED_CODE


# vLLM ("maximum context length is"), OpenAI (code context_length_exceeded), llama.cpp's server ("exceeds the
# available context size"), llama-cpp-python ("exceed context window")
_CONTEXT_TEXT = re.compile(r"context[ _](length|window|size)|maximum context|prompt is too long", re.IGNORECASE)


def context_overflow(exc: openai.APIStatusError) -> bool:
    """Whether a 400/413 says the request is longer than the model's context."""
    if exc.status_code not in (400, 413):
        return False
    message, _, code = _error_fields(exc)
    return code == "context_length_exceeded" or bool(_CONTEXT_TEXT.search(message))


class RequestRefused(EndpointError):
    """The endpoint refused a parameter or a schema of the request as unsupported or invalid (HTTP 400/422):
    every request would be refused the same way, so the run stops at once. The message is one line naming the
    parameter and the config key that fixes it."""

    def __init__(self, message: str, param: str | None = None, config_key: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.config_key = config_key

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (Dask workers send it back)
        return (type(self), (str(self), self.param, self.config_key))


# OpenAI's codes for a refused parameter or schema, and the first words of its messages (and of Azure's)
_REFUSAL_CODES = frozenset({"unsupported_parameter", "unsupported_value", "invalid_json_schema",
                            "invalid_function_parameters", "invalid_schema"})
_REFUSAL_TEXT = re.compile(r"\s*(unsupported parameter|unsupported value|invalid schema for|"
                           r"unrecognized request argument|invalid_json_schema)", re.IGNORECASE)
_QUOTED = re.compile(r"'([A-Za-z_][\w.\[\]]*)'")


def _error_fields(exc: openai.APIError) -> tuple[str, str | None, str | None]:
    """``message``, ``param`` and ``code`` of an error body: OpenAI's ``{"error": {...}}`` (the SDK hands
    its inner object) or vLLM's flat ``{"object": "error", "message": ...}``."""
    body = exc.body if isinstance(exc.body, dict) else {}
    if isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message")
    text = message if isinstance(message, str) else str(exc.body or exc.message)
    param, code = body.get("param"), body.get("code")
    return " ".join(text.split()), param if isinstance(param, str) else None, code if isinstance(code, str) else None


def refusal_of(exc: openai.APIStatusError, settings: GatewaySettings) -> RequestRefused | None:
    """The one-line :class:`RequestRefused` for a 400/422 that refuses a parameter or a schema as unsupported
    or invalid; ``None`` for any other client error (a prompt over the context length, a bad item: those
    reject only their item)."""
    if exc.status_code not in (400, 422):
        return None
    message, param, code = _error_fields(exc)
    if code not in _REFUSAL_CODES and not _REFUSAL_TEXT.match(message):
        return None
    if param is None or param.startswith("response_format") or param.startswith("text.format"):
        if re.search(r"invalid schema|json_schema|response_format", message, re.IGNORECASE) or \
                code in ("invalid_json_schema", "invalid_schema"):
            param = "response_format"
        elif param is None and (quoted := _QUOTED.search(message)):
            param = quoted.group(1)
    param = param or "unknown"
    key, fix = _fix_for(param, message, settings)
    shown = message if len(message) <= 240 else message[:237] + "..."
    return RequestRefused(f"the endpoint refused parameter '{param}' ({shown}): {fix}", param, key)


def _fix_for(param: str, message: str, settings: GatewaySettings) -> tuple[str | None, str]:
    """The config key that fixes a refused parameter, and the sentence that says how."""
    if param == "max_tokens":
        return "reasoning_model", ("set `reasoning_model: true` in the config (the model takes "
                                   "max_completion_tokens and only its default temperature)")
    if param == "max_completion_tokens":
        return "reasoning_model", "set `reasoning_model: false` in the config (the endpoint takes max_tokens)"
    if param == "temperature":
        if not settings.reasoning:
            return "reasoning_model", ("set `reasoning_model: true` in the config (the model takes only its "
                                       "default temperature)")
        return "temperature", "set `temperature` in the config to a value the model takes"
    if param == "reasoning_effort":
        return "reasoning_effort", "set `reasoning_effort` in the config to a value the model takes, or remove it"
    if param.startswith("response_format") or param.startswith("text.format"):
        if re.search(r"invalid schema|json_schema", message, re.IGNORECASE) and settings.strict_schemas:
            return "strict_schemas", ("set `strict_schemas: false` in the config (response formats then go "
                                      "without strict: true; answers are still validated)")
        return "llm_model", "choose a model that supports JSON-schema response formats (--llm-model)"
    if param.startswith("tools") or param in ("tool_choice", "parallel_tool_calls"):
        return "llm_model", "choose a model that supports function calling (--llm-model)"
    return None, "no config key changes it: use another model (--llm-model) or endpoint (--llm-base-url)"


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments_text: str


@dataclass
class ChatResult:
    content: str | None
    tool_calls: list[ToolCallOut]
    finish_reason: str | None
    cached: bool
    raw: dict[str, Any]
    reasoning: str | None = None  # the message's ``reasoning_content`` (or ``reasoning``), when the endpoint sends it
    stopped: str | None = None  # why a streamed answer was closed early by its stop rule (see LLMGateway.chat)

    @property
    def raw_text(self) -> str:
        """The answer as the model wrote it, for keeping beside a rejected item: its reasoning first, in
        ``<think>`` tags, when the endpoint sent one."""
        if self.tool_calls:
            text = json.dumps([{"name": c.name, "arguments": c.arguments_text} for c in self.tool_calls])
        else:
            text = self.content or ""
        return with_reasoning(text, self.reasoning)


def with_reasoning(text: str, reasoning: str | None) -> str:
    """A raw output with the reasoning that came with it, as reasoning models write both."""
    return f"<think>{reasoning}</think>{text}" if reasoning else text


def _reasoning_of(message: dict[str, Any]) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


@dataclass
class Structured(Generic[T]):
    """A validated structured answer, or the reason there is none; raw outputs are always kept."""

    value: T | None
    raw_outputs: list[str] = field(default_factory=list)  # each with its reasoning (:func:`with_reasoning`)
    error: str | None = None
    check: str | None = None
    reasoning: str | None = None  # the reasoning behind the answer returned (or the last one tried)

    @property
    def ok(self) -> bool:
        return self.value is not None


def check_completion_shape(raw: Any) -> None:
    """The few fields :meth:`LLMGateway._result` reads: a JSON object whose ``choices`` is a non-empty list of
    objects, each ``message`` (when given) an object. Anything else is a ``ValueError`` (retried)."""
    if not isinstance(raw, dict):
        raise ValueError(f"the endpoint answered a JSON {type(raw).__name__}, not an object")
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("the endpoint answered without choices")
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message") or {}, dict):
            raise ValueError("the endpoint answered a malformed choice")
    if not isinstance(raw.get("usage") or {}, dict):
        raise ValueError("the endpoint answered a malformed usage")


@functools.lru_cache(maxsize=4096)
def _validator(schema_text: bytes) -> Any:
    """What ``jsonschema.validate`` builds per call, built once per schema: checking the schema against its
    meta-schema was most of the cost of validating a small tool answer. A bad schema still raises
    ``SchemaError`` (exceptions are not cached), and so does a hazard (:func:`toolace.safe_patterns.schema_hazard`:
    a pattern with no linear-time matcher, a recursive ``$ref``, too deep). Patterns are matched with RE2, so an
    answer can never make validation backtrack for minutes."""
    schema = json.loads(schema_text)
    hazard = schema_hazard(schema)
    if hazard:
        raise jsonschema.SchemaError(hazard)
    SafeValidator.check_schema(schema)
    return SafeValidator(schema)


def _validate_without_added_nulls(output: type[M], text: str) -> M:
    """``output`` from an answer to its strict schema, without the ``null`` of fields that have a default."""
    return output.model_validate(strip_added_nulls(json.loads(text), model_schema(output)))


def hedge_deadline_s(p95_s: float | None, settings: GatewaySettings) -> float | None:
    """Seconds after which an unanswered request gets a hedged second request: ``hedge_p95_factor`` times the
    p95 of recent answer times (``hedge_initial_s`` while fewer than ``hedge_min_samples`` were timed), never
    under ``hedge_floor_s``. ``None`` (no hedge) when hedging is off or the deadline reaches ``timeout_s``, the
    hard cap of every request."""
    if not settings.hedge:
        return None
    wanted = settings.hedge_initial_s if p95_s is None else settings.hedge_p95_factor * p95_s
    deadline = max(settings.hedge_floor_s, wanted)
    return deadline if deadline < settings.timeout_s else None


class StopRule(Protocol):
    """Says, while an answer streams in, that what it has written so far already settles what it will be used for
    (e.g. :class:`tasks.evaluation.call_list_prefix.CallListPrefixRule`: it can no longer decode as a call list),
    so the rest need not be generated. ``name`` is versioned: it is part of the cache key."""

    name: str

    def __call__(self, text: str) -> str | None: ...


STOP_RULE_KEY = "toolace_stop_rule"  # in a cache key (never sent) and, with the reason, in a shortened answer's raw


MAX_HEDGES = 2  # hedges per attempt: a hedge that stalls too gets one more after its own deadline


@dataclass(eq=False)
class _Leg:
    """One HTTP request of an attempt: the first, or a hedge. ``sent_at`` is set (and ``sent`` fires) once it
    holds its slot."""

    hedge: bool
    task: asyncio.Task[dict[str, Any]] | None = None
    sent_at: float | None = None
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def work(self) -> asyncio.Task[dict[str, Any]]:
        assert self.task is not None
        return self.task


def _short(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LLMGateway:
    def __init__(
        self,
        settings: GatewaySettings,
        client: openai.AsyncOpenAI | None = None,
        cache: ResponseCache | None = None,
        watchdog: StallWatchdog | None = None,
        limits: EndpointLimits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``watchdog``: told of every request waiting, in flight and answered (the run's stall watchdog).
        ``limits``: the in-flight slots, rate budgets, gates and latencies shared with the run's other gateways
        (batch tasks in flight at the same time); without it this gateway has its own. ``tls``: the run's TLS
        context (:func:`toolace.llm.shared_loop.tls_context`); without it the client builds its own."""
        self.settings = settings
        self.watchdog = watchdog
        self.client = client or openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=0,  # retries are ours: bounded, with jitter, counted per stage
            timeout=settings.timeout_s,
            # the SDK's aiohttp transport (``openai[aiohttp]``): about half the client CPU of its default
            # transport per request at 64 in flight (docs/benchmarks.md), which is what bounds a run here
            http_client=openai.DefaultAioHttpClient(timeout=settings.timeout_s,
                                                    **({"verify": tls} if tls is not None else {})),
        )
        self.cache = cache or (ResponseCache(settings.cache_dir) if settings.cache_dir else None)
        self.stats: dict[str, LLMStats] = {}
        self.refused: RequestRefused | None = None  # set at the first refusal: later requests are not sent
        # the retry jitter's own generator: the process-wide ``random`` state is not this library's to move
        self._jitter = random.Random()
        limits = limits or EndpointLimits()
        self._slots, self._limiter = limits.limits(settings.base_url, settings.model, settings.concurrency,
                                                   settings.requests_per_minute, settings.tokens_per_minute)
        # the first request of this shape goes alone: a refused parameter is refused once, not once per slot
        self._gate = limits.gate(settings.base_url, settings.model, settings.reasoning, settings.reasoning_effort,
                                 settings.strict_schemas)
        # the recent answer times the hedging deadline comes from, shared by the run's gateways
        self.latencies = limits.latencies(settings.base_url, settings.model)
        self._url = settings.base_url.rstrip("/") + "/chat/completions"

    def _stage(self, stage: str) -> LLMStats:
        return self.stats.setdefault(stage, LLMStats())

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2**attempt)
        return delay * self._jitter.uniform(0.5, 1.5)

    async def aclose(self) -> None:
        await self.client.close()

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        stage: str,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample: int = 0,
        stop: StopRule | None = None,
    ) -> ChatResult:
        """One chat completion. ``sample`` distinguishes deliberate repeats of the same request. A reasoning
        model gets the limit as ``max_completion_tokens`` and no temperature (it takes only its default).

        ``stop``: the answer is streamed (``stream: true``, OpenAI's server-sent events) and closed as soon as
        ``stop(text so far)`` gives a reason, which closes the connection (vLLM and the embedded server then stop
        generating); the shortened answer's :attr:`ChatResult.stopped` holds the rule's name and reason."""
        if self.refused is not None:
            raise RequestRefused(str(self.refused), self.refused.param, self.refused.config_key)
        limit = max_tokens or self.settings.max_tokens
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if self.settings.reasoning:
            body["max_completion_tokens"] = limit
            if self.settings.reasoning_effort:
                body["reasoning_effort"] = self.settings.reasoning_effort
        else:
            body["temperature"] = self.settings.temperature if temperature is None else temperature
            body["max_tokens"] = limit
        body["seed"] = sample
        if response_format is not None:
            body["response_format"] = response_format
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if stop is not None:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        stats = self._stage(stage)
        key = request_key(body if stop is None else {**body, STOP_RULE_KEY: stop.name})
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            stats.cache_hits += 1
            return self._result(hit, cached=True)
        raw = await self._send(body, stats, stage, stop)
        if self.cache is not None:
            await self._remember(key, raw)
        return self._result(raw, cached=False)

    async def _remember(self, key: str, raw: dict[str, Any]) -> None:
        """Cache an answer from a worker thread: the file's open, write and rename (about 0.35 ms here, 9 s of a
        1,000-dialog run) otherwise held the one loop thread every answer of the run comes through. Bounded by the
        request timeout; the cache is a saving, so a write that fails or is too slow is logged and the answer
        used all the same."""
        assert self.cache is not None
        try:
            await asyncio.wait_for(asyncio.to_thread(self.cache.put, key, raw), self.settings.timeout_s)
        except (OSError, TimeoutError) as exc:
            logger.warning("caching an LLM answer failed (%s): a rerun will ask again", _short(exc))

    def hedge_deadline(self, stage: str) -> float | None:
        """This stage's hedging deadline now (:func:`hedge_deadline_s` of its recent answer times)."""
        return hedge_deadline_s(self.latencies.quantile(stage, 0.95, self.settings.hedge_min_samples),
                                self.settings)

    async def _send(self, body: dict[str, Any], stats: LLMStats, stage: str,
                    stop: StopRule | None = None) -> dict[str, Any]:
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        estimate = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + limit
        last_error: Exception | None = None
        # serialised once (orjson), not by the SDK on every attempt; key order kept (schemas' property order
        # can steer constrained decoding)
        content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=str)
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                stats.retries += 1
            delay: float | None = None
            probe = await self._bounded(self._gate.enter(self._wait_deadline_s), stage,
                                        "the first answer of this endpoint")
            answered = False
            try:
                raw = await self._hedged(content, estimate, stats, stage, stop)
                answered = True
                return raw
            except openai.NotFoundError as exc:
                raise EndpointError(
                    f"the endpoint {self.settings.base_url} does not serve model "
                    f"'{self.settings.model}': {_short(exc)}; fix --llm-model"
                ) from exc
            except openai.AuthenticationError as exc:
                raise EndpointError(
                    f"the endpoint {self.settings.base_url} refused the API key: set OPENAI_API_KEY"
                ) from exc
            except openai.APIStatusError as exc:  # 429, 408 and 5xx are retried, after Retry-After when given
                if exc.status_code < 500 and exc.status_code not in (408, 429):
                    stats.failures += 1
                    refused = refusal_of(exc, self.settings)
                    if refused is not None:
                        self.refused = refused
                        raise refused from exc
                    failed = (ContextLengthExceeded if context_overflow(exc) else
                              ChatTemplateRefused if template_refusal(exc) else LLMCallFailed)
                    raise failed(f"request refused with HTTP {exc.status_code}: {_short(exc)}") from exc
                last_error = exc
                delay = retry_after_s(exc.response.headers, self.settings.retry_after_cap_s, rng=self._jitter) \
                    if exc.response is not None else None
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                    json.JSONDecodeError, ValueError) as exc:
                last_error = exc
            except (openai.APIError, httpx.HTTPError) as exc:  # a streamed answer: an error event, a connection lost
                if isinstance(exc, openai.APIError) and template_refusal(exc):  # the 400's refusal, as an event
                    stats.failures += 1
                    raise ChatTemplateRefused(f"streamed answer refused: {_short(exc)}") from exc
                last_error = exc
            finally:
                if probe:
                    self._gate.leave(answered)
            if attempt < self.settings.max_retries:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        stats.failures += 1
        raise LLMCallFailed(
            f"no answer after {self.settings.max_retries + 1} attempts: {type(last_error).__name__}: "
            f"{_short(last_error) if last_error else ''}"
        )

    @property
    def _wait_deadline_s(self) -> float:
        """The deadline of a wait for a slot, the rate limit or the first answer that does not move: twice the
        run's ``stall_timeout_s``, so the watchdog, which names the batch, speaks first."""
        return 2 * self.settings.stall_timeout_s

    async def _bounded(self, wait: Awaitable[T], stage: str, what: str) -> T:
        """``wait`` (for a slot, the rate limit, the first answer) under its deadline (:attr:`_wait_deadline_s`):
        past that, the run stops with :class:`StallError`, one line saying what it waited for."""
        try:
            return await wait
        except TimeoutError as exc:
            raise StallError(f"stage {stage}: no progress for {self._wait_deadline_s:.0f} s; waiting for "
                             f"{what} ({self._slots.in_use} of {self._slots.size} in-flight slots held, to "
                             f"{self._url})") from exc

    async def _hedged(self, content: bytes, estimate: int, stats: LLMStats, stage: str,
                      stop: StopRule | None = None) -> dict[str, Any]:
        """One attempt: the request, and when it is unanswered past :meth:`hedge_deadline` a hedged second one
        (and a third when the second passes its own deadline too: :data:`MAX_HEDGES`). The first answer wins
        and the others are cancelled, which closes their connections and releases their slots. A request that
        fails while another is still within its deadline leaves the attempt to it; otherwise the failure ends
        the attempt (retried by :meth:`_send`, the overdue requests cancelled).

        Slots: a hedge takes its own in-flight slot, ahead of every waiting request (priority -1: the request it
        doubles is the oldest work of the run), so ``concurrency`` is never exceeded and a hedge never waits
        behind a newer batch. It cannot deadlock: the request it doubles holds a slot that is released when
        either answers, fails or reaches ``timeout_s``, the hard cap of every request."""
        deadline = self.hedge_deadline(stage)
        legs = [self._leg(content, estimate, stats, stage, hedge=False, stop=stop)]
        try:
            while True:
                loop = asyncio.get_running_loop()
                waits: list[asyncio.Future[Any]] = [leg.work for leg in legs if not leg.work.done()]
                timeout: float | None = None
                sending: asyncio.Future[Any] | None = None
                newest = legs[-1]
                if deadline is not None and len(legs) <= MAX_HEDGES and not newest.work.done():
                    if newest.sent_at is None:  # the deadline runs from the moment it holds its slot
                        sending = asyncio.ensure_future(newest.sent.wait())
                        waits.append(sending)
                    else:
                        timeout = max(0.0, newest.sent_at + deadline - loop.time())
                try:
                    if waits:
                        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if sending is not None:
                        sending.cancel()
                for leg in legs:
                    if leg.work.done() and not leg.work.cancelled() and leg.work.exception() is None:
                        if leg.hedge:
                            stats.hedge_wins += 1
                        return leg.work.result()
                failed = [leg for leg in legs if leg.work.done()]
                running = [leg for leg in legs if not leg.work.done()]
                if failed and not any(self._within_deadline(leg, deadline) for leg in running):
                    error = failed[-1].work.exception()
                    assert error is not None
                    raise error
                if deadline is not None and len(legs) <= MAX_HEDGES and not newest.work.done() \
                        and newest.sent_at is not None and not self._within_deadline(newest, deadline):
                    stats.hedges += 1
                    legs.append(self._leg(content, estimate, stats, stage, hedge=True, stop=stop))
        finally:
            losers = [leg.work for leg in legs if not leg.work.done()]
            for task in losers:  # the losers (or every request of a failed attempt): cancelled, slots released
                task.cancel()
            if losers:
                await asyncio.wait(losers)  # their slots are back before this attempt returns
            for leg in legs:
                if not leg.work.cancelled():
                    leg.work.exception()  # retrieved: a loser's error is not logged as never retrieved

    @staticmethod
    def _within_deadline(leg: _Leg, deadline: float | None) -> bool:
        if deadline is None or leg.sent_at is None:
            return True
        return asyncio.get_running_loop().time() < leg.sent_at + deadline

    def _leg(self, content: bytes, estimate: int, stats: LLMStats, stage: str, hedge: bool,
             stop: StopRule | None = None) -> _Leg:
        leg = _Leg(hedge=hedge)
        leg.task = asyncio.ensure_future(self._post(leg, content, estimate, stats, stage, stop))
        return leg

    async def _post(self, leg: _Leg, content: bytes, estimate: int, stats: LLMStats, stage: str,
                    stop: StopRule | None = None) -> dict[str, Any]:
        """One HTTP request: the rate limit, a slot, the POST (``timeout_s`` is its hard cap), the answer's shape.
        The watchdog sees it waiting, in flight and answered."""
        token = self.watchdog.request_queued(stage, self._url) if self.watchdog is not None else None
        answered = False
        try:
            await self._bounded(self._limiter.acquire(estimate, self._wait_deadline_s), stage,
                                "the requests/tokens-per-minute limit")
            await self._bounded(self._slots.acquire(-1 if leg.hedge else None, self._wait_deadline_s),
                                stage, "an in-flight slot")
            try:
                if self.refused is not None:  # refused while this request waited: it would be too
                    raise RequestRefused(str(self.refused), self.refused.param, self.refused.config_key)
                leg.sent_at = asyncio.get_running_loop().time()
                leg.sent.set()
                if token is not None and self.watchdog is not None:
                    self.watchdog.request_sent(token)
                started = time.perf_counter()
                stats.requests += 1
                if stop is not None:  # streamed, under the request's hard cap as a whole
                    raw = await asyncio.wait_for(self._streamed(content, stop), self.settings.timeout_s)
                else:
                    # the parsed JSON as it came (``cast_to=object``): no SDK model is built and dumped again
                    raw = await self.client.post("/chat/completions", content=content, cast_to=object,
                                                 options=_CHAT_OPTIONS)
                elapsed = time.perf_counter() - started
                stats.latency_s += elapsed
            finally:
                self._slots.release()
            check_completion_shape(raw)
            self.latencies.add(stage, elapsed)
            usage = raw.get("usage") or {}
            stats.tokens_in += int(usage.get("prompt_tokens") or 0)
            stats.tokens_out += int(usage.get("completion_tokens") or 0)
            answered = True
            return raw  # type: ignore[no-any-return]
        finally:
            if token is not None and self.watchdog is not None:
                self.watchdog.request_done(token, answered)

    async def _streamed(self, content: bytes, stop: StopRule) -> dict[str, Any]:
        """One streamed chat completion put back together as the JSON a plain request gets (content and tool calls
        from the chunks' deltas, the usage of the last chunk), closed early when ``stop`` gives a reason. ``stop`` is
        asked again each time the text has grown by an eighth, so a long answer costs linear time in it."""
        stream = await self.client.post("/chat/completions", content=content, cast_to=object,
                                        options=_CHAT_OPTIONS, stream=True, stream_cls=openai.AsyncStream[object])
        parts: list[str] = []
        reasoning: dict[str, list[str]] = {}
        length, next_check = 0, 1
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: dict[str, Any] = {}
        chunks = 0
        stopped: str | None = None
        try:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    raise ValueError(f"a streamed chunk is not a JSON object: {str(chunk)[:200]}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        parts.append(str(delta["content"]))
                        length += len(parts[-1])
                        chunks += 1
                    for key in ("reasoning_content", "reasoning"):
                        if isinstance(delta.get(key), str):
                            reasoning.setdefault(key, []).append(delta[key])
                    for call in delta.get("tool_calls") or []:
                        merged = calls.setdefault(int(call.get("index") or 0),
                                                  {"id": None, "type": "function",
                                                   "function": {"name": "", "arguments": ""}})
                        merged["id"] = call.get("id") or merged["id"]
                        function = call.get("function") or {}
                        merged["function"]["name"] += function.get("name") or ""
                        merged["function"]["arguments"] += function.get("arguments") or ""
                    finish = choice.get("finish_reason") or finish
                if length >= next_check:
                    next_check = length + max(1, length // 8)
                    stopped = stop("".join(parts))
                    if stopped is not None:
                        break
        finally:
            await stream.close()  # closes the connection: the server stops generating
        text = "".join(parts)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None,
                                   **{key: "".join(texts) for key, texts in reasoning.items()}}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        raw: dict[str, Any] = {"object": "chat.completion",
                               "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop"}],
                               "usage": usage}
        if stopped is not None:
            raw[STOP_RULE_KEY] = {"name": stop.name, "reason": stopped}
            raw["usage"] = {**usage, "completion_tokens": usage.get("completion_tokens") or chunks}
        return raw

    @staticmethod
    def _result(raw: dict[str, Any], cached: bool) -> ChatResult:
        choice = raw["choices"][0]
        message = choice.get("message") or {}
        calls = [
            ToolCallOut(
                id=str(call.get("id") or f"call_{i}"),
                name=str((call.get("function") or {}).get("name") or ""),
                arguments_text=str((call.get("function") or {}).get("arguments") or "{}"),
            )
            for i, call in enumerate(message.get("tool_calls") or [])
        ]
        return ChatResult(
            content=message.get("content"),
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            cached=cached,
            raw=raw,
            reasoning=_reasoning_of(message),
            stopped=(raw.get(STOP_RULE_KEY) or {}).get("reason"),
        )

    async def structured(
        self,
        output: type[M],
        messages: list[dict[str, Any]],
        *,
        stage: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample: int = 0,
    ) -> Structured[M]:
        """An answer that validates against ``output``; the schema sent is generated from it (its strict form)."""
        validate: Callable[[str], M] = output.model_validate_json
        if model_adds_nulls(output):  # a field with a default: strict mode made it nullable
            validate = functools.partial(_validate_without_added_nulls, output)
        return await self._structured(
            response_format_for(output, self.settings.strict_schemas), validate, messages,
            stage=stage, temperature=temperature, max_tokens=max_tokens, sample=sample,
        )

    async def structured_json(
        self,
        name: str,
        schema: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        stage: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample: int = 0,
    ) -> Structured[Any]:
        """An answer valid against a JSON Schema that is data (e.g. an API's result schema). The schema goes in
        its strict form when it has one, else as it is with ``strict: false``
        (:func:`~toolace.llm.response_format.data_response_format`); the answer is validated against the
        schema as given, once the ``null`` of properties strict mode made nullable is removed."""

        validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        response_format = data_response_format(name, schema, self.settings.strict_schemas)
        converted = response_format["json_schema"]["strict"]

        def validate(text: str) -> Any:
            value = json.loads(text)
            if converted:
                value = strip_added_nulls(value, schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                raise error
            return value

        return await self._structured(
            response_format, validate, messages,
            stage=stage, temperature=temperature, max_tokens=max_tokens, sample=sample,
        )

    async def _structured(
        self,
        response_format: dict[str, Any],
        validate: Callable[[str], T],
        messages: list[dict[str, Any]],
        *,
        stage: str,
        temperature: float | None,
        max_tokens: int | None,
        sample: int,
    ) -> Structured[T]:
        raws: list[str] = []
        conversation = list(messages)
        error = ""
        reasoning: str | None = None
        for repair in (False, True):
            try:
                result = await self.chat(
                    conversation, stage=stage, response_format=response_format,
                    temperature=temperature, max_tokens=max_tokens, sample=sample,
                )
            except LLMCallFailed as exc:
                return Structured(None, raws, str(exc), LLM_REQUEST_CHECK, reasoning)
            text = result.content or ""
            raws.append(with_reasoning(text, result.reasoning))
            reasoning = result.reasoning
            try:
                return Structured(validate(text), raws, reasoning=reasoning)
            except (ValidationError, ValueError, jsonschema.ValidationError) as exc:
                error = _short(exc)
                if result.finish_reason == "length":
                    error = f"answer cut off at max_tokens: {error}"
            if not repair:
                conversation = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That answer is invalid ({error}). Reply again with only "
                     "the corrected JSON object, matching the schema exactly."},
                ]
        return Structured(None, raws, f"invalid after one repair: {error}", STRUCTURED_OUTPUT_CHECK, reasoning)


def gateway_settings_from(config: Any, base_url: str, model: str, cache_dir: str | Path | None) -> GatewaySettings:
    """Build settings from a :class:`toolace.config.RunConfig` and a resolved endpoint."""
    return GatewaySettings(
        base_url=base_url,
        model=model,
        concurrency=config.concurrency,
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute,
        max_retries=config.llm_max_retries,
        timeout_s=config.llm_timeout_s,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        cache_dir=str(cache_dir) if cache_dir else None,
        reasoning_model=config.reasoning_model,
        reasoning_effort=config.reasoning_effort,
        retry_after_cap_s=config.retry_after_cap_s,
        strict_schemas=config.strict_schemas,
        hedge=config.llm_hedge,
        hedge_floor_s=config.llm_hedge_floor_s,
        hedge_p95_factor=config.llm_hedge_p95_factor,
        hedge_initial_s=config.llm_hedge_initial_s,
        stall_timeout_s=config.stall_timeout_s,
    )
