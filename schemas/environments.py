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

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

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


# ---------------------------------------------------------------------------------------- MCP servers as environments


class McpProbe(BaseModel):
    """One read-only call whose result, taken after the actions, is part of an MCP environment's state: the result's
    text, line by line, without the lines an ``ignore_lines`` pattern matches (RE2, searched anywhere in the line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str = Field(min_length=1, description="The read-only tool called")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments (the workspace path as the "
                                                                        "model sees it, e.g. /workspace)")
    name: str | None = Field(None, description="The state's key for this probe (default: the tool's name)")
    ignore_lines: list[str] = Field(default_factory=list, description="Patterns of lines left out of the state "
                                                                      "(e.g. dates that differ between executions)")

    @property
    def key(self) -> str:
        return self.name or self.tool


class McpEnvironmentSpec(BaseModel):
    """An MCP server run as an environment (``agentic_mcp_servers`` in the run config): how to start it over stdio,
    the folder every execution starts from, and the probes that observe its state.

    For every execution the platform copies ``fixture`` (when given) into a fresh folder and starts the server
    afresh in it, so no two executions share state. ``{workspace}`` in ``command`` and ``env`` values is that
    folder's real path; the model, the probes and the published rows see it as ``workspace`` (``/workspace``):
    call arguments naming that path are rewritten to the real one, and results naming the real one are rewritten
    back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,39}$")] = Field(
        description="The environment's name")
    command: list[str] = Field(min_length=1, description="The stdio server's command line; {workspace} is the "
                                                         "execution's folder")
    env: dict[str, str] = Field(default_factory=dict, description="Variables for the server (beside PATH and HOME), "
                                                                  "e.g. fixed GIT_*_DATE so commits hash the same")
    fixture: str | None = Field(None, description="Folder copied into {workspace} for every execution (a seeded git "
                                                  "repository, say); none = an empty folder")
    workspace: str = Field("/workspace", description="The path the model and the probes use for the folder")
    description: str = Field("", max_length=600, description="What the environment is, for the blueprint prompt")
    probes: list[McpProbe] = Field(min_length=1, description="The read-only calls whose results are the state")
    tools: list[str] = Field(default_factory=list, description="The tools offered to the model; [] = every tool")
    read_only_tools: list[str] = Field(default_factory=list, description="Tools to trust as read-only (probes) "
                                                                         "though the server does not say so")
    parameter_descriptions: dict[str, str] = Field(
        default_factory=dict, description="Descriptions for the offered tools' parameters the server leaves "
                                          "undescribed (every published tool parameter needs one), by parameter name "
                                          "(repo_path) or tool and name (git_add.files)")
    network: bool = Field(False, description="Let the server use the network; off: no network at all")
    start_timeout_s: float = Field(20.0, gt=0, description="Deadline of the server's start (and tools/list)")
    call_timeout_s: float = Field(10.0, gt=0, description="Deadline of one tool call (a probe is one)")
    memory_mb: int = Field(2048, ge=128, description="Address-space limit of the sandbox, its server included")
    cpu_s: int = Field(120, ge=1, description="CPU seconds of the sandbox worker over its life")
    file_mb: int = Field(64, ge=1, description="Largest file the sandbox may write (the fixture's copy included)")

    @model_validator(mode="after")
    def _check(self) -> McpEnvironmentSpec:
        from toolace.safe_patterns import pattern_problem

        if not self.workspace.startswith("/") or self.workspace.rstrip("/") == "" or " " in self.workspace:
            raise ValueError(f"workspace {self.workspace!r} must be an absolute path other than / (no spaces)")
        keys = [p.key for p in self.probes]
        if len(set(keys)) != len(keys):
            raise ValueError(f"probe names must be unique (got {keys}): give repeated tools a name")
        for probe in self.probes:
            for pattern in probe.ignore_lines:
                if problem := pattern_problem(pattern):
                    raise ValueError(f"probe {probe.key}: ignore_lines {problem}")
        return self
