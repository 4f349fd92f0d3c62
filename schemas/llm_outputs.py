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
ItemType = Literal["string", "integer", "number", "boolean", "object", "none"]
StringFormat = Literal["date", "date-time", "time", "email", "uri", "uuid", "none"]


class GeneratedParameter(_Answer):
    name: Short = Field(description="snake_case parameter name")
    type: ParamType
    description: Phrase
    required: bool
    enum: list[Short] = Field(
        description="Allowed values of a string parameter, or empty", max_length=5
    )
    item_type: ItemType = Field(description="Item type when type is array, else none")


class ConstrainedParameter(GeneratedParameter):
    """A parameter with JSON-Schema constraints (the add-constraints evolution operator)."""

    minimum: float | None = Field(description="Smallest allowed value of a number/integer, or null")
    maximum: float | None = Field(description="Largest allowed value of a number/integer, or null")
    pattern: Annotated[str, StringConstraints(max_length=60)] | None = Field(
        description="Regular expression a string must match, or null"
    )
    format: StringFormat = Field(description="Format of a string value, or none")
    min_items: int | None = Field(description="Fewest items of an array, or null")
    max_items: int | None = Field(description="Most items of an array, or null")


class NestedField(_Answer):
    name: Short = Field(description="snake_case field name")
    type: Literal["string", "integer", "number", "boolean", "array"]
    description: Phrase
    required: bool
    item_type: Literal["string", "integer", "number", "boolean", "none"] = Field(
        description="Item type when type is array, else none"
    )


class NestedParameter(_Answer):
    """A structured parameter: an array of objects, or an object (whose fields may hold arrays)."""

    name: Short = Field(description="snake_case parameter name")
    kind: Literal["array_of_objects", "object"]
    description: Phrase
    required: bool
    fields: list[NestedField] = Field(description="Fields of each object", min_length=2, max_length=4)


class GeneratedResultField(_Answer):
    name: Short = Field(description="snake_case field name of the returned object")
    type: ParamType
    description: Phrase
    item_type: ItemType = Field(description="Item type when type is array, else none")


class GeneratedAPI(_Answer):
    """Evolution: one new API written from a sampled context subtree and an example API."""

    name: Short = Field(description="snake_case function name, e.g. get_hourly_forecast")
    description: Sentence = Field(description="One or two sentences: what the API does")
    parameters: list[GeneratedParameter] = Field(min_length=1, max_length=4)
    result: list[GeneratedResultField] = Field(
        description="Fields the API returns", min_length=1, max_length=4
    )


class ConstrainedAPI(GeneratedAPI):
    """Evolution with the add-constraints operator: parameters carry JSON-Schema constraints."""

    parameters: list[ConstrainedParameter] = Field(min_length=1, max_length=4)


class NestedAPI(GeneratedAPI):
    """Evolution with nesting: one more parameter that is an array of objects or an object."""

    nested_parameter: NestedParameter


class ConstrainedNestedAPI(ConstrainedAPI):
    nested_parameter: NestedParameter


def api_answer_model(constrained: bool, nested: bool) -> type[GeneratedAPI]:
    """The structured answer asked for, by the operators a plan applies."""
    if constrained:
        return ConstrainedNestedAPI if nested else ConstrainedAPI
    return NestedAPI if nested else GeneratedAPI


class UserTurn(_Answer):
    """User agent: the user's next message."""

    message: Annotated[str, StringConstraints(min_length=1, max_length=600)] = Field(
        description="What the user says, in the user's own words"
    )

