"""BFCL's function-calling (FC) mode: the tools are offered the way a served model is offered them, and its
calls are read in its own family's format (``toolace eval --mode fc``).

**The request** (built in :mod:`tasks.evaluation.bfcl_fc_shapes`, which multi-turn FC shares). As BFCL's FC
handlers build it (``bfcl_eval`` 2026.3.23, ``_compile_tools`` with ``convert_to_tool(functions,
GORILLA_TO_OPENAPI, OPENAI_COMPLETIONS)``): the item's first turn as it is, no system prompt of ours; each
function with BFCL's Python hint on its description, its name with ``.`` replaced by ``_`` (OpenAI-style names),
its parameter types mapped to JSON Schema (``dict`` -> ``object``, ``float`` -> ``number`` with ``format:
float`` and BFCL's note on the description, ``tuple`` -> ``array``, ``any`` -> ``string``, one level into
``items`` and nested ``properties``), as OpenAI ``tools``.

**The answer.** A local model gets the tools through its chat template, with transformers
(:class:`LocalFcAnswers`: ``apply_chat_template(messages, tools=..., add_generation_prompt=True)``) or served by
the embedded llama.cpp server, which renders the same template
(:func:`tasks.evaluation.model_serving.fc_answer_source`); a template that cannot render tools is refused. It
answers greedily; its text (special tokens kept, cut at the end of turn) is read with its family's tool-call
format (:mod:`tasks.formats.tool_call_formats`: detected from the template by rendering a probe call, or
``--tool-format``). An endpoint (:class:`EndpointFcAnswers`) gets OpenAI's ``tools=``; the calls it returns are
read as BFCL's OpenAI handler reads them (``{name: json.loads(arguments)}``); an answer with no structured call
is text, unless a ``--tool-format`` is given, which then reads the text (a server that does not parse calls
itself, as the embedded one serving a model's template).

**The verdict.** The calls become ``{name: arguments}`` (BFCL's ``decode_ast`` for FC models) and go through
our BFCL checker (:func:`tasks.evaluation.bfcl_checker.check_calls`) against the item's functions and answers
under the same ``_`` names (BFCL's ``underscore_to_dot``). A text answer, or an attempted call that does not
parse, is no call: wrong for every category that expects calls (``ast_decoder:decoder_failed``, with the
parser's reason in the verdict's errors, so it is in the answers file), and right for irrelevance (as BFCL
scores a text answer; the reason is kept there too).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from tasks.evaluation.bfcl_checker import Verdict, judge_decoded
from tasks.evaluation.bfcl_data import BfclItem
from tasks.evaluation.bfcl_eval import (
    Answer,
    EndpointAnswers,
    ItemResult,
    LocalModelAnswers,
    chat_all,
    failed_answer,
    holds_model_calls,
    score_item,
)
from tasks.evaluation.bfcl_fc_shapes import (
    TEXT_ANSWER,
    FcAnswer,
    FcRequest,
    decode_fc_answer,
    fc_messages,
    fc_request,
    fc_tools,
    openai_messages,
    openai_name,
)
from tasks.formats.chat_templates import ChatTemplate, can_render_tools, render
from tasks.formats.tool_call_formats import (
    TOOL_FORMATS,
    ToolFormat,
    detect_tool_format,
    probe_tools,
    tokenizer_template,
)
from toolace.errors import UserError

Mode = Literal["prompt", "fc"]
MODES: tuple[Mode, ...] = ("prompt", "fc")

class FcModeError(UserError):
    """``--mode fc`` cannot work with this model or option (its template renders no tools, an unknown format)."""


def check_tool_format(tool_format: str | None) -> ToolFormat | None:
    """The ``--tool-format`` option, checked (None: detect it from the chat template)."""
    if tool_format is None or tool_format in TOOL_FORMATS:
        return tool_format  # type: ignore[return-value]
    raise FcModeError(f"unknown --tool-format {tool_format!r}: choose from {', '.join(TOOL_FORMATS)}")


def renamed_for_fc(item: BfclItem) -> tuple[list[dict[str, Any]], list[dict[str, dict[str, list[Any]]]] | None]:
    """The item's functions and possible answer under the names the model was offered (:func:`openai_name`)."""
    functions = []
    for function in item.functions:
        renamed = dict(function)
        renamed["name"] = openai_name(str(function.get("name", "")))
        functions.append(renamed)
    answers = None
    if item.possible_answer is not None:
        answers = [{openai_name(str(name)): options for name, options in expected.items()}
                   for expected in item.possible_answer]
    return functions, answers


def judge_fc_answer(item: BfclItem, answer: Answer, tool_format: str | None) -> Verdict:
    """One FC answer judged as BFCL's eval runner judges an FC model's (see the module docstring)."""
    decoded, problem = decode_fc_answer(answer, tool_format, fc_tools(item.functions))
    functions, possible_answer = renamed_for_fc(item)
    notes = [problem] if problem and problem != TEXT_ANSWER else []
    return judge_decoded(item.kind, functions, decoded, problem, possible_answer, notes=notes)


def score_fc_item(item: BfclItem, answer: Answer, tool_format: str | None) -> ItemResult:
    """One item's FC verdict; an item without an answer (its prompt did not fit, ...) is wrong."""
    if answer.text is None and not (isinstance(answer, FcAnswer) and answer.calls):
        return score_item(item, answer)
    return ItemResult(item, answer, judge_fc_answer(item, answer, tool_format))


# ------------------------------------------------------------------------------------------ answer sources


def template_tool_format(template: ChatTemplate | None, model: str,
                         tool_format: ToolFormat | None = None) -> ToolFormat:
    """The tool-call format to read ``model``'s answers in: ``tool_format`` when given, else the one its
    template writes. Raises :class:`FcModeError` naming the model when the template cannot render tools or
    writes calls in no format we read."""
    problem = "it has no chat template" if template is None else can_render_tools(template)
    if problem is not None or template is None:
        raise FcModeError(f"model {model}: {problem}: --mode fc offers the tools through the model's chat template, "
                          "so it needs one that renders tools (e.g. a Qwen2.5/Qwen3/Qwen3.5, Hermes, Llama 3.x, "
                          "Mistral, Gemma 4, GLM-4.6 or DeepSeek-V3.1 instruct model); use --mode prompt for this one")
    if tool_format is not None:
        return tool_format
    found, why = detect_tool_format(
        lambda messages, generation: render(template, messages, probe_tools(), generation), template.eos_token)
    if found is None:
        raise FcModeError(f"model {model}: cannot tell the tool-call format of its chat template: {why}; pass "
                          f"--tool-format ({', '.join(TOOL_FORMATS)})")
    return found


class FcSource:
    """What makes an answer source an FC one for :func:`tasks.evaluation.bfcl_eval.evaluate`: it builds each
    item's request (:func:`fc_request`) and judges its answers in its ``tool_format``."""

    mode: Mode = "fc"
    tool_format: ToolFormat | None = None

    def answer_fc(self, requests: list[FcRequest]) -> list[Answer]:
        raise NotImplementedError

    def answer_items(self, items: list[BfclItem]) -> list[Answer]:
        return self.answer_fc([fc_request(item) for item in items])

    def score(self, item: BfclItem, answer: Answer) -> ItemResult:
        return score_fc_item(item, answer, self.tool_format)


def fitted_template(tokenizer: Any, target: str, chat_template: str | None) -> ChatTemplate | None:
    """The template ``target`` is asked through: its tokenizer's own, or the family's real one put on it
    (``--chat-template``, :func:`tasks.formats.chat_templates.fit_family_template`: an :class:`FcModeError`
    when it does not fit)."""
    if chat_template:
        from tasks.formats.chat_templates import TemplateFitError, fit_family_template
        from toolace.chat_template_files import TemplatesMissingError

        try:
            fit_family_template(tokenizer, chat_template, target)
        except (TemplateFitError, TemplatesMissingError) as exc:
            raise FcModeError(f"--chat-template {chat_template}: {exc}") from exc
    return tokenizer_template(tokenizer, target)


def fc_template(target: str, chat_template: str | None = None) -> ChatTemplate | None:
    """The chat template of a local model's tokenizer (a missing folder or file fails here, with its name)."""
    from transformers import AutoTokenizer

    from tasks.dialogs.complexity import TargetModelError, model_source, resolve_target, short_cause

    resolve_target(target, "model")
    source = model_source(target, role="model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise TargetModelError(f"cannot load model {target}: {short_cause(exc)}") from exc
    return fitted_template(tokenizer, target, chat_template)


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


class LocalFcAnswers(FcSource, LocalModelAnswers):
    """A local model's FC answers (see the module docstring): greedy, batched, with the special tokens of the
    answer kept (a Mistral ``[TOOL_CALLS]`` or Llama ``<|python_tag|>`` is one) up to the end of the turn."""

    def __init__(self, target: str, tool_format: ToolFormat | None = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        """The template is checked (and its format detected) from the tokenizer alone, before the weights load.
        ``chat_template``: a family's real template in place of the model's own (``--chat-template``)."""
        if kwargs.get("scorer") is None:
            self.tool_format = template_tool_format(fc_template(target, chat_template), target, tool_format)
        super().__init__(target, **kwargs)
        self.tool_format = template_tool_format(fitted_template(self.scorer.tokenizer, target, chat_template),
                                                target, tool_format)
        self.description = f"{self.description}, {self.tool_format} calls" + (
            f", {chat_template} chat template" if chat_template else "")

    def _prompt_ids(self, request: FcRequest) -> list[int] | Answer:
        """The prompt's token ids; when the template refuses a history holding the model's own calls, that
        item's failed answer (as :func:`tasks.evaluation.bfcl_eval.chat_all` has it for an endpoint); a refused
        chat the evaluation wrote stops the evaluation."""
        from tasks.dialogs.complexity import TargetModelError

        tokenizer = self.scorer.tokenizer
        try:
            text = tokenizer.apply_chat_template(request.messages, tools=request.tools, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            if holds_model_calls(request.messages):
                return Answer(None, f"chat_template: the chat template refused this chat: {reason}")
            raise TargetModelError(f"model {self.target}: its chat template refused a BFCL chat with tools "
                                   f"({reason})") from exc
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer_fc(self, requests: list[FcRequest]) -> list[Answer]:
        answers: list[Answer] = [Answer(None)] * len(requests)
        limit = self.scorer.max_length
        prompts: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            ids = self._prompt_ids(request)
            if isinstance(ids, Answer):
                answers[i] = ids
            elif limit is not None and len(ids) + self.max_new_tokens > limit:
                answers[i] = Answer(None, f"context_length: prompt of {len(ids)} tokens + {self.max_new_tokens} new "
                                    f"ones is over the model's context of {limit}")
            else:
                prompts[i] = ids
        for i, text in self._generate(prompts).items():
            answers[i] = FcAnswer(text)
        return answers

    def _generate(self, prompts: dict[int, list[int]]) -> dict[int, str]:
        """Greedy answers, shortest prompts batched together (left padding), decoded with special tokens up to
        the first end-of-turn token."""
        scorer, tokenizer = self.scorer, self.scorer.tokenizer
        torch = scorer.torch
        stops = _stop_ids(scorer.model, tokenizer)
        pad = tokenizer.pad_token_id
        order = sorted(prompts, key=lambda i: len(prompts[i]))
        out: dict[int, str] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start: start + self.batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=scorer.device)
            attention = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk],
                                     device=scorer.device)
            with torch.inference_mode():
                generated = scorer.model.generate(input_ids=ids, attention_mask=attention,
                                                  max_new_tokens=self.max_new_tokens, do_sample=False,
                                                  pad_token_id=pad)
            for row, i in enumerate(chunk):
                new: list[int] = []
                for token in generated[row, width:].tolist():
                    if token in stops:
                        break
                    new.append(token)
                out[i] = tokenizer.decode(new, skip_special_tokens=False).strip()
            if self.on_batch is not None:
                self.on_batch()
        return out


class EndpointFcAnswers(FcSource, EndpointAnswers):
    """An endpoint's FC answers: OpenAI ``tools=``, its structured calls (see the module docstring)."""

    def __init__(self, base_url: str, model: str | None, tool_format: ToolFormat | None = None,
                 **kwargs: Any) -> None:
        super().__init__(base_url, model, **kwargs)
        self.tool_format = tool_format
        self.description = f"{self.description}, OpenAI tools" + (f", text read as {tool_format}" if tool_format
                                                                   else "")

    def answer_fc(self, requests: list[FcRequest]) -> list[Answer]:
        return asyncio.run(self._answer_fc(requests))

    async def _answer_fc(self, requests: list[FcRequest]) -> list[Answer]:
        answers: list[Answer] = []
        for result in await chat_all(self.settings, [(openai_messages(r.messages), r.tools) for r in requests]):
            if (failed := failed_answer(result)) is not None:
                answers.append(failed)
                continue
            calls = [{c.name: c.arguments_text} for c in result.tool_calls] or None
            answers.append(FcAnswer(result.raw_text, calls=calls))
        return answers


__all__ = ["TEXT_ANSWER", "FcAnswer", "FcRequest", "decode_fc_answer", "fc_messages", "fc_request", "fc_tools",
           "openai_messages", "openai_name"]  # the shapes, re-exported for the mode's users
