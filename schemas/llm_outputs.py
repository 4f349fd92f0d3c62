"""Pydantic models for every structured LLM answer.

The gateway turns each model into the JSON-schema ``response_format`` it sends, so the schema the
server enforces and the validation we run on the answer can never drift apart. Every field is
required (no defaults): strict JSON-schema modes (OpenAI ``strict: true``, grammar-constrained local
servers) need that, and a small model is then forced to fill every field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Short = Annotated[str, StringConstraints(min_length=1, max_length=40)]
Phrase = Annotated[str, StringConstraints(min_length=3, max_length=80)]
Sentence = Annotated[str, StringConstraints(min_length=1, max_length=160)]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentExtraction(_Answer):
    """Speciation: what a document says about APIs, as a domain path and functionalities."""

    describes_functionality: bool = Field(
        description="false for stories, poems or history without functions"
    )
    domain: Short = Field(description="Top-level domain, e.g. Weather or Finance")
    subdomains: list[Short] = Field(
        description="Narrower sub-domains, most general first",
        max_length=2,
    )
    functionalities: list[Phrase] = Field(
        description="Each function described, as a short verb phrase",
        min_length=1,
        max_length=4,
    )


ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]


class GeneratedParameter(_Answer):
    name: Short = Field(description="snake_case parameter name")
    type: ParamType
    description: Phrase
    required: bool
    enum: list[Short] = Field(
        description="Allowed values of a string parameter, or empty", max_length=5
    )
    item_type: Literal["string", "integer", "number", "boolean", "object", "none"] = Field(
        description="Item type when type is array, else none"
    )


class GeneratedResultField(_Answer):
    name: Short = Field(description="snake_case field name of the returned object")
    type: ParamType
    description: Phrase


class GeneratedAPI(_Answer):
    """Evolution: one new API written from a sampled context subtree and an example API."""

    name: Short = Field(description="snake_case function name, e.g. get_hourly_forecast")
    description: Sentence = Field(description="One or two sentences: what the API does")
    parameters: list[GeneratedParameter] = Field(min_length=1, max_length=4)
    result: list[GeneratedResultField] = Field(
        description="Fields the API returns", min_length=1, max_length=4
    )


class UserTurn(_Answer):
    """User agent: the user's next message."""

    message: Annotated[str, StringConstraints(min_length=1, max_length=600)] = Field(
        description="What the user says, in the user's own words"
    )


class JudgeVerdict(_Answer):
    """Model-layer verification: one sub-question answered by an LLM expert."""

    passed: bool
    reason: Sentence
