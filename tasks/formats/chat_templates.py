"""Real chat templates of the model families people fine-tune, and the check that published rows render
through them the way a trainer renders them.

The templates' files (which families, where they are, how ``make setup`` and ``toolace fetch-models`` get them)
are :mod:`toolace.chat_template_files`; the gate that renders a run's published rows through them is
:mod:`tasks.verification.template_gate`.

Rendering is transformers' own: :func:`render` calls ``transformers.utils.chat_template_utils.
render_jinja_template``, the function ``tokenizer.apply_chat_template`` renders with (sandboxed Jinja,
``trim_blocks``/``lstrip_blocks``, the loopcontrols and ``{% generation %}`` extensions, its ``tojson``,
``raise_exception`` and ``strftime_now``), with the family's ``bos_token``/``eos_token``.

A row passes a family's template when it renders without error, when each call's arguments come out exactly
once and never as an escaped JSON string (checked by rendering the row again with a marker in place of each
call's arguments and name: the argument marker must appear once, unescaped, the name marker at least once —
Gemma 4 names the function again on its result). A shape a
family cannot take at all (Llama 3.x: several calls in one message) is not rendered: the row is counted for
that family with the reason (:data:`FAMILIES`' ``unsupported``), and the dataset card reports the counts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolace.chat_template_files import FAMILIES, Shape, templates_dir

CHECK_NAME = "chat_template_v1"


# ----------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class ChatTemplate:
    """A template's text with the special tokens it is rendered with."""

    name: str
    text: str
    bos_token: str = ""
    eos_token: str = ""
    unsupported: tuple[tuple[str, Shape], ...] = ()


def load_template(family: str, configured: str | None = None) -> str:
    """The text of a family's chat template (e.g. to set a tokenizer's ``chat_template``), from the folder
    :func:`templates_dir` finds."""
    return (templates_dir(configured, [family]) / FAMILIES[family].file).read_text(encoding="utf-8")


def load_family(name: str, folder: Path) -> ChatTemplate:
    family = FAMILIES[name]
    return ChatTemplate(name, (folder / family.file).read_text(encoding="utf-8"), family.bos_token,
                        family.eos_token, family.unsupported)


def render(template: ChatTemplate, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
           add_generation_prompt: bool = False) -> str:
    """The chat as ``tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)`` renders it, with
    transformers' own renderer."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], tools=tools or None, chat_template=template.text,
                                        add_generation_prompt=add_generation_prompt,
                                        bos_token=template.bos_token, eos_token=template.eos_token)
    return rendered[0]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _probed(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The messages with each call's name and arguments replaced by markers; the (name, argument) markers."""
    markers: list[tuple[str, str]] = []
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if not calls:
            out.append(message)
            continue
        new_calls = []
        for call in calls:
            k = len(markers)
            name, value = f"tcname{k:03d}x", f"tcvalue{k:03d}x"
            markers.append((name, value))
            new_calls.append({**call, "function": {**call.get("function", {}), "name": name,
                                                   "arguments": {"tcarg": value}}})
        out.append({**message, "tool_calls": new_calls})
    return out, markers


def unsupported_reason(template: ChatTemplate, messages: list[dict[str, Any]]) -> str | None:
    """The reason a family cannot take this row's shape at all, or None."""
    return next((reason for reason, shape in template.unsupported if shape(messages)), None)


def render_problem(template: ChatTemplate, messages: list[dict[str, Any]],
                   tools: list[dict[str, Any]] | None) -> str | None:
    """Why the row does not render right through the template (see the module docstring), or None."""
    try:
        render(template, messages, tools)
    except Exception as exc:  # noqa: BLE001 - any template error is the row's problem, reported as it is
        return _one_line(exc)
    for message in messages:
        for call in message.get("tool_calls") or []:
            arguments = (call.get("function") or {}).get("arguments")
            if isinstance(arguments, str):
                return f"call {call.get('id')}: arguments are a JSON string, not an object"
    # How the calls are rendered is read from the probe below only: the row's own arguments can also be
    # rendered elsewhere, legitimately (Llama 3.x writes a tool result's text through ``tojson``, so a result
    # that echoes the arguments would look like escaped arguments).
    probe, markers = _probed(messages)
    if not markers:
        return None
    try:
        probe_text = render(template, probe, tools)
    except Exception as exc:  # noqa: BLE001
        return _one_line(exc)
    for k, (name, value) in enumerate(markers):
        if probe_text.count(value) != 1:
            return f"call #{k}: its arguments are rendered {probe_text.count(value)} times, not once"
        if f'\\"{value}' in probe_text or '\\"tcarg\\"' in probe_text:
            return f"call #{k}: its arguments are rendered as an escaped JSON string"
        if name not in probe_text:
            return f"call #{k}: its function name is not rendered"
    return None


def can_render_tools(template: ChatTemplate) -> str | None:
    """None when the template shows the offered tools and renders a call and its result; else why not."""
    tools = [{"type": "function", "function": {"name": "tcprobe_tool", "description": "A probe tool.",
                                               "parameters": {"type": "object", "properties": {
                                                   "tcarg": {"type": "string"}}, "required": ["tcarg"]}}}]
    messages = [{"role": "user", "content": "Call the probe tool."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "tcProbe01", "type": "function",
                     "function": {"name": "tcprobe_tool", "arguments": {"tcarg": "tcvalue000x"}}}]},
                {"role": "tool", "tool_call_id": "tcProbe01", "name": "tcprobe_tool", "content": "done"},
                {"role": "assistant", "content": "Done."}]
    try:
        text = render(template, messages, tools)
    except Exception as exc:  # noqa: BLE001
        return f"rendering a tool call fails: {_one_line(exc)}"
    if "A probe tool." not in text:
        return "its template does not show the offered tools"
    if "tcvalue000x" not in text:
        return "its template does not render assistant tool calls"
    return None


class RowSample:
    """A seeded uniform sample (reservoir) of at most ``size`` rows of a stream, kept with their positions."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seen = size, 0
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self._random = random.Random(f"chat-templates-{seed}")

    def add(self, index: int, row: dict[str, Any]) -> None:
        self.seen += 1
        if self.size <= 0:
            return
        if len(self.rows) < self.size:
            self.rows.append((index, row))
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.rows[slot] = (index, row)

    def sorted(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted(self.rows, key=lambda r: r[0])


# ------------------------------------------------------------------------------ a family's template on a model

_MARKER = r"<\|[^|<>\s]{1,40}\|>"


class TemplateFitError(ValueError):
    """A family's template cannot be put on a tokenizer: its special tokens are not the tokenizer's."""


def fit_family_template(tokenizer: Any, family: str, model: str, configured: str | None = None) -> str:
    """Put a real family's chat template (llama.cpp's copy, :func:`load_template`) on ``tokenizer`` in place of
    its own, the way LLaMA-Factory's ``template:`` picks the format a model is trained and asked in: for a base
    whose own template renders no tools (SmolLM2, a ChatML model, takes Qwen2.5's). Returns the template's text.

    The model must be able to write the template's markers: the family's end of turn must be the tokenizer's
    end-of-sequence token (else generation would not stop where the template ends a turn) and every ``<|...|>``
    marker the template writes must be one token of the vocabulary (a marker split into pieces is text the model
    never learnt as a boundary). Raises :class:`TemplateFitError` naming what does not fit;
    :class:`toolace.chat_template_files.TemplatesMissingError` for an unknown family or missing file."""
    text = load_template(family, configured)
    spec = FAMILIES[family]
    eos = getattr(tokenizer, "eos_token", None) or ""
    if spec.eos_token and spec.eos_token != eos:
        raise TemplateFitError(f"model {model}: the {family} template ends a turn with {spec.eos_token!r}, but the "
                               f"model's end-of-sequence token is {eos!r}: choose a family whose turns end with "
                               f"{eos!r}")
    probe = ChatTemplate(family, text, getattr(tokenizer, "bos_token", None) or "", eos)
    problem = can_render_tools(probe)
    if problem is not None:
        raise TemplateFitError(f"the {family} template: {problem}")
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {}}}}]
    rendered = render(probe, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], tools, True)
    vocabulary = tokenizer.get_vocab()
    split = sorted({m for m in re.findall(_MARKER, rendered) if m not in vocabulary})
    if spec.bos_token and spec.bos_token in rendered and spec.bos_token not in vocabulary:
        split.append(spec.bos_token)
    if split:
        raise TemplateFitError(f"model {model}: the {family} template writes {', '.join(split)}, which "
                               "the model's vocabulary has no token for")
    tokenizer.chat_template = text
    return text
