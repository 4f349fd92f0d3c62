"""The chat-template gate: a seeded sample of the published rows rendered through real model families' templates
and the target model's own, at publish (``gx_chat_templates_v1``), and checked before any work that the
templates are there and that a chosen target model's template renders tools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.dialogs.complexity import TargetModelError, resolve_target, short_cause
from tasks.formats.chat_templates import ChatTemplate, can_render_tools, load_family, render_problem, unsupported_reason
from tasks.formats.gguf_metadata import GGUFMetadataError, read_metadata
from toolace.chat_template_files import DEFAULT_FAMILIES, FAMILIES, templates_dir
from toolace.errors import UserError


class TargetTemplateError(UserError):
    """The target model's chat template cannot render tools, and the user chose that model."""


# ----------------------------------------------------------------------------------- the target model's one


def target_template(target: str) -> ChatTemplate | None:
    """The ``--target-model``'s chat template: a GGUF's ``tokenizer.chat_template`` metadata, else its
    tokenizer's ``chat_template`` (local folder or Hugging Face id). None when it has none. Raises the
    target model's one-line errors (a missing file, a tokenizer that cannot be loaded)."""
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


GGUF_KEYS = ("tokenizer.chat_template", "tokenizer.ggml.tokens", "tokenizer.ggml.bos_token_id",
             "tokenizer.ggml.eos_token_id")


def _gguf_template(target: str, path: Path) -> ChatTemplate | None:
    try:
        found = read_metadata(path, GGUF_KEYS)
    except GGUFMetadataError as exc:
        named = "" if Path(target).expanduser() == path else f" ({path})"
        raise TargetModelError(f"target model {target}{named}: not a readable GGUF: {exc.problem}") from exc
    text = found.get("tokenizer.chat_template")
    if not text:
        return None
    tokens = found.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = found.get(key)
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
