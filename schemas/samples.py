"""One function-calling sample in a format-neutral form, and the verdict the verifier gives it.

Every dataset format we read (ToolACE, OpenAI chat, ShareGPT, xLAM, BFCL) becomes a :class:`Sample`;
every format we write is made from one. The rule and model layers check Samples, so our own dialogs
(:class:`schemas.records.Dialog`) are turned into Samples too before they are verified.

A sample keeps what was wrong with it while it was read (``problems``: truncated JSON, a tool list that is
not JSON, a call that does not parse ...). Reading never raises for one bad sample: the problem becomes a
failure in that sample's verdict and the other samples are read on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.records import Turn

FormatName = Literal["toolace", "openai", "sharegpt", "xlam", "bfcl"]
FORMATS: tuple[FormatName, ...] = ("toolace", "openai", "sharegpt", "xlam", "bfcl")


class Problem(BaseModel):
    """A failed check: its versioned name and a human-readable reason."""

    check: str
    reason: str


class ToolSpec(BaseModel):
    """A tool as offered to the model. ``parameters`` is kept as given (JSON Schema or the BFCL/ToolACE
    dialect with ``dict``/``float``/``int``...); checks read it through :mod:`tasks.formats.type_dialects`."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    result_schema: dict[str, Any] | None = Field(None, description="JSON Schema of the result, when known")
    extra: dict[str, Any] = Field(default_factory=dict, description="Other fields of the tool entry, kept")


class SampleTurn(Turn):
    """A turn, plus how its calls were written: ``call_text`` holds an assistant's raw text when the calls
    were parsed out of it (ToolACE/BFCL style); ``call_error`` says why that text did not parse."""

    call_text: str | None = None
    call_error: str | None = None


class Sample(BaseModel):
    index: int = Field(description="Position in the input (0-based), the verdict's order")
    id: str
    format: FormatName | None = Field(None, description="The format it was read in (None: not detected)")
    system: str | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    turns: list[SampleTurn] = Field(default_factory=list)
    dialog_type: str | None = Field(None, description="Known for our own dialogs only")
    segments: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list, description="What was wrong while reading it")
    meta: dict[str, Any] = Field(default_factory=dict, description="Fields we carry but do not check")


class Verdict(BaseModel):
    """One line of ``toolace verify``'s output."""

    index: int
    id: str
    passed: bool
    failures: list[Problem] = Field(default_factory=list)
