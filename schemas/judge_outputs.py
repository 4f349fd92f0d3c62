"""Pydantic answer models of the model-layer judges (see :mod:`tasks.verification.model_judges`).

One model per judge, so each request's ``response_format`` carries its own schema name (the model's
class name) and the field descriptions tell the judge what to fill in. As in :mod:`schemas.llm_outputs`,
every field is required and objects are closed, which strict JSON-schema modes need. The evidence comes
before the verdict in every schema (``reason`` before ``passed``; the hallucination judge lists the
ungrounded values first), so a model that writes the fields in order reasons before it decides.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.llm_outputs import _Answer

Reason = Annotated[str, StringConstraints(min_length=1, max_length=300)]
QuotedValue = Annotated[str, StringConstraints(min_length=1, max_length=120)]


class JudgeAnswer(_Answer):
    """A judge's verdict on one sub-question about one sample."""

    reason: Reason = Field(
        description="One or two short sentences: what you checked and, if it fails, exactly what is wrong"
    )
    passed: bool = Field(description="true when the sample meets the requirement, false when it does not")

    def failed(self) -> bool:
        return not self.passed

    def failure_reason(self) -> str:
        return self.reason


class _UngroundedValues(_Answer):
    ungrounded_values: list[QuotedValue] = Field(
        description="Every argument value that is not grounded, written as name=value (e.g. city=Paris), "
        "a long value shortened to its first 80 characters; empty when all values are grounded",
        max_length=10,
    )


# ``ungrounded_values`` comes first in the schema: pydantic orders fields by the bases in reverse MRO order.
class HallucinationAnswer(JudgeAnswer, _UngroundedValues):
    """Hallucination judge: is every argument value grounded in the dialog?"""

    def failed(self) -> bool:
        # a listed ungrounded value fails the sample even if the judge also said passed=true
        return not self.passed or bool(self.ungrounded_values)

    def failure_reason(self) -> str:
        if not self.ungrounded_values:
            return self.reason
        return f"{self.reason} (ungrounded: {', '.join(self.ungrounded_values)})"


class ConsistencyAnswer(JudgeAnswer):
    """Consistency judge: do the calls and the final answer fulfil what the user asked?"""


class ToolResponseAnswer(JudgeAnswer):
    """Tool-response judge: does every tool response agree with its API definition and its call?"""


class RepetitionAnswer(JudgeAnswer):
    """Repetition judge: is the assistant's text free of repetition loops and meaningless tokens?"""
