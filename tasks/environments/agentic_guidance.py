"""Loss steering of ``agentic_multi_turn`` dialogs: ToolACE's self-guided complexity evolution, verified by execution.
Plain functions and one plain state class (:class:`AgenticSteering`), no model inside.

An agentic dialog cannot be rewritten the way :func:`flows.stages.dialogs._guide` regenerates the other types: its
tool turns are real execution results, and it is accepted only because its final state matches its blueprint's. So
the steering happens one level up, at the blueprint. When loss bounds are in force, an accepted agentic dialog whose
target-model loss is under the lower bound (too easy) or over the upper bound (too hard,
:func:`tasks.dialogs.self_guidance.judge`) gets a **replacement**: a new blueprint for the same environment, proposed
with guidance (:func:`blueprint_guidance`: harder = more steps, dependent actions, more outputs to report; simpler =
fewer steps), then executed, reviewed, turned into a trajectory and rule-checked exactly as the first blueprint was
(:func:`tasks.environments.agentic_dialogs.make_guided_dialogs`), then scored again; for at most the run's
``guidance_rounds`` rounds. Per dialog, keyed by its first version's id (its *origin*), a
:class:`~tasks.dialogs.self_guidance.GuidanceRecord` keeps every round as the other types' records do:

* a replacement accepted (its trajectory verified, its loss measured) becomes the kept version whatever its verdict,
  as a regenerated dialog does; the version it replaces is recorded as rejected by :data:`OUT_OF_BAND_CHECK`, with
  its loss, verdict, the bounds and the id of the dialog that replaced it (a row, never dropped);
* a replacement that fails keeps the previous version, the round recorded as "rejected (check): previous version
  kept": a blueprint rejected (by the blueprint rules, the committee, or :data:`GUIDANCE_REPEAT_CHECK` when it repeats
  the task it should replace), or a trajectory rejected (by execution, the rules, or the target model's context
  length; recorded as a rejected row with its own check);
* after the last round, the kept version is judged by the rule every dialog type meets
  (``flows.stages.dialogs.reject_out_of_band``: rejected by :data:`OUT_OF_BAND_CHECK` unless ``keep_out_of_band``).

:meth:`AgenticSteering.report` gives the figures of the run report (per round: dialogs out of band, replacements
proposed, accepted, moved into the bounds, failed by check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.environments import Action, AgenticDialog, Blueprint, BlueprintProposal
from schemas.records import Dialog
from tasks.dialogs.self_guidance import OUT_OF_BAND_CHECK, GuidanceRecord, LossBounds, apply_record, start_record

GUIDANCE_REPEAT_CHECK = "blueprint_guidance_v1"
OUT_OF_BAND: tuple[str, ...] = ("too_easy", "too_hard")
_PROPOSAL = BlueprintProposal.model_json_schema()["properties"]
MAX_ACTIONS: int = _PROPOSAL["actions"]["maxItems"]
MAX_OUTPUTS: int = _PROPOSAL["outputs"]["maxItems"]


# ------------------------------------------------------------------------------------------------ the guidance


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def blueprint_guidance(verdict: str, goal: str, actions: Sequence[Action], outputs: Sequence[str]) -> str:
    """The instruction for the blueprint writer after a verdict on the dialog of the blueprint (``goal``, ``actions``,
    ``outputs``); "" for in_range and unscored, ValueError for an unknown verdict.

    too_easy: a harder task: more steps (at least one action more), actions that depend on earlier results (a later
    call needs a value an earlier call returns, which the user does not give), more values to report (at least one
    more). too_hard: a simpler task: fewer steps (at least one action less; a single action when it had one), one
    clear request with every value stated plainly, at most one value to report. The counts never ask for more than a
    blueprint may hold."""
    steps, told = len(actions), len(outputs)
    last = (f'The last task for this environment was: "{goal}" ({_plural(steps, "action")}: '
            f'{", ".join(a.api for a in actions) or "none"}; {_plural(told, "value")} to tell the user).')
    if verdict == "too_easy":
        return (f"{last} It was too easy for the target model. Write a harder task instead, not the same one: more "
                f"steps (at least {_plural(min(steps + 1, MAX_ACTIONS), 'action')}), actions that depend on earlier "
                "results (a later call needs a value that an earlier call returns and the user does not give), and "
                f"more values the user must be told (at least {min(told + 1, MAX_OUTPUTS)}).")
    if verdict == "too_hard":
        fewer = f"fewer steps (at most {_plural(steps - 1, 'action')})" if steps > 1 else "a single action"
        return (f"{last} It was too hard for the target model. Write a simpler task instead, not the same one: "
                f"{fewer}, one clear request that states plainly every value the actions need, and at most one "
                "value the user must be told.")
    if verdict in ("in_range", "unscored"):
        return ""
    raise ValueError(f"unknown verdict {verdict!r}; expected too_easy, in_range, too_hard or unscored")


class GuidedBlueprint(BaseModel):
    """One replacement asked for: a new blueprint for the environment of an out-of-band dialog (an input of the
    agentic batch task, so part of its cache key)."""

    origin: str = Field(description="The first version's dialog id: the guidance record's key")
    replaces: str = Field(description="The dialog id of the version being replaced")
    env_id: str
    round: int = Field(ge=1)
    verdict: Literal["too_easy", "too_hard"]
    guidance: str = Field(description="The instruction added to the blueprint prompt (blueprint_guidance)")
    goal: str = Field(description="The replaced version's user goal")
    actions: list[Action] = Field(default_factory=list, description="The replaced version's ground-truth actions")
    outputs: list[str] = Field(default_factory=list, description="The replaced version's required outputs")


class GuidedOutcome(BaseModel):
    """What a replacement came to: its dialog (accepted, or rejected with its check), or, when no trajectory was
    run, the check and reason that rejected its blueprint."""

    origin: str
    dialog: AgenticDialog | None = None
    rejected_by: str | None = None
    reason: str | None = None


def guided_request(dialog: Dialog, origin: str, verdict: str, round_no: int) -> GuidedBlueprint:
    """The replacement request for an agentic dialog (its blueprint is read from its ``meta``)."""
    meta: dict[str, Any] = getattr(dialog, "meta", {}) or {}
    actions = [Action.model_validate(a) for a in meta.get("ground_truth_actions") or []]
    goal, outputs = str(meta.get("user_goal") or ""), [str(o) for o in meta.get("required_outputs") or []]
    return GuidedBlueprint(origin=origin, replaces=dialog.dialog_id, env_id=str(meta.get("env_id") or ""),
                           round=round_no, verdict=verdict,  # type: ignore[arg-type]
                           guidance=blueprint_guidance(verdict, goal, actions, outputs), goal=goal, actions=actions,
                           outputs=outputs)


def repeats(blueprint: Blueprint, request: GuidedBlueprint) -> bool:
    """Whether a guided blueprint is the task it should replace (the same actions and the same outputs)."""
    return ([a.model_dump() for a in blueprint.actions] == [a.model_dump() for a in request.actions]
            and list(blueprint.outputs) == list(request.outputs))


# ------------------------------------------------------------------------------------------------ the rounds


@dataclass
class AgenticSteering:
    """The rounds' state (see the module docstring): the version kept per origin and its record, and the versions
    replaced or failed, which are written as rejected rows."""

    bounds: LossBounds
    dialogs: list[Dialog]  # as generated: the order of :meth:`finish`
    environments: frozenset[str]  # env ids a replacement can be proposed for
    current: dict[str, Dialog] = field(default_factory=dict)
    records: dict[str, GuidanceRecord] = field(default_factory=dict)
    superseded: list[Dialog] = field(default_factory=list)
    failed: list[Dialog] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    first_verdicts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def start(cls, dialogs: Sequence[Dialog], bounds: LossBounds, environments: Iterable[str]) -> AgenticSteering:
        """Round 0 of every accepted agentic dialog judged (rejected ones are passed through as they are)."""
        steering = cls(bounds=bounds, dialogs=list(dialogs), environments=frozenset(environments))
        for dialog in dialogs:
            if dialog.accepted and isinstance(dialog, AgenticDialog):
                steering.current[dialog.dialog_id] = dialog
                steering.records[dialog.dialog_id] = start_record(bounds, dialog.complexity_loss)
                steering.first_verdicts[steering.records[dialog.dialog_id].final_verdict] += 1
        return steering

    def out_of_band(self) -> list[str]:
        """The origins whose kept version is too easy or too hard, in order."""
        return [o for o, r in self.records.items() if r.final_verdict in OUT_OF_BAND]

    def requests(self, round_no: int) -> list[GuidedBlueprint]:
        """This round's replacements: one per out-of-band kept version whose environment is available."""
        return [guided_request(self.current[o], o, self.records[o].final_verdict, round_no) for o in self.out_of_band()
                if str(getattr(self.current[o], "meta", {}).get("env_id")) in self.environments]

    def settle(self, round_no: int, requests: Sequence[GuidedBlueprint], outcomes: Sequence[GuidedOutcome],
               scored: Sequence[Dialog] = ()) -> dict[str, Any]:
        """Decide a round (see the module docstring). ``outcomes``: the batch's, one per request; ``scored``: their
        dialogs after the target model's loss (by dialog id; an outcome's own dialog when absent). Returns the
        round's figures (also kept for :meth:`report`)."""
        by_id = {d.dialog_id: d for d in scored}
        by_origin = {o.origin: o for o in outcomes}
        figures: dict[str, Any] = {"round": round_no, "out_of_band": len(requests),
                                   "too_easy": sum(r.verdict == "too_easy" for r in requests),
                                   "too_hard": sum(r.verdict == "too_hard" for r in requests),
                                   "replaced": 0, "moved_into_band": 0, "failed": 0}
        failures: Counter[str] = Counter()
        for request in requests:
            record, old = self.records[request.origin], self.current[request.origin]
            outcome = by_origin.get(request.origin)
            new = None if outcome is None or outcome.dialog is None else by_id.get(outcome.dialog.dialog_id,
                                                                                  outcome.dialog)
            if new is not None and new.accepted:
                round_ = record.add_round(new.complexity_loss, request.guidance)
                old.reject(OUT_OF_BAND_CHECK, f"loss {old.complexity_loss} {request.verdict} (bounds "
                                              f"{self.bounds.lower:.3f}-{self.bounds.upper:.3f}): replaced by guided "
                                              f"dialog {new.dialog_id} (round {round_no})")
                self.superseded.append(old)
                self.current[request.origin] = new
                figures["replaced"] += 1
                figures["moved_into_band"] += round_.verdict == "in_range"
                continue
            if new is not None:
                check = new.rejected_by or "unknown"
                self.failed.append(new)
            else:
                check = (outcome.rejected_by if outcome is not None else None) or "no_outcome"
            record.add_round(new.complexity_loss if new is not None else None, request.guidance,
                             verdict=f"rejected ({check}): previous version kept")
            failures[check] += 1
        figures["failed"] = sum(failures.values())
        figures["failed_by"] = dict(sorted(failures.items()))
        self.rounds.append(figures)
        return figures

    def finish(self) -> list[Dialog]:
        """Every dialog to write: each kept version (with its record applied) where its origin was, the dialogs that
        were never steered, then the replaced versions and the failed replacements (rejected rows)."""
        out: list[Dialog] = []
        for dialog in self.dialogs:
            if dialog.dialog_id in self.current:
                out.append(apply_record(self.current[dialog.dialog_id], self.records[dialog.dialog_id]))
            else:
                out.append(dialog)
        return [*out, *self.superseded, *self.failed]

    def kept(self) -> list[tuple[Dialog, GuidanceRecord]]:
        """The kept versions and their records (for the out-of-band rule after the last round)."""
        return [(self.current[o], r) for o, r in self.records.items()]

    def report(self) -> dict[str, Any]:
        """The figures of the run report: the bounds, the first versions' verdicts, each round's figures, and how the
        kept versions ended (in the bounds, still out, rejected by the out-of-band rule)."""
        kept = self.kept()
        final = Counter(r.final_verdict for _, r in kept)
        return {
            "bounds": {"lower": self.bounds.lower, "upper": self.bounds.upper, "source": self.bounds.source},
            "dialogs": len(self.records),
            "first_verdicts": dict(sorted(self.first_verdicts.items())),
            "rounds": self.rounds,
            "rewrites": sum(r.rewrites for _, r in kept),
            "replaced": len(self.superseded),
            "failed_replacements": sum(r["failed"] for r in self.rounds),
            "final_verdicts": dict(sorted(final.items())),
            "rejected_out_of_band": sum(d.rejected_by == OUT_OF_BAND_CHECK for d, _ in kept),
        }


# ------------------------------------------------------------------------------------------------ the counts

_ADDED = ("blueprints_proposed", "blueprints_executed", "blueprints_accepted", "trajectories_run",
          "trajectories_accepted", "executions", "llm_tokens")


def merge_counts(report: dict[str, Any], guided: dict[str, Any]) -> dict[str, Any]:
    """The agentic counts of the run report with a guided round's added (its blueprints, trajectories, executions,
    tokens, time and rejections; environments are not proposed again), the rates recomputed."""
    merged = dict(report)
    for key in _ADDED:
        merged[key] = report.get(key, 0) + guided.get(key, 0)
    merged["execution_s"] = round(report.get("execution_s", 0.0) + guided.get("execution_s", 0.0), 3)
    merged["wall_time_s"] = round(report.get("wall_time_s", 0.0) + guided.get("wall_time_s", 0.0), 3)
    merged["executions_per_s"] = round(merged["executions"] / merged["execution_s"], 1) \
        if merged["execution_s"] else None
    accepted = merged["trajectories_accepted"]
    merged["llm_tokens_per_accepted_trajectory"] = round(merged["llm_tokens"] / accepted, 1) if accepted else None
    rejected = Counter(report.get("rejected_by") or {})
    rejected.update(guided.get("rejected_by") or {})
    merged["rejected_by"] = dict(sorted(rejected.items()))
    return merged
