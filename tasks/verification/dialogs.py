"""Both verification layers on our own dialogs: the rules first, then the LLM judges on what passed.

Scoring and deciding stay apart: every failure of both layers is recorded in the dialog's verdict; the
dialog is then kept only when there is none, and the first failure names the rejecting check. The judges'
raw outputs join the dialog's own, so a rejection by a judge can be read back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.records import Dialog
from schemas.samples import Problem
from tasks.verification import rules as verification
from tasks.verification.model_judges import JUDGES, judge_samples
from toolace.llm.gateway import LLMGateway


def verdict_row(dialog: Dialog, generated: bool, rules: list[Problem], model: list[Problem],
                judged: bool) -> dict[str, Any]:
    failures = [*rules, *model]
    return {"dialog_id": dialog.dialog_id, "generated": generated, "passed": generated and not failures,
            "rules_passed": generated and not rules, "model_judged": judged,
            "failures": [{"check": f.check, "reason": f.reason,
                          "layer": "model" if f in model else "rules"} for f in failures]}


async def verify_dialogs(dialogs: list[Dialog], gateway: LLMGateway | None, limits: verification.RuleLimits,
                         votes: int = 1) -> tuple[list[Dialog], list[dict[str, Any]]]:
    """(the dialogs with their decision, one verdict row per dialog). ``gateway=None`` runs the rules
    only. Dialogs already rejected upstream are passed through, with a verdict saying they were not
    generated."""
    # the caller's dialogs are left as they were: deciding sets scalar fields and extends raw_outputs, so a
    # shallow copy with its own raw_outputs list is enough (a deep copy of every turn and tool was 2% of a run)
    decided = [d.model_copy(update={"raw_outputs": list(d.raw_outputs)}) for d in dialogs]

    def score_rules() -> dict[str, list[Problem]]:
        return {d.dialog_id: verification.score_dialog(d, limits.max_assistant_chars) if d.accepted else []
                for d in decided}

    # in a worker thread: the rule layer is CPU work, and the event loop carries other batches' requests
    rules = await asyncio.to_thread(score_rules)
    to_judge = [d for d in decided if d.accepted and not rules[d.dialog_id]]
    model: dict[str, list[Problem]] = {}
    if gateway is not None and to_judge:
        samples = [verification.sample_from_dialog(d, i) for i, d in enumerate(to_judge)]
        outcomes = await judge_samples(samples, gateway, votes, JUDGES)
        for dialog, outcome in zip(to_judge, outcomes, strict=True):
            model[dialog.dialog_id] = outcome.failures
            dialog.raw_outputs.extend(outcome.raw_outputs)
    rows = []
    for dialog in decided:
        generated = dialog.accepted
        rows.append(verdict_row(dialog, generated, rules[dialog.dialog_id], model.get(dialog.dialog_id, []),
                                dialog.dialog_id in model))
        verification.decide(dialog, [*rules[dialog.dialog_id], *model.get(dialog.dialog_id, [])])
    return decided, rows
