"""Great Expectations suites on a published dataset, defined in code from the run's settings.

Two frames are validated, each by its own suite (an ExpectationSuite validates one batch):

- ``samples`` (:data:`SAMPLES_SUITE`): one row per published sample, with the columns of
  :data:`SAMPLE_COLUMNS` (derived by :mod:`tasks.verification.expectations`).
- ``summary`` (:data:`SUMMARY_SUITE`): one row for the whole dataset: ``generated``, ``accepted``,
  ``acceptance_rate`` and ``share_<type>`` (the share of the rows of each dialog type, see :func:`share_column`).

Every expectation carries a stable versioned name in ``meta["name"]`` (``gx_unique_ids_v1`` ...); results are
reported under that name. Changing what an expectation checks means a new version of its name.

The dialog-type mix. ``dialog_mix`` holds weights (as :class:`toolace.config.RunConfig` does); they are
normalised into expected shares ``e``, and every type of :data:`schemas.records.DIALOG_TYPES` not in the mix is
expected at 0. A type's observed share passes when it lies in ``[e - mix_tolerance, e + mix_tolerance]`` clipped
to ``[0, 1]``. When the number of rows ``n`` is known (``rows=``, as :mod:`tasks.verification.expectations` passes it)
the bounds are rounded outward to whole dialogs: the count of a type may lie in
``[floor(n * (e - tol)), ceil(n * (e + tol))]``. So a small dataset is never failed by the granularity of one
dialog (with 3 rows and ``e = 0.3, tol = 0.25``, 0 to 2 dialogs of the type pass), while a large one is held to
the plain bounds. With 0 rows the mix says nothing (bounds ``[0, 1]``); ``gx_row_count_v1`` fails such a dataset.
Types are drawn at random by the planner (and a planned type can turn into another one), so the tolerance is
absolute and generous by default.

Great Expectations is imported inside the builders only: ``import great_expectations`` takes ~5 s.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.records import DIALOG_TYPES

if TYPE_CHECKING:
    import great_expectations as gx

    from toolace.config import RunConfig

SAMPLES_SUITE = "toolace_published_samples"
SUMMARY_SUITE = "toolace_published_summary"

# The per-sample frame: column -> pandas dtype. ``id`` and ``dialog_type`` are object columns (None allowed).
SAMPLE_COLUMNS: dict[str, str] = {
    "id": "object",
    "dialog_type": "object",
    "n_tools": "int64",
    "n_turns": "int64",
    "max_assistant_chars": "int64",
    "empty_turns": "int64",
    "calls_valid": "bool",
    "chat_format_ok": "bool",
    "chat_templates_ok": "bool",
}
SUMMARY_BASE_COLUMNS: tuple[str, ...] = ("generated", "accepted", "rows", "acceptance_rate")

ROW_COUNT = "gx_row_count_v1"
IDS_PRESENT = "gx_ids_present_v1"
UNIQUE_IDS = "gx_unique_ids_v1"
NON_EMPTY_TURNS = "gx_non_empty_turns_v1"
TOOL_COUNT = "gx_tool_count_v1"
TURN_COUNT = "gx_turn_count_v1"
ASSISTANT_LENGTH = "gx_assistant_length_v1"
CALLS_VALID = "gx_calls_valid_v1"
KNOWN_DIALOG_TYPES = "gx_known_dialog_types_v1"
CHAT_FORMAT = "gx_chat_format_v1"
CHAT_TEMPLATES = "gx_chat_templates_v1"
ACCEPTANCE_RATE = "gx_acceptance_rate_v1"
SAMPLE_EXPECTATIONS: tuple[str, ...] = (ROW_COUNT, IDS_PRESENT, UNIQUE_IDS, NON_EMPTY_TURNS, TOOL_COUNT, TURN_COUNT,
                                        ASSISTANT_LENGTH, CALLS_VALID, KNOWN_DIALOG_TYPES, CHAT_FORMAT,
                                        CHAT_TEMPLATES)

_EPS_DIGITS = 9  # n * (e - tol) is rounded to this many digits before floor/ceil (0.1 * 30 is 3.0000000000000004)


def _slug(dialog_type: str) -> str:
    return re.sub(r"\W", "_", dialog_type)


def share_column(dialog_type: str) -> str:
    """The summary column holding a dialog type's share of the rows."""
    return f"share_{_slug(dialog_type)}"


def mix_expectation(dialog_type: str) -> str:
    """The versioned name of the mix expectation of one dialog type (``gx_dialog_mix_single_v1``)."""
    return f"gx_dialog_mix_{_slug(dialog_type)}_v1"


class SuiteBounds(BaseModel):
    """What a published dataset must satisfy. :meth:`from_config` derives it from a run's settings."""

    model_config = ConfigDict(extra="forbid")

    dialog_mix: dict[str, float] = Field(description="Weights of the dialog types (normalised into shares)")
    mix_tolerance: float = Field(0.25, ge=0, le=1, description="Absolute tolerance on each type's share")
    min_acceptance_rate: float = Field(0.2, ge=0, le=1, description="Floor of accepted / generated")
    min_tools: int = Field(1, ge=0, description="Fewest tools offered in one sample")
    max_tools: int = Field(16, ge=1, description="Most tools offered in one sample")
    max_turns: int = Field(64, ge=1, description="Most turns in one sample (as the rule layer counts them)")
    max_assistant_chars: int = Field(ge=1, description="Longest assistant text answer (call turns not counted)")
    min_rows: int = Field(1, ge=0, description="Fewest samples a dataset may have")

    @model_validator(mode="after")
    def _check(self) -> SuiteBounds:
        if not self.dialog_mix or any(w < 0 for w in self.dialog_mix.values()) or sum(self.dialog_mix.values()) <= 0:
            raise ValueError("dialog_mix needs weights >= 0 with a positive sum")
        if self.min_tools > self.max_tools:
            raise ValueError("min_tools must not exceed max_tools")
        return self

    @classmethod
    def from_config(cls, config: RunConfig, **overrides: Any) -> SuiteBounds:
        """Bounds from a run's settings. A multi-turn dialog may be offered more than ``candidate_tools``:
        every API its parts target (a dependent part targets two), so ``max_tools`` is
        ``max(candidate_tools, 2 * max_segments)``."""
        values: dict[str, Any] = {
            "dialog_mix": dict(config.dialog_mix),
            "max_assistant_chars": config.max_assistant_chars,
            "max_tools": max(config.candidate_tools, 2 * config.max_segments),
        }
        values.update(overrides)
        return cls(**values)

    def dialog_types(self) -> list[str]:
        """Every type the mix is checked for: the known dialog types, then any other key of the mix."""
        return list(DIALOG_TYPES) + [t for t in self.dialog_mix if t not in DIALOG_TYPES]

    def expected_shares(self) -> dict[str, float]:
        total = sum(self.dialog_mix.values())
        return {t: self.dialog_mix.get(t, 0.0) / total for t in self.dialog_types()}

    def share_bounds(self, rows: int | None = None) -> dict[str, tuple[float, float]]:
        """Allowed share of each type: ``expected ± mix_tolerance`` clipped to [0, 1], rounded outward to
        whole dialogs when ``rows`` is known (see the module docstring)."""
        bounds: dict[str, tuple[float, float]] = {}
        for dialog_type, expected in self.expected_shares().items():
            low, high = max(0.0, expected - self.mix_tolerance), min(1.0, expected + self.mix_tolerance)
            if rows == 0:
                low, high = 0.0, 1.0
            elif rows is not None:
                low = math.floor(round(rows * low, _EPS_DIGITS)) / rows
                high = min(1.0, math.ceil(round(rows * high, _EPS_DIGITS)) / rows)
            bounds[dialog_type] = (low, high)
        return bounds

    def expectation_names(self) -> list[str]:
        """Every expectation's name, samples suite first (no Great Expectations import)."""
        return [*SAMPLE_EXPECTATIONS, ACCEPTANCE_RATE, *(mix_expectation(t) for t in self.dialog_types())]


def _named(name: str, description: str) -> dict[str, Any]:
    """The versioned name in ``meta`` and, for Data Docs (which render the description in place of GX's own
    sentence), the name with what is checked."""
    return {"meta": {"name": name}, "description": f"{name}: {description}"}


def samples_suite(bounds: SuiteBounds) -> gx.ExpectationSuite:
    """The suite on the per-sample frame (:data:`SAMPLE_COLUMNS`)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=bounds.min_rows, **_named(ROW_COUNT, f"the dataset holds at least {bounds.min_rows} samples.")),
        gxe.ExpectColumnValuesToNotBeNull(column="id", **_named(IDS_PRESENT, "every sample has an id.")),
        gxe.ExpectColumnValuesToBeUnique(column="id", **_named(UNIQUE_IDS, "sample ids are unique.")),
        gxe.ExpectColumnValuesToBeBetween(
            column="empty_turns", min_value=0, max_value=0,
            **_named(NON_EMPTY_TURNS, "no turn has blank text and no call (empty_turns is 0).")),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_tools", min_value=bounds.min_tools, max_value=bounds.max_tools,
            **_named(TOOL_COUNT, f"every sample offers {bounds.min_tools} to {bounds.max_tools} tools (n_tools).")),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_turns", min_value=1, max_value=bounds.max_turns,
            **_named(TURN_COUNT, f"every sample has 1 to {bounds.max_turns} turns, each tool result one (n_turns).")),
        gxe.ExpectColumnValuesToBeBetween(
            column="max_assistant_chars", min_value=0, max_value=bounds.max_assistant_chars,
            **_named(ASSISTANT_LENGTH, f"no assistant text answer is longer than {bounds.max_assistant_chars} "
                                       "characters (max_assistant_chars).")),
        gxe.ExpectColumnValuesToBeInSet(
            column="calls_valid", value_set=[True],
            **_named(CALLS_VALID, "every call parses, names an offered tool and fits its parameters: the rule "
                                  "layer's call checks, re-run on the published row (calls_valid).")),
        gxe.ExpectColumnValuesToBeInSet(
            column="dialog_type", value_set=bounds.dialog_types(),
            **_named(KNOWN_DIALOG_TYPES, f"every sample has a known type ({', '.join(bounds.dialog_types())}).")),
        gxe.ExpectColumnValuesToBeInSet(
            column="chat_format_ok", value_set=[True],
            **_named(CHAT_FORMAT, "every published chat row follows the Hugging Face chat convention: only the keys "
                                  "a role uses, arguments as objects, 9-character call ids, each tool message "
                                  "naming the call it answers (chat_format_ok).")),
        gxe.ExpectColumnValuesToBeInSet(
            column="chat_templates_ok", value_set=[True],
            **_named(CHAT_TEMPLATES, "every sampled row renders through the chat templates of the listed model "
                                     "families and the target model, each call's arguments once and never as an "
                                     "escaped JSON string; shapes a family cannot take are reported, not failed "
                                     "(chat_templates_ok).")),
    ]
    return gx.ExpectationSuite(name=SAMPLES_SUITE, expectations=expectations,
                               notes="Published ToolACE dataset, one row per sample")


def summary_suite(bounds: SuiteBounds, rows: int | None = None) -> gx.ExpectationSuite:
    """The suite on the one-row summary frame: acceptance rate and each dialog type's share."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[gxe.Expectation] = [gxe.ExpectColumnValuesToBeBetween(
        column="acceptance_rate", min_value=bounds.min_acceptance_rate, max_value=1.0,
        **_named(ACCEPTANCE_RATE, f"accepted / generated dialogs is at least {bounds.min_acceptance_rate:g}."))]
    expected = bounds.expected_shares()
    for dialog_type, (low, high) in bounds.share_bounds(rows).items():
        text = (f"the share of {dialog_type} dialogs is between {low:.3f} and {high:.3f} (expected "
                f"{expected[dialog_type]:.3f}, tolerance {bounds.mix_tolerance:g}"
                + (f", rounded to whole dialogs of {rows}" if rows else "") + ").")
        expectations.append(gxe.ExpectColumnValuesToBeBetween(
            column=share_column(dialog_type), min_value=low, max_value=high,
            **_named(mix_expectation(dialog_type), text)))
    return gx.ExpectationSuite(name=SUMMARY_SUITE, expectations=expectations,
                               notes="Published ToolACE dataset, whole-dataset figures")


def published_dataset_suites(bounds: SuiteBounds, rows: int | None = None) -> dict[str, gx.ExpectationSuite]:
    """Both suites, by the frame each validates: ``{"samples": ..., "summary": ...}``."""
    return {"samples": samples_suite(bounds), "summary": summary_suite(bounds, rows)}
