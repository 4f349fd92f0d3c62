"""Real chat templates of the model families people fine-tune, and the check that published rows render
through them the way a trainer renders them.

The templates are llama.cpp's copies of the models' own templates (``models/templates/*.jinja`` of its source
tree), taken from the llama-cpp-python sdist that ``make setup`` builds the embedded model's bindings from:
``make setup`` extracts them into ``<venv>/share/toolace/chat_templates``; with a plain ``pip install``,
``toolace fetch-models --only templates`` (:func:`fetch_chat_templates`) puts them in
``~/.cache/toolace/chat_templates``. They are found in this order: the ``chat_templates_dir`` config field,
the ``TOOLACE_CHAT_TEMPLATES`` environment variable, ``<sys.prefix>/share/toolace/chat_templates``, then
``~/.cache/toolace/chat_templates``. None is in this repository.

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

import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from toolace.errors import UserError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the Makefile's LLAMA_CPP_VERSION: one sdist gives the bindings and templates
TEMPLATES_ENV = "TOOLACE_CHAT_TEMPLATES"
SDIST_TEMPLATES = "vendor/llama.cpp/models/templates/"
SETUP_HINT = "run `make setup`, or `toolace fetch-models --only templates` after a pip install"
CHECK_NAME = "chat_template_v1"

Shape = Callable[[list[dict[str, Any]]], bool]


def _several_calls_in_one_message(messages: list[dict[str, Any]]) -> bool:
    return any(len(m.get("tool_calls") or []) > 1 for m in messages)


PARALLEL_CALLS = "several tool calls in one assistant message (the template raises 'only supports single tool-calls')"


@dataclass(frozen=True)
class Family:
    """A model family's chat template: its file in llama.cpp's ``models/templates`` and its special tokens.
    ``unsupported`` lists the shapes it cannot take at all, each with the reason reported in the card."""

    name: str
    file: str
    bos_token: str = ""
    eos_token: str = ""
    unsupported: tuple[tuple[str, Shape], ...] = ()


_LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
          "unsupported": ((PARALLEL_CALLS, _several_calls_in_one_message),)}
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja", eos_token="<|im_end|>"),
    Family("qwen3", "Qwen-Qwen3-0.6B.jinja", eos_token="<|im_end|>"),
    Family("qwen3.5", "Qwen3.5-4B.jinja", eos_token="<|im_end|>"),
    Family("llama3.1", "meta-llama-Llama-3.1-8B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("llama3.2", "meta-llama-Llama-3.2-3B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("llama3.3", "meta-llama-Llama-3.3-70B-Instruct.jinja", **_LLAMA),  # type: ignore[arg-type]
    Family("hermes3", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", bos_token="<|begin_of_text|>",
           eos_token="<|im_end|>"),
    Family("mistral-nemo", "mistralai-Mistral-Nemo-Instruct-2407.jinja", bos_token="<s>", eos_token="</s>"),
    Family("mistral-small3", "Mistral-Small-3.2-24B-Instruct-2506.jinja", bos_token="<s>", eos_token="</s>"),
    Family("gemma4", "google-gemma-4-31B-it.jinja", bos_token="<bos>", eos_token="<eos>"),
    Family("deepseek-v3", "deepseek-ai-DeepSeek-V3.1.jinja", bos_token="<｜begin▁of▁sentence｜>",
           eos_token="<｜end▁of▁sentence｜>"),
    Family("granite4", "ibm-granite-granite-4.0.jinja", eos_token="<|end_of_text|>"),
)}
DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


class TemplatesMissingError(UserError):
    """The chat templates folder is missing (or lacks a family's file): one line naming the setup step."""


class TargetTemplateError(UserError):
    """The target model's chat template cannot render tools, and the user chose that model."""


# ------------------------------------------------------------------------------------------- finding them


def default_fetch_dir() -> Path:
    """Where :func:`fetch_chat_templates` puts the templates by default (``toolace fetch-models``)."""
    return Path.home() / ".cache" / "toolace" / "chat_templates"


def venv_dir() -> Path:
    """Where ``make setup`` puts them: inside the virtual environment."""
    return Path(sys.prefix) / "share" / "toolace" / "chat_templates"


def candidate_dirs(configured: str | None = None) -> list[Path]:
    """The folders looked in, in order (see the module docstring)."""
    found = [Path(p).expanduser() for p in (configured, os.environ.get(TEMPLATES_ENV)) if p]
    return found + [venv_dir(), default_fetch_dir()]


def find_templates_dir(configured: str | None = None) -> Path | None:
    """The first candidate folder that holds ``*.jinja`` files (a configured folder is the only one looked in
    when it is set); None when there is none."""
    dirs = [Path(configured).expanduser()] if configured else candidate_dirs()
    for folder in dirs:
        if folder.is_dir() and any(folder.glob("*.jinja")):
            return folder
    return None


def templates_dir(configured: str | None = None, families: Sequence[str] = ()) -> Path:
    """:func:`find_templates_dir`, or :class:`TemplatesMissingError` (one line naming the setup step) when
    there is none or it lacks one of ``families``' files."""
    folder = find_templates_dir(configured)
    if folder is None:
        looked = ", ".join(str(p) for p in ([Path(configured)] if configured else candidate_dirs()))
        raise TemplatesMissingError(f"no chat templates found (looked in {looked}): {SETUP_HINT}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise TemplatesMissingError(f"unknown chat-template families {', '.join(unknown)}: choose from "
                                    f"{', '.join(FAMILIES)}")
    missing = [f"{f} ({FAMILIES[f].file})" for f in families if not (folder / FAMILIES[f].file).is_file()]
    if missing:
        raise TemplatesMissingError(f"chat templates folder {folder} lacks {', '.join(missing)}: {SETUP_HINT}")
    return folder


# -------------------------------------------------------------------------------------------- getting them


def extract_chat_templates(sdist: str | Path, dest: str | Path) -> Path:
    """Copy the ``*.jinja`` files of a llama-cpp-python sdist's ``vendor/llama.cpp/models/templates`` into
    ``dest`` (flat; only regular files, by their base name). Returns ``dest``."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(sdist, "r:*") as archive:
        for member in archive:
            name = member.name
            if not (member.isfile() and SDIST_TEMPLATES in name and name.endswith(".jinja")):
                continue
            base = Path(name).name
            if not re.fullmatch(r"[\w.+-]+\.jinja", base):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            (target / base).write_bytes(handle.read())
            count += 1
    if count == 0:
        raise UserError(f"{sdist} holds no {SDIST_TEMPLATES}*.jinja: is it a llama-cpp-python sdist?")
    (target / "SOURCE").write_text(f"{Path(sdist).name}: {SDIST_TEMPLATES} ({count} templates)\n")
    return target


PIP_TIMEOUT_S = 1800.0  # the sdist download (and pip's metadata build) ends by then, or the fetch fails


def fetch_chat_templates(dest: str | Path | None = None, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Download the llama-cpp-python sdist with pip (into a temporary folder) and extract its chat templates
    into ``dest`` (default :func:`default_fetch_dir`). Returns the folder."""
    target = Path(dest) if dest is not None else default_fetch_dir()
    with tempfile.TemporaryDirectory(prefix="toolace-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "-d", tmp, f"llama-cpp-python=={version}"]
        try:
            done = subprocess.run(command, check=False, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(command[1:])}` did not finish in {PIP_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            raise UserError(f"`{' '.join(command[1:])}` failed (see pip's output above)")
        sdists = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise UserError(f"pip downloaded no llama-cpp-python {version} sdist into {tmp}")
        return extract_chat_templates(sdists[0], target)


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


# ----------------------------------------------------------------------------------- the target model's one


def target_template(target: str) -> ChatTemplate | None:
    """The ``--target-model``'s chat template: a GGUF's ``tokenizer.chat_template`` metadata, else its
    tokenizer's ``chat_template`` (local folder or Hugging Face id). None when it has none. Raises the
    target model's one-line errors (a missing file, a tokenizer that cannot be loaded)."""
    from tasks.complexity import TargetModelError, resolve_target, short_cause

    source, gguf_file = resolve_target(target)
    if gguf_file:
        return _gguf_template(target, Path(source) / gguf_file)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - one line naming the model
        raise TargetModelError(f"target model {target}: its tokenizer cannot be loaded: {short_cause(exc)}") from exc
    text = getattr(tokenizer, "chat_template", None)
    if isinstance(text, dict):
        text = text.get("tool_use") or text.get("default")
    if not text:
        return None
    return ChatTemplate(f"target {target}", text, getattr(tokenizer, "bos_token", None) or "",
                        getattr(tokenizer, "eos_token", None) or "")


def _gguf_template(target: str, path: Path) -> ChatTemplate | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        found = reader.get_field(key)
        return found.contents() if found is not None else None

    text = value("tokenizer.chat_template")
    if not text:
        return None
    tokens = value("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = value(key)
        return str(tokens[index]) if isinstance(index, int) and 0 <= index < len(tokens) else ""

    return ChatTemplate(f"target {target}", str(text), token("tokenizer.ggml.bos_token_id"),
                        token("tokenizer.ggml.eos_token_id"))


# ------------------------------------------------------------------------------------------------ the gate


class FamilyReport(BaseModel):
    """What one template made of the checked rows."""

    template: str = Field(description="Template file, or the target model")
    rendered: int = 0
    failed: int = 0
    unsupported: dict[str, int] = Field(default_factory=dict, description="Rows not rendered: reason -> count")
    errors: list[dict[str, str]] = Field(default_factory=list, description="Failing rows (at most 20): id, error")


class TemplateReport(BaseModel):
    """The chat-template check of a published dataset: per family, and the target model's template."""

    rows_checked: int = 0
    rows_published: int = 0
    templates_dir: str | None = None
    families: dict[str, FamilyReport] = Field(default_factory=dict)
    target_model: str | None = None
    target_note: str | None = Field(None, description="Why the target model's template was not checked")

    @property
    def failed_rows(self) -> int:
        return sum(f.failed for f in self.families.values())


@dataclass
class TemplateGate:
    """What the gate renders the published rows through: the ``families`` (from ``templates_dir``), the
    target model's template, and how many rows (``rows``: a seeded sample of the published rows)."""

    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    rows: int = 200
    templates_dir: str | None = None
    target_model: str | None = None
    target_explicit: bool = False
    seed: int = 0
    _loaded: tuple[list[ChatTemplate], str | None, Path | None] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Any) -> TemplateGate:
        """The gate of a run's settings. The target model counts as chosen by the user when it is not the
        default (SmolLM2, whose template renders no tools: it is skipped with a note in the card)."""
        from toolace.config import DEFAULT_TARGET_MODEL

        return cls(families=list(config.template_families), rows=config.template_check_rows,
                   templates_dir=config.chat_templates_dir, target_model=config.target_model,
                   target_explicit=config.target_model not in (None, DEFAULT_TARGET_MODEL), seed=config.seed)

    @property
    def active(self) -> bool:
        return self.rows > 0 and bool(self.families or self.target_model)

    def templates(self) -> tuple[list[ChatTemplate], str | None, Path | None]:
        """The templates to render through, the note on a skipped target template, and the folder (loaded
        once). Raises :class:`TemplatesMissingError` or :class:`TargetTemplateError` (one line each): a run
        calls it before any work, so a missing folder or an unusable target template stops it at once."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def preflight(self) -> None:
        """:meth:`templates` before any work: the folder, the families' files and the target model's template.
        A target model that cannot be found or loaded at all is left to the stage that loads it (the
        complexity loss, whose error names it), so only a template problem stops the run here."""
        from tasks.complexity import TargetModelError

        try:
            self.templates()
        except TargetModelError:
            self._loaded = None

    def _load(self) -> tuple[list[ChatTemplate], str | None, Path | None]:
        folder = templates_dir(self.templates_dir, self.families) if self.families else None
        loaded = [load_family(name, folder) for name in self.families] if folder is not None else []
        note = None
        if self.target_model:
            template = target_template(self.target_model)
            problem = "it has no chat template" if template is None else can_render_tools(template)
            if problem is None and template is not None:
                loaded.append(template)
            elif self.target_explicit:
                raise TargetTemplateError(
                    f"target model {self.target_model}: {problem}, so the published tool calls cannot be checked "
                    "in the format it is trained on: pick a target model whose chat template renders tools "
                    "(e.g. a Qwen2.5/Qwen3 or Llama 3.1 instruct model), or --target-model none")
            else:
                note = f"the default target model {self.target_model} is not checked: {problem}"
        return loaded, note, folder

    def check(self, rows: Sequence[tuple[int, dict[str, Any]]], published: int) -> tuple[TemplateReport,
                                                                                      dict[int, list[str]]]:
        """Render ``rows`` (``(record index, shard row)``) through every template. Returns the report and the
        problems of each failing row by record index (``"<family>: <error>"``)."""
        templates, note, folder = self.templates()
        report = TemplateReport(rows_checked=len(rows), rows_published=published,
                                templates_dir=str(folder) if folder else None,
                                target_model=self.target_model, target_note=note)
        problems: dict[int, list[str]] = {}
        for template in templates:
            family = FAMILIES.get(template.name)
            entry = report.families.setdefault(template.name, FamilyReport(
                template=family.file if family else template.name))
            for index, row in rows:
                messages, tools = row["messages"], row["tools"]
                reason = unsupported_reason(template, messages)
                if reason is not None:
                    entry.unsupported[reason] = entry.unsupported.get(reason, 0) + 1
                    continue
                problem = render_problem(template, messages, tools)
                if problem is None:
                    entry.rendered += 1
                    continue
                entry.failed += 1
                problems.setdefault(index, []).append(f"{template.name}: {problem}")
                if len(entry.errors) < 20:
                    entry.errors.append({"id": str(row.get("id")), "error": problem})
        return report, problems


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tasks.chat_templates extract SDIST DEST`` (``make setup``) or ``fetch [DEST]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "extract":
        print(f"chat templates: {extract_chat_templates(args[1], args[2])}")
        return 0
    if args and args[0] == "fetch" and len(args) <= 2:
        print(f"chat templates: {fetch_chat_templates(args[1] if len(args) == 2 else None)}")
        return 0
    print("usage: python -m tasks.chat_templates extract SDIST DEST | fetch [DEST]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

