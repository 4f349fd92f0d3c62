"""Self-guided complexity control (ToolACE section 3.2): plain functions, no model inside.

The target model's own loss on a dialog measures how hard the dialog is for it. Two bounds are
calibrated on a small probe set: the **lower bound** from the losses of probes the target model already
answers correctly (below it a dialog teaches the model little: too easy), the **upper bound** from the
high tail of all probe losses (above it the dialog is beyond the model: too hard). A dialog outside the
bounds is regenerated with an extra instruction for the user agent: too easy -> need more of the offered
APIs where the dialog type allows it and phrase the request further from the API descriptions; too hard
-> simpler, direct wording with every value stated. Rounds are bounded by the caller; each dialog keeps a
:class:`GuidanceRecord` with the bounds, the loss and verdict of every round and the change applied.

Callers run the model (``LossScorer.score`` / ``generate``) and pass the results in; the paper publishes
no numeric bounds, so fixed bounds are only used when a caller asks for them (:func:`fixed_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas.records import Dialog, DialogType

OUT_OF_BAND_CHECK = "complexity_bounds_v1"  # a dialog rejected for its loss (flows.stages.dialogs.reject_out_of_band)
Verdict = Literal["too_easy", "in_range", "too_hard", "unscored"]
VERDICTS: tuple[Verdict, ...] = ("too_easy", "in_range", "too_hard", "unscored")
FALLBACK_LOWER_QUANTILE = 0.25  # lower bound from all probes when fewer than 2 were answered correctly


class LossBounds(BaseModel):
    """Loss bounds of the target model: ``lower <= loss <= upper`` is in range."""

    lower: float
    upper: float
    source: Literal["calibrated", "fixed"]
    probe_size: int = Field(0, ge=0, description="Probe dialogs with a loss that the bounds were computed from")
    probe_correct: int = Field(0, ge=0, description="Of those, how many the target model answered correctly")
    method: str = Field("", description="How the bounds were computed, in words")

    @model_validator(mode="after")
    def _check(self) -> LossBounds:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"loss bounds must be finite, got lower={self.lower}, upper={self.upper}")
        if not self.lower < self.upper:
            raise ValueError(f"lower bound {self.lower} must be below upper bound {self.upper}")
        if self.probe_correct > self.probe_size:
            raise ValueError(f"probe_correct {self.probe_correct} exceeds probe_size {self.probe_size}")
        return self


def fixed_bounds(lower: float, upper: float) -> LossBounds:
    """Bounds given by configuration, not measured (``source="fixed"``)."""
    return LossBounds(lower=lower, upper=upper, source="fixed", probe_size=0, probe_correct=0,
                      method=f"fixed by configuration: lower={lower}, upper={upper}")


# Probes: the target model answers each probe's first request as ``toolace eval`` asks a BFCL item, and the
# BFCL checker says whether it got it right (:func:`tasks.evaluation.bfcl_eval.item_from_dialog`, used by the
# ``probe-target-model`` task).


# ------------------------------------------------------------------------------------------- calibration


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _usable(loss: float | None) -> bool:
    return loss is not None and math.isfinite(loss)


def calibrate_bounds(losses: Sequence[float | None], correct: Sequence[bool], lower_quantile: float = 0.5,
                     upper_quantile: float = 0.9, min_probe: int = 4) -> LossBounds:
    """Bounds from a probe set: ``losses[i]`` is the target model's loss on probe i, ``correct[i]``
    whether its answer to the probe matched the reference calls.

    - lower = the ``lower_quantile`` quantile of the losses of correctly answered probes; with fewer than
      2 of those, the 0.25 quantile of all probe losses (``method`` says so);
    - upper = the ``upper_quantile`` quantile of all probe losses;
    - if upper <= lower (correct answers sit in the high tail), upper is raised to the largest probe loss,
      and if that is still not above lower, to lower + a margin (a quarter of the loss spread, at least
      5% of the lower bound and at least 0.01), so the range is never empty; ``method`` records it.

    Probes without a finite loss are ignored. Fewer than ``min_probe`` usable losses -> ValueError
    (callers fall back to :func:`fixed_bounds` explicitly).
    """
    if len(losses) != len(correct):
        raise ValueError(f"{len(losses)} losses but {len(correct)} correctness flags")
    for name, q in (("lower_quantile", lower_quantile), ("upper_quantile", upper_quantile)):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"{name} {q} is not within [0, 1]")
    pairs = [(float(loss), bool(ok)) for loss, ok in zip(losses, correct, strict=True)
             if _usable(loss)]
    skipped = len(losses) - len(pairs)
    if len(pairs) < max(min_probe, 1):
        raise ValueError(f"only {len(pairs)} probe(s) with a loss ({len(losses)} given, {skipped} without a "
                         f"loss); calibrating the loss bounds needs at least {min_probe}: use fixed bounds instead")
    everything = [loss for loss, _ in pairs]
    right = [loss for loss, ok in pairs if ok]
    notes: list[str] = []
    if len(right) >= 2:
        lower = quantile(right, lower_quantile)
        notes.append(f"lower = q{lower_quantile:g} of the {len(right)} correctly answered probes' losses")
    else:
        lower = quantile(everything, FALLBACK_LOWER_QUANTILE)
        notes.append(f"only {len(right)} probe(s) answered correctly, so lower = q{FALLBACK_LOWER_QUANTILE:g} "
                     f"of all {len(everything)} probe losses")
    upper = quantile(everything, upper_quantile)
    notes.append(f"upper = q{upper_quantile:g} of all {len(everything)} probe losses (linear interpolation)")
    if upper <= lower:
        crossed = upper
        upper = max(everything)
        how = "the largest probe loss"
        if upper <= lower:
            spread = max(everything) - min(everything)
            upper = lower + max(spread / 4, abs(lower) * 0.05, 0.01)
            how = "lower + max(spread/4, 5% of lower, 0.01)"
        notes.append(f"upper {crossed:.4g} was not above lower {lower:.4g}: widened to {how} = {upper:.4g}")
    if skipped:
        notes.append(f"{skipped} probe(s) without a loss ignored")
    return LossBounds(lower=lower, upper=upper, source="calibrated", probe_size=len(pairs),
                      probe_correct=len(right), method="; ".join(notes))


def judge(loss: float | None, bounds: LossBounds) -> Verdict:
    """Where a loss falls: a loss equal to a bound is in range; no (or a non-finite) loss is unscored."""
    if loss is None or not math.isfinite(loss):
        return "unscored"
    if loss < bounds.lower:
        return "too_easy"
    if loss > bounds.upper:
        return "too_hard"
    return "in_range"


# ------------------------------------------------------------------------------------------- instructions

_EASY = "The last version was too easy for the target model."
_HARD = "The last version was too hard for the target model."
_MORE_APIS: dict[str, str] = {
    "parallel": ("Ask for more at once: at least three different values (more cities, dates, items ...) in one "
                 "message, so that more calls are needed side by side{others}."),
    "multi_turn": "Where a message can, make it need more than one of the offered functions{others}.",
    "dependent": ("Let the second step follow from the first without saying that one result feeds the other; "
                  "the assistant must work that out."),
}
_FURTHER = ("Phrase it further from the function descriptions: do not reuse their wording or parameter names, "
            "describe your goal indirectly in everyday words, and let some details be implied by the context "
            "(still give every value a call needs, in your own words).")
_SIMPLER = ("Make the request simpler and more direct: one clear goal, in plain words close to the function's "
            "description, with every required value stated plainly and exactly (no hints, no implied details, "
            "no extra requests).")
_KEEP_MISSING = " Still leave out the one value you were told to leave out."
# A non-tool message is hard when it looks like something the functions do; easy when plainly unrelated.
_NON_TOOL_EASY = ("Make it harder to tell that no function fits: touch the same topic as the offered functions"
                  "{names}, but ask for something none of them can do (borrow their subject, not their wording).")
_NON_TOOL_HARD = ("Make it simpler: a plain question or small talk clearly unrelated to what the offered functions "
                  "do, in direct wording.")


def guidance_instruction(verdict: str, dialog_type: DialogType | str, api_names: list[str]) -> str:
    """The extra instruction for the user agent after a verdict; "" for in_range and unscored.

    too_easy: need more of the offered APIs where the dialog type allows it (more values for parallel,
    more functions per message for multi-turn, an implicit hand-over for dependent; single and
    clarification keep their one call) and phrase the request further from the API descriptions.
    too_hard: simpler, direct wording with every required value stated plainly. A clarification dialog
    keeps its missing value either way; a non-tool message gets closer to the functions' topic when too
    easy and plainly unrelated when too hard. An unknown verdict raises ValueError.
    """
    offered = [n for n in api_names if n]
    kind = str(dialog_type)
    if verdict == "too_easy":
        if kind == "non_tool":
            names = f" ({', '.join(offered)})" if offered else ""
            return f"{_EASY} {_NON_TOOL_EASY.format(names=names)}"
        others = f", drawing on these offered functions: {', '.join(offered)}" if offered else ""
        more = _MORE_APIS.get(kind, "").format(others=others)
        text = " ".join(part for part in (_EASY, more, _FURTHER) if part)
        return text + (_KEEP_MISSING if kind == "clarification" else "")
    if verdict == "too_hard":
        if kind == "non_tool":
            return f"{_HARD} {_NON_TOOL_HARD}"
        return f"{_HARD} {_SIMPLER}" + (_KEEP_MISSING if kind == "clarification" else "")
    if verdict in ("in_range", "unscored"):
        return ""
    raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")


# ---------------------------------------------------------------------------------------------- records


class GuidanceRound(BaseModel):
    round: int = Field(ge=0)
    loss: float | None
    verdict: str = Field(description="A judge() verdict, or a caller's note such as a failed regeneration")
    change: str = Field("", description="The instruction applied to produce this round ('' for round 0)")


class GuidanceRecord(BaseModel):
    """What self-guidance did to one dialog: the bounds used, and every round's loss, verdict and change."""

    bounds: LossBounds | None = None
    rounds: list[GuidanceRound] = Field(default_factory=list)
    final_verdict: str = "unscored"

    def add_round(self, loss: float | None, change: str = "", verdict: str | None = None) -> GuidanceRound:
        """Append the next round. Without ``verdict`` the loss is judged against the bounds (unscored
        without bounds). ``final_verdict`` follows a judged verdict (one of :data:`VERDICTS`); a caller's
        other note (e.g. "rejected: previous version kept") is recorded but leaves it as it was."""
        if verdict is None:
            verdict = judge(loss, self.bounds) if self.bounds is not None else "unscored"
        entry = GuidanceRound(round=len(self.rounds), loss=loss, verdict=verdict, change=change)
        self.rounds.append(entry)
        if verdict in VERDICTS:
            self.final_verdict = verdict
        return entry

    @property
    def losses(self) -> list[float | None]:
        return [r.loss for r in self.rounds]

    @property
    def rewrites(self) -> int:
        """Rounds after the first: how many times the dialog was regenerated."""
        return max(len(self.rounds) - 1, 0)

    def next_instruction(self, dialog_type: DialogType | str, api_names: list[str]) -> str:
        """The instruction for the next round after the latest verdict ("" when in range or unscored)."""
        return guidance_instruction(self.final_verdict, dialog_type, api_names) if self.rounds else ""


def start_record(bounds: LossBounds | None, loss: float | None) -> GuidanceRecord:
    """A record with round 0 (the first version of the dialog) judged."""
    record = GuidanceRecord(bounds=bounds)
    record.add_round(loss)
    return record


def append_round(record: GuidanceRecord, loss: float | None, change: str,
                 verdict: str | None = None) -> GuidanceRecord:
    """A copy of ``record`` with one more round (the version produced with ``change``)."""
    updated = record.model_copy(deep=True)
    updated.add_round(loss, change, verdict)
    return updated


def apply_record(dialog: Dialog, record: GuidanceRecord) -> Dialog:
    """Write the record onto the dialog: ``losses``, ``guidance_rounds``, ``complexity_loss`` (the loss of
    the latest judged round, i.e. the version kept: a failed regeneration's note does not count) and
    ``guidance`` (the record as a dict)."""
    dialog.losses = record.losses
    dialog.guidance_rounds = record.rewrites
    kept = [r for r in record.rounds if r.verdict in VERDICTS]
    if kept:
        dialog.complexity_loss = kept[-1].loss
    dialog.guidance = record.model_dump(mode="json")
    return dialog
