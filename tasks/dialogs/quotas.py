"""The mix asked for is the mix published: dialogs are planned type by type against quotas of *accepted* dialogs.

``dialog_mix`` becomes a quota per type (largest remainders of ``dialogs`` x share). Each next plan goes to the
type furthest below its quota, counting the dialogs of that type generating or verifying as if accepted, so a type
that is rejected more is planned more: up to its own share of the attempt budget (its quota x the attempt factor).
A type that spends it below its quota is given up, and what it still lacks is planned as the other types (those
accepted most often first), within the run's whole attempt budget, so the run still reaches ``dialogs``.
Each type's plans come from its own seeded sequence, made in chunks as needed, numbered in planning order.

A type that cannot reach its share within the expectation suite's tolerance (``mix_tolerance``) is said as soon as
that is known: when it is given up below that floor, or earlier, once ``MIN_EVIDENCE`` of its dialogs are decided
and even the optimistic end of its acceptance (the Wilson 95% upper bound) over its attempts left cannot reach the
floor. The line names the type, its acceptance so far and the check that rejects it most, instead of the suite
failing after all the work is done.

A plan can come out as another type (a dependent or clarification plan falls back to a single call when no API
allows it; the plan says so): it counts against the budget of the type it was planned for, and as a dialog of the
type it is, which is what the suite counts. Unless types may overfill (``mix_shortfall: warn``), such a plan is
dropped unsent when the type it became is already at the most the suite allows (:meth:`MixPlanner.ceiling`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from schemas.records import APISpec, Dialog
from tasks.dialogs.generation import DialogPlan, Neighbourhoods, plan_dialogs

MIN_EVIDENCE = 8  # decided dialogs of a type before its shortfall is judged
CHUNK = 16  # plans made at once per type
MAX_DROPPED = 3  # plans of a type dropped unsent (they became a full type) before the type is given up


def type_quotas(mix: dict[str, float], total: int) -> dict[str, int]:
    """``total`` split by the mix's shares (largest remainders; ties to the type listed first)."""
    weights = {t: w for t, w in mix.items() if w > 0}
    whole = sum(weights.values())
    exact = {t: total * w / whole for t, w in weights.items()}
    quotas = {t: math.floor(v) for t, v in exact.items()}
    order = sorted(weights, key=lambda t: (-(exact[t] - quotas[t]), list(weights).index(t)))
    for t in order[: total - sum(quotas.values())]:
        quotas[t] += 1
    return quotas


def wilson_upper(successes: int, trials: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval of a proportion (1.0 without trials)."""
    if trials <= 0:
        return 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return min(1.0, (centre + margin) / (1 + z * z / trials))


@dataclass
class TypeTally:
    quota: int
    budget: int  # attempts this type may take while below its quota
    planned: int = 0
    in_flight: int = 0
    accepted: int = 0
    decided: int = 0
    rejected_by: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # plans for this type dropped unsent: they became a type already at its ceiling


class MixPlanner:
    """Plans the next dialogs against per-type quotas of accepted dialogs (see the module docstring)."""

    def __init__(self, apis: list[APISpec], target: int, mix: dict[str, float], candidates: int, seed: int,
                 max_segments: int = 3, attempt_factor: int = 3, tolerance: float = 0.25,
                 overfill: bool = True) -> None:
        """``overfill``: when types are given up, the others may take their place beyond the share the expectation
        suite allows them (``mix_shortfall: warn``, the suite judges); else only up to it, and a mix that cannot be
        completed so is a shortfall (:meth:`shortfalls`)."""
        self.apis = [a for a in apis if a.accepted]
        self.target, self.mix, self.candidates, self.max_segments = target, mix, candidates, max_segments
        self.budget = target * attempt_factor
        self.tolerance = tolerance
        weights = {t: w for t, w in mix.items() if w > 0}
        self.shares = {t: w / sum(weights.values()) for t, w in weights.items()}
        self.tallies = {t: TypeTally(q, q * attempt_factor) for t, q in type_quotas(mix, target).items()}
        self._rngs = {t: random.Random(f"{seed}:dialogs:{t}") for t in self.tallies}
        self._queued: dict[str, list[DialogPlan]] = {t: [] for t in self.tallies}
        self._made: Counter[str] = Counter()
        self._pool = Neighbourhoods(self.apis) if self.apis else None
        self._type_of: dict[int, str] = {}  # plan index -> the type it was planned for
        self.planned = 0
        self.given_up: set[str] = set()
        self.reported: set[str] = set()
        self.overfill = overfill
        self.crowded = False  # the target cannot be reached without overfilling a type (overfill off)

    def floor(self, kind: str) -> int:
        """The fewest accepted dialogs of ``kind`` the expectation suite takes (its share less the tolerance, rounded
        outward to whole dialogs as the suite rounds: :meth:`schemas.suites.SuiteBounds.share_bounds`)."""
        return max(0, math.floor(round((self.shares.get(kind, 0.0) - self.tolerance) * self.target, 9)))

    def ceiling(self, kind: str) -> int:
        """The most accepted dialogs of ``kind`` the expectation suite takes (its share plus the tolerance, rounded
        outward as the suite rounds)."""
        return min(self.target, math.ceil(round((self.shares.get(kind, 0.0) + self.tolerance) * self.target, 9)))

    def _tally(self, kind: str) -> TypeTally:
        """A type's tally; a type outside the mix (a plan's fallback) gets one with no quota."""
        if kind not in self.tallies:
            self.tallies[kind] = TypeTally(0, 0)
            self.given_up.add(kind)  # never planned for itself
        return self.tallies[kind]

    def _full(self, kind: str) -> bool:
        tally = self._tally(kind)
        return tally.accepted + tally.in_flight >= self.ceiling(kind)

    def _deficit(self, kind: str) -> int:
        tally = self.tallies[kind]
        return tally.quota - tally.accepted - tally.in_flight

    def _choose(self) -> str | None:
        """The type the next plan is for: furthest below its quota; once every quota is covered but the target is
        not (a type was given up), the type accepted most often among those still below the share the expectation
        suite allows them (:meth:`ceiling`: redistribution never overfills a type into a failed suite); None when
        nothing more is needed or no type has room."""
        open_ = [t for t in self.tallies if t not in self.given_up]
        wanted = [t for t in open_ if self._deficit(t) > 0 and self.tallies[t].planned < self.tallies[t].budget]
        if wanted:
            return max(wanted, key=lambda t: (self._deficit(t) / max(self.tallies[t].quota, 1),
                                              -list(self.tallies).index(t)))
        covered = sum(t.accepted + t.in_flight for t in self.tallies.values())
        if covered >= self.target or not open_:
            return None
        if not self.overfill:
            open_ = [t for t in open_ if self._full(t) is False]
            if not open_:
                self.crowded = True
                return None
        return max(open_, key=lambda t: (self.acceptance(t), -(self.tallies[t].accepted + self.tallies[t].in_flight)
                                         / self.shares[t], -list(self.tallies).index(t)))

    def acceptance(self, kind: str) -> float:
        """The type's acceptance so far, smoothed (Laplace): 0.5 before any of its dialogs is decided."""
        tally = self.tallies[kind]
        return (tally.accepted + 1) / (tally.decided + 2)

    def _next_of(self, kind: str) -> DialogPlan | None:
        queue = self._queued[kind]
        if not queue and self._pool is not None:
            queue.extend(plan_dialogs(self.apis, CHUNK, {kind: 1.0}, self.candidates, self._rngs[kind],
                                      self.max_segments, start=self._made[kind], segment_mix=self.mix,
                                      pool=self._pool))
            self._made[kind] += CHUNK
        return queue.pop(0) if queue else None

    def next_plans(self, size: int) -> list[DialogPlan]:
        """Up to ``size`` plans (none once the accepted and in-flight dialogs cover the target, or the attempt
        budget is spent)."""
        plans: list[DialogPlan] = []
        while len(plans) < size and self.planned < self.budget:
            kind = self._choose()
            if kind is None:
                break
            plan = self._next_of(kind)
            if plan is None:
                break
            tally = self.tallies[kind]
            tally.planned += 1  # the budget of the type it was planned for
            actual = plan.dialog_type
            if actual != kind and not self.overfill and self._full(actual):
                tally.dropped += 1  # it would overfill the type it became: not sent
                if tally.dropped >= MAX_DROPPED:
                    self.given_up.add(kind)
                continue
            plan = plan.model_copy(update={"index": self.planned})
            self._type_of[plan.index] = actual
            self._tally(actual).in_flight += 1
            self.planned += 1
            plans.append(plan)
        return plans

    def record(self, plans: Sequence[DialogPlan], decided: Iterable[Dialog]) -> None:
        """A batch is decided: its plans leave the in-flight counts and its dialogs count as accepted or
        rejected against the type each plan is (which the type it was planned for may have fallen back to)."""
        for plan, dialog in zip(plans, decided, strict=True):
            tally = self._tally(self._type_of.get(plan.index, plan.dialog_type))  # the type the plan is
            tally.in_flight -= 1
            tally.decided += 1
            if dialog.accepted:
                tally.accepted += 1
            else:
                tally.rejected_by[dialog.rejected_by or "unknown"] += 1
        for kind, tally in list(self.tallies.items()):  # its share of the budget is out: the others take what it lacks
            if tally.planned >= tally.budget and tally.accepted + tally.in_flight < tally.quota:
                self.given_up.add(kind)

    def shortfalls(self) -> list[str]:
        """One line per type that can no longer reach its floor (:meth:`floor`), each said once; and one when the
        types given up cannot be made up by the others within their shares (overfill off)."""
        lines = []
        if self.crowded and "(mix)" not in self.reported:
            self.reported.add("(mix)")
            short = ", ".join(f"{kind} ({self.tallies[kind].accepted} of {self.tallies[kind].quota}, mostly rejected "
                              f"by {self._top_check(kind)})" for kind in sorted(self.given_up)) or "none"
            accepted = sum(t.accepted for t in self.tallies.values())
            lines.append(f"the dialog mix cannot reach {self.target} dialogs: short of their quotas: {short}; every "
                         f"other type is at the largest share mix_tolerance {self.tolerance} allows "
                         f"({accepted} accepted)")
        for kind, tally in self.tallies.items():
            floor = self.floor(kind)
            if kind in self.reported or tally.accepted >= floor:
                continue
            left = max(0, tally.budget - tally.planned) if kind not in self.given_up else 0
            if kind in self.given_up:
                best = tally.accepted + tally.in_flight
            elif tally.decided >= MIN_EVIDENCE:
                best = tally.accepted + (tally.in_flight + left) * wilson_upper(tally.accepted, tally.decided)
            else:
                continue
            if best >= floor:
                continue
            self.reported.add(kind)
            check, count = self._top_check(kind), tally.rejected_by.most_common(1)[0][1] if tally.rejected_by else 0
            rate = f"{tally.accepted / tally.decided:.0%}" if tally.decided else "none decided"
            lines.append(f"dialog type {kind} cannot reach its share of the mix: {tally.accepted} of {tally.decided} "
                         f"accepted ({rate}), mostly rejected by {check} ({count} dialogs); with {left} of its "
                         f"{tally.budget} attempts left it ends below the {floor} the expectation suite needs "
                         f"(quota {tally.quota}, mix_tolerance {self.tolerance})")
        return lines

    def _top_check(self, kind: str) -> str:
        rejected_by = self.tallies[kind].rejected_by
        return rejected_by.most_common(1)[0][0] if rejected_by else "none"
