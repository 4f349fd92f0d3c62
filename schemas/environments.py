"""Stateful environments the LLM designs as data, task blueprints, and the agentic dialog record.

A *synthesised environment* gives a family of related APIs (a subtree of the context tree) a state and
deterministic effects, written by the LLM as structured output (:class:`EnvironmentProposal`) and executed by the
platform's own interpreter (:mod:`tasks.environments.declarative`); no code the model writes is ever run.

* The state is a set of **collections** (:class:`CollectionSpec`): records with typed scalar fields, one of them
  the key that identifies a record.
* Each API's **effect** (:class:`EffectSpec`) is one to four **steps** (:class:`StepSpec`), each a declarative
  operation on one collection: ``read`` (the record with a key; it must exist), ``filter`` (the records meeting
  conditions), ``insert`` (a new record; its key must be free), ``update`` (set or add to fields of the record with
  a key) or ``delete`` (the record with a key). A step's ``require`` conditions are preconditions on its record; a
  failed one stops the call with its message and changes nothing. The result is built from one step's record(s).
* A value (:class:`ValueRef`) is an API argument, a literal, a field of the step's own record, a field of the
  previous step's record, or a newly generated key.

As in :mod:`schemas.llm_outputs`, the answer models are valid under OpenAI's strict structured outputs: every field
required (optional ones are nullable), objects closed, no free-form maps: records are lists of ``{field, value}``
pairs and arguments lists of ``{name, value}`` pairs with scalar values. Their base class is this module's own
(``_EnvAnswer``), not ``llm_outputs._Answer``: that one's subclasses are the stages' own answer models.

A :class:`Blueprint` is a task for an environment: the user's goal, the ground-truth action sequence and the
outputs the user must be told. :class:`AgenticDialog` is the dialog record of an accepted trajectory, with the
environment's id, initial state, ground-truth actions and final-state diff in ``meta``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.records import Dialog

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Goal = Annotated[str, StringConstraints(min_length=10, max_length=600)]
OutputText = Annotated[str, StringConstraints(min_length=1, max_length=80)]
Scalar = str | int | float | bool | None

FieldType = Literal["string", "integer", "number", "boolean"]
Operation = Literal["read", "filter", "insert", "update", "delete"]
Comparison = Literal["eq", "ne", "lt", "le", "gt", "ge", "contains"]
ValueSource = Literal["argument", "literal", "record", "previous", "generated"]

DESTRUCTIVE_OPERATIONS: frozenset[str] = frozenset({"update", "delete"})
WRITE_OPERATIONS: frozenset[str] = frozenset({"insert", "update", "delete"})


class _EnvAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------ the state schema


class FieldSpec(_EnvAnswer):
    name: Ident = Field(description="snake_case field name")
    type: FieldType
    description: Label


class CollectionSpec(_EnvAnswer):
    """A collection of records, e.g. books, each identified by its key field."""

    name: Ident = Field(description="snake_case plural noun, e.g. books")
    key_field: Ident = Field(description="The field whose value identifies a record (one of fields)")
    fields: list[FieldSpec] = Field(min_length=1, max_length=8)


class FieldValue(_EnvAnswer):
    field: Ident
    value: Scalar = Field(description="A value of the field's type")


class InitialRecord(_EnvAnswer):
    collection: Ident
    values: list[FieldValue] = Field(description="A value for every field of the collection", min_length=1,
                                     max_length=8)


# ---------------------------------------------------------------------------------------------- the effects


class ValueRef(_EnvAnswer):
    """Where a value comes from."""

    source: ValueSource = Field(description="argument: an API parameter; literal: a constant; record: a field of "
                                            "this step's record; previous: a field of the previous step's record; "
                                            "generated: a new unused key")
    name: Ident | None = Field(description="The parameter (argument) or field (record, previous); else null")
    literal: Scalar = Field(description="The constant when source is literal, else null")


class Condition(_EnvAnswer):
    """``record.field <op> value``; on a precondition, ``message`` is the error when it does not hold."""

    field: Ident
    op: Comparison
    value: ValueRef
    message: Text = Field(description="Error returned when the condition fails, e.g. 'book is already on loan'")


class Assignment(_EnvAnswer):
    field: Ident
    op: Literal["set", "add"] = Field(description="set: replace the value; add: add a number to a numeric field")
    value: ValueRef


class StepSpec(_EnvAnswer):
    operation: Operation
    collection: Ident
    key: ValueRef | None = Field(description="read/update/delete: the key of the record; insert: the new key; "
                                             "filter: null")
    where: list[Condition] = Field(description="filter: conditions every matching record meets; else empty",
                                   max_length=4)
    require: list[Condition] = Field(description="read/update/delete: preconditions on the record; else empty",
                                     max_length=4)
    assignments: list[Assignment] = Field(description="insert: the new record's fields (besides the key); "
                                                      "update: the changes; else empty", max_length=8)


class ReturnedField(_EnvAnswer):
    name: Ident = Field(description="Property of the API's result")
    value: ValueRef


class EffectSpec(_EnvAnswer):
    """What one API does to the state and what it returns."""

    api: Ident = Field(description="The API's name")
    steps: list[StepSpec] = Field(min_length=1, max_length=4)
    result_step: int = Field(description="0-based index of the step whose record(s) the result is built from")
    list_property: Ident | None = Field(description="When the result step is a filter: the result property "
                                                    "holding the list of matching records; else null")
    returns: list[ReturnedField] = Field(description="Properties of the result (of each listed record for a "
                                                     "filter)", min_length=1, max_length=8)


class EnvironmentProposal(_EnvAnswer):
    """The LLM's design of a stateful environment for a family of APIs."""

    name: Ident = Field(description="snake_case name of the environment, e.g. library")
    description: Text
    collections: list[CollectionSpec] = Field(min_length=1, max_length=4)
    initial_records: list[InitialRecord] = Field(min_length=1, max_length=24)
    effects: list[EffectSpec] = Field(description="One effect per API", min_length=1, max_length=8)


# --------------------------------------------------------------------------------------------- blueprints


class ArgumentValue(_EnvAnswer):
    name: Ident
    value: Scalar


class BlueprintAction(_EnvAnswer):
    api: Ident
    arguments: list[ArgumentValue] = Field(max_length=8)

    def argument_dict(self) -> dict[str, Any]:
        return {a.name: a.value for a in self.arguments}


class BlueprintProposal(_EnvAnswer):
    """A task for an environment, written before any conversation."""

    user_goal: Goal = Field(description="What the user wants, in the user's words, with every value the actions "
                                        "need (ids, names, amounts)")
    changes_state: bool = Field(description="true when the goal asks for something to be created, changed or "
                                            "removed")
    actions: list[BlueprintAction] = Field(description="The calls, in order, that achieve the goal",
                                           min_length=1, max_length=8)
    outputs: list[OutputText] = Field(description="Values the assistant must tell the user, copied from the "
                                                  "calls' results; empty when nothing must be reported",
                                      max_length=4)


class SimulatedUserTurn(_EnvAnswer):
    """The user agent's next message in an agentic conversation."""

    message: Annotated[str, StringConstraints(min_length=1, max_length=600)] = Field(
        description="What the user says next, in the user's own words")
    finished: bool = Field(description="true when the goal is reached (or cannot be) and the user ends the chat")


ANSWER_MODELS: tuple[type[BaseModel], ...] = (EnvironmentProposal, BlueprintProposal, SimulatedUserTurn)


# ------------------------------------------------------------------------------------ records of the platform


class Action(BaseModel):
    """One ground-truth call."""

    api: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Blueprint(BaseModel):
    blueprint_id: str
    env_id: str
    user_goal: str
    changes_state: bool
    actions: list[Action]
    outputs: list[str]

    @classmethod
    def from_proposal(cls, proposal: BlueprintProposal, blueprint_id: str, env_id: str) -> Blueprint:
        return cls(blueprint_id=blueprint_id, env_id=env_id, user_goal=proposal.user_goal,
                   changes_state=proposal.changes_state,
                   actions=[Action(api=a.api, arguments=a.argument_dict()) for a in proposal.actions],
                   outputs=list(proposal.outputs))


class AgenticDialog(Dialog):
    """An accepted (or rejected) trajectory. ``meta``: ``env_id``, ``initial_state``, ``ground_truth_actions``,
    ``final_state_diff`` (paths the conversation changed, with before/after values), ``blueprint_id``."""

    meta: dict[str, Any] = Field(default_factory=dict)
