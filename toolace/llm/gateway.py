"""The LLM gateway: every LLM call of every stage goes through :class:`LLMGateway`.

It owns an async ``openai`` client against any OpenAI-compatible endpoint and adds what a data run
needs: a cap on requests in flight, optional requests/tokens-per-minute limits, bounded retries with
exponential backoff and jitter (honouring ``Retry-After``), structured answers validated against the
pydantic model that generated the ``response_format`` (with one repair attempt), an on-disk response
cache keyed by the full request, and per-stage counts of requests, tokens, latency and cache hits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import jsonschema
import openai
import orjson
from openai._base_client import make_request_options
from pydantic import BaseModel, ValidationError

from toolace.errors import EndpointError
from toolace.llm.rate_limit import shared_limits
from toolace.llm.response_cache import ResponseCache, request_key
from toolace.llm.response_format import json_schema_response_format, response_format_for

T = TypeVar("T")
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


@dataclass
class LLMStats:
    requests: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    failures: int = 0
    latency_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


class LLMCallFailed(Exception):
    """A request that failed for good (retries spent or refused): the item it served is rejected."""

    check = LLM_REQUEST_CHECK


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

    @property
    def raw_text(self) -> str:
        """The answer as the model wrote it, for keeping beside a rejected item."""
        if self.tool_calls:
            return json.dumps([{"name": c.name, "arguments": c.arguments_text} for c in self.tool_calls])
        return self.content or ""


@dataclass
class Structured(Generic[T]):
    """A validated structured answer, or the reason there is none; raw outputs are always kept."""

    value: T | None
    raw_outputs: list[str] = field(default_factory=list)
    error: str | None = None
    check: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


def _retry_after(exc: openai.APIStatusError) -> float | None:
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


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
    ``SchemaError`` (exceptions are not cached)."""
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _short(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LLMGateway:
    def __init__(
        self,
        settings: GatewaySettings,
        client: openai.AsyncOpenAI | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=0,  # retries are ours: bounded, with jitter, counted per stage
            timeout=settings.timeout_s,
            # the SDK's aiohttp transport (``openai[aiohttp]``): about half the client CPU of its default
            # transport per request at 64 in flight (docs/benchmarks.md), which is what bounds a run here
            http_client=openai.DefaultAioHttpClient(timeout=settings.timeout_s),
        )
        self.cache = cache or (ResponseCache(settings.cache_dir) if settings.cache_dir else None)
        self.stats: dict[str, LLMStats] = {}
        # shared with the other gateways of this process (batch tasks in flight at the same time)
        self._slots, self._limiter = shared_limits(settings.base_url, settings.model, settings.concurrency,
                                                   settings.requests_per_minute, settings.tokens_per_minute)

    def _stage(self, stage: str) -> LLMStats:
        return self.stats.setdefault(stage, LLMStats())

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2**attempt)
        return delay * random.uniform(0.5, 1.5)

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
    ) -> ChatResult:
        """One chat completion. ``sample`` distinguishes deliberate repeats of the same request."""
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.settings.max_tokens,
            "seed": sample,
        }
        if response_format is not None:
            body["response_format"] = response_format
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        stats = self._stage(stage)
        key = request_key(body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            stats.cache_hits += 1
            return self._result(hit, cached=True)
        raw = await self._send(body, stats)
        if self.cache is not None:
            self.cache.put(key, raw)
        return self._result(raw, cached=False)

    async def _send(self, body: dict[str, Any], stats: LLMStats) -> dict[str, Any]:
        estimate = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + body["max_tokens"]
        last_error: Exception | None = None
        # serialised once (orjson), not by the SDK on every attempt; key order kept (schemas' property order
        # can steer constrained decoding)
        content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=str)
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                stats.retries += 1
            delay: float | None = None
            try:
                await self._limiter.acquire(estimate)
                async with self._slots:
                    started = time.perf_counter()
                    stats.requests += 1
                    # the parsed JSON as it came (``cast_to=object``): no SDK model is built and dumped again
                    raw = await self.client.post("/chat/completions", content=content, cast_to=object,
                                                 options=_CHAT_OPTIONS)
                    stats.latency_s += time.perf_counter() - started
                check_completion_shape(raw)
                usage = raw.get("usage") or {}
                stats.tokens_in += int(usage.get("prompt_tokens") or 0)
                stats.tokens_out += int(usage.get("completion_tokens") or 0)
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
            except openai.RateLimitError as exc:
                last_error = exc
                delay = _retry_after(exc)
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code != 408:
                    stats.failures += 1
                    raise LLMCallFailed(f"request refused with HTTP {exc.status_code}: {_short(exc)}") from exc
                last_error = exc
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                    json.JSONDecodeError, ValueError) as exc:
                last_error = exc
            if attempt < self.settings.max_retries:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        stats.failures += 1
        raise LLMCallFailed(
            f"no answer after {self.settings.max_retries + 1} attempts: {type(last_error).__name__}: "
            f"{_short(last_error) if last_error else ''}"
        )

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
        """An answer that validates against ``output``; the schema sent is generated from it."""
        return await self._structured(
            response_format_for(output), output.model_validate_json, messages,
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
        """An answer valid against a JSON Schema that is data (e.g. an API's result schema)."""

        validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))

        def validate(text: str) -> Any:
            value = json.loads(text)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                raise error
            return value

        return await self._structured(
            json_schema_response_format(name, schema), validate, messages,
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
        for repair in (False, True):
            try:
                result = await self.chat(
                    conversation, stage=stage, response_format=response_format,
                    temperature=temperature, max_tokens=max_tokens, sample=sample,
                )
            except LLMCallFailed as exc:
                return Structured(None, raws, str(exc), LLM_REQUEST_CHECK)
            text = result.content or ""
            raws.append(text)
            try:
                return Structured(validate(text), raws)
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
        return Structured(None, raws, f"invalid after one repair: {error}", STRUCTURED_OUTPUT_CHECK)


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
    )
