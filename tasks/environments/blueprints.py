"""Environments proposed for API families, and task blueprints proposed, executed and reviewed (APIGen-MT phase 1).

Each step is "build the prompt / parse the output" (as distilabel's tasks are), with the LLM gateway passed in:

* :func:`api_families` groups accepted APIs by the context-tree node above their functionality leaves (a subtree of
  the tree: the APIs of one sub-domain, else of one domain).
* :func:`environment_messages` asks for an :class:`~schemas.environments.EnvironmentProposal` for one family (the
  effect language explained, one effect of :mod:`tasks.environments.library_example` quoted);
  :func:`parse_environment` turns the answer into an :class:`EnvironmentRecord`, rejected with the validator's reason
  (``environment_valid_v1``) when the design does not validate.
* :func:`blueprint_messages` asks for a :class:`~schemas.environments.BlueprintProposal`: a user goal, the
  ground-truth actions and the outputs the user must be told. :func:`execute_blueprint` runs the actions from the
  initial state in the sandbox and rejects a blueprint that names an unknown tool (``blueprint_unknown_tool_v1``),
  whose actions fail or run past a limit (``blueprint_execution_v1``, or the sandbox's check), that changes nothing
  when its goal asks for a change or neither changes nor reports anything (``blueprint_no_effect_v1``), or whose
  outputs no action returned (``blueprint_outputs_v1``).
* :func:`review_blueprints`: the model layer, a committee of LLM judges with the voting of
  :mod:`tasks.verification.model_judges` (``votes`` seeds per judge, a strict majority of the valid answers must
  pass): ``llm_blueprint_v1`` (the actions do what the goal asks, nothing more, and the outputs answer it) and the
  existing ``llm_hallucination_v1`` (every argument value is in the goal or an earlier result).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from schemas.environments import Blueprint, BlueprintProposal, EnvironmentProposal
from schemas.judge_outputs import JudgeAnswer
from schemas.records import APISpec, Outcome, ToolCall, TreeNode
from schemas.samples import Sample, SampleTurn, ToolSpec
from tasks.environments.declarative import (
    CALL_FAILED_CHECK,
    DEFAULT_LIMITS,
    ENVIRONMENT_CHECK,
    EnvironmentSpec,
    Limits,
    State,
    initial_state,
    validation_problem,
)
from tasks.environments.executable import Environment, EnvironmentSession, coerce_arguments, diff, start_state
from tasks.environments.library_example import library_proposal_data
from tasks.verification.model_judges import HALLUCINATION, Judge, Messages, judge_samples, render_sample
from toolace.llm.gateway import LLMGateway, Structured

STAGE = "agentic_environments"
UNKNOWN_TOOL_CHECK = "blueprint_unknown_tool_v1"
EXECUTION_CHECK = "blueprint_execution_v1"
NO_EFFECT_CHECK = "blueprint_no_effect_v1"
OUTPUTS_CHECK = "blueprint_outputs_v1"
BLUEPRINT_JUDGE_CHECK = "llm_blueprint_v1"
ENVIRONMENT_MAX_TOKENS = 3000
STATE_CHARS = 4000  # the initial state as shown in a blueprint prompt


# ----------------------------------------------------------------------------------------------- families


def api_families(apis: Sequence[APISpec], nodes: Sequence[TreeNode], min_size: int = 2,
                 max_size: int = 6) -> list[list[APISpec]]:
    """Accepted APIs grouped by the parent of their first tree node (their sub-domain), in the order first seen;
    a group smaller than ``min_size`` joins its domain's group; groups are cut into pieces of ``max_size``."""
    by_id = {n.node_id: n for n in nodes}
    groups: dict[str, list[APISpec]] = defaultdict(list)
    for api in apis:
        if not api.accepted:
            continue
        node = by_id.get(api.node_ids[0]) if api.node_ids else None
        parent = node.parent_id if node is not None and node.parent_id else None
        groups[parent or f"domain:{api.domain}"].append(api)
    merged: dict[str, list[APISpec]] = defaultdict(list)
    for key, members in groups.items():
        if len(members) >= min_size:
            merged[key].extend(members)
        else:
            merged[f"domain:{members[0].domain}"].extend(members)
    families: list[list[APISpec]] = []
    for members in merged.values():
        unique = list({a.name: a for a in members}.values())  # one API per name: effects are keyed by name
        for start in range(0, len(unique), max_size):
            chunk = unique[start:start + max_size]
            if len(chunk) >= min_size:
                families.append(chunk)
    return families


def family_path(family: Sequence[APISpec], nodes: Sequence[TreeNode]) -> list[str]:
    """The tree path above the family (domain first), and its functionalities."""
    by_id = {n.node_id: n for n in nodes}
    path: list[str] = []
    leaves: list[str] = []
    for api in family:
        for node_id in api.node_ids:
            node = by_id.get(node_id)
            if node is None:
                continue
            if node.is_functionality:
                leaves.append(node.name)
            chain: list[str] = []
            parent = by_id.get(node.parent_id) if node.parent_id else None
            while parent is not None and len(chain) < 8:
                chain.insert(0, parent.name)
                parent = by_id.get(parent.parent_id) if parent.parent_id else None
            if len(chain) > len(path):
                path = chain
    return [*path, *dict.fromkeys(leaves)]


# ---------------------------------------------------------------------------------------------- environments


def _api_entry(api: APISpec) -> str:
    return json.dumps({"name": api.name, "description": api.description, "parameters": api.parameters,
                       "result_schema": api.result_schema}, ensure_ascii=False)


EFFECT_RULES = """\
Design the state and the effects:
- collections: records with typed fields (string, integer, number, boolean); key_field names the field that
  identifies a record. Use the APIs' parameter names as field names where they mean the same thing.
- initial_records: 4 to 12 realistic records, each with a value for every field of its collection.
- effects: exactly one per API, named by the API. An effect has 1 to 4 steps, each on one collection:
  read (the record whose key is given; it must exist), filter (records meeting every 'where' condition),
  insert (a new record; key usually {"source": "generated"}), update (set fields, or add a number to a numeric
  field, of the record with the key), delete (the record with the key). 'require' lists preconditions on the
  record (each with the error message returned when it fails).
- A value is {"source": "argument", "name": <parameter>} (an API argument), {"source": "literal", "literal": v},
  {"source": "record", "name": <field>} (the step's own record), {"source": "previous", "name": <field>}
  (the previous step's record) or {"source": "generated"} (only as an insert's key); unused keys are null.
- result_step: the step whose record(s) build the result; returns: every property of the API's result_schema,
  each from a value. When the result step is a filter, list_property names the result_schema's array property.
Example effect (a library's checkout_book):
"""


def environment_messages(family: Sequence[APISpec], nodes: Sequence[TreeNode]) -> Messages:
    example = next(e for e in library_proposal_data()["effects"] if e["api"] == "checkout_book")
    path = " > ".join(family_path(family, nodes)) or family[0].domain
    apis = "\n".join(f"- {_api_entry(a)}" for a in family)
    return [
        {"role": "system", "content": "You design executable, stateful test environments for function-calling "
         "APIs. The platform executes your design with its own interpreter; answer with the JSON object requested."},
        {"role": "user", "content": f"Context (domain > ... > functionalities): {path}\n\nAPIs:\n{apis}\n\n"
         f"{EFFECT_RULES}{json.dumps(example, ensure_ascii=False)}"},
    ]


class EnvironmentRecord(Outcome):
    """A proposed environment: the validated spec, or the reason it was rejected."""

    env_id: str
    family: list[str] = Field(description="The API names of the family")
    environment: EnvironmentSpec | None = None
    source: str = Field("synthesised", description="synthesised, or mcp (tasks.environments.mcp_environments)")


def parse_environment(answer: Structured[EnvironmentProposal] | EnvironmentProposal, family: Sequence[APISpec],
                      limits: Limits = DEFAULT_LIMITS) -> EnvironmentRecord:
    """An answer as an environment, validated (see :func:`tasks.environments.declarative.validation_problem`)."""
    raws = answer.raw_outputs if isinstance(answer, Structured) else []
    names = [a.name for a in family]
    proposal = answer.value if isinstance(answer, Structured) else answer
    if proposal is None:
        assert isinstance(answer, Structured)
        record = EnvironmentRecord(env_id="", family=names, raw_outputs=raws)
        record.reject(answer.check or ENVIRONMENT_CHECK, answer.error or "no environment proposed")
        return record
    env = EnvironmentSpec.from_proposal(proposal, list(family))
    record = EnvironmentRecord(env_id=env.env_id, family=names, raw_outputs=raws, environment=env)
    problem = validation_problem(env, limits)
    if problem:
        record.reject(ENVIRONMENT_CHECK, problem)
    return record


async def propose_environment(family: Sequence[APISpec], nodes: Sequence[TreeNode], gateway: LLMGateway,
                              limits: Limits = DEFAULT_LIMITS, sample: int = 0) -> EnvironmentRecord:
    answer = await gateway.structured(EnvironmentProposal, environment_messages(family, nodes), stage=STAGE,
                                      max_tokens=ENVIRONMENT_MAX_TOKENS, sample=sample)
    return parse_environment(answer, family, limits)


# ------------------------------------------------------------------------------------------------ blueprints


def _state_text(state: State) -> str:
    text = json.dumps({c: list(r.values()) for c, r in state.items()}, ensure_ascii=False)
    return text if len(text) <= STATE_CHARS else f"{text[:STATE_CHARS]} [... {len(text) - STATE_CHARS} chars cut]"


def _initial_state_text(env: Environment) -> str:
    return _state_text(initial_state(env)) if isinstance(env, EnvironmentSpec) else env.state_text(STATE_CHARS)


def blueprint_messages(env: Environment, index: int = 0, guidance: str = "") -> Messages:
    """The prompt for task ``index`` of an environment (the kind of task cycles with the index). ``guidance``: loss
    steering's instruction (:func:`tasks.environments.agentic_guidance.blueprint_guidance`: harder or simpler than a
    task the target model found too easy or too hard), which then replaces the kind."""
    apis = "\n".join(f"- {json.dumps({'name': t.name, 'description': t.description, 'parameters': t.parameters}, ensure_ascii=False)}"  # noqa: E501
                     for t in env.tools)
    kinds = ("a change the user wants made (create, update or remove something), then a report of the result",
             "information the user wants looked up, possibly in several steps", "two related requests at once")
    role = "a customer-service assistant" if isinstance(env, EnvironmentSpec) else "an assistant"
    task = f"a new task. {guidance}" if guidance else f"{kinds[index % len(kinds)]}."
    return [
        {"role": "system", "content": f"You write realistic tasks for {role} that uses tools. "
         "Answer with the JSON object requested."},
        {"role": "user", "content": f"Environment: {env.name}: {env.description}\nTools:\n{apis}\n\nCurrent "
         f"state:\n{_initial_state_text(env)}\n\nWrite task {index + 1}: {task} "
         "user_goal: what the user wants, in the user's words, giving every value the actions need (ids, names) "
         "from the state above. actions: the tool calls, in order, that achieve exactly that goal and nothing "
         "else. outputs: the values from the calls' results the assistant must tell the user (copy them "
         "exactly)."},
    ]


class BlueprintRecord(Outcome):
    """A proposed blueprint, its execution from the initial state, and the verdict."""

    blueprint: Blueprint
    results: list[dict[str, Any]] = Field(default_factory=list)
    final_state: State = Field(default_factory=dict)
    diff: list[dict[str, Any]] = Field(default_factory=list, description="Changes from the initial state")
    executed: bool = Field(False, description="The actions were run (the blueprint named only known tools)")


def blueprint_id(env_id: str, proposal: BlueprintProposal) -> str:
    return "bp_" + hashlib.sha1(f"{env_id}:{proposal.model_dump_json()}".encode()).hexdigest()[:12]


def parse_blueprint(answer: Structured[BlueprintProposal] | BlueprintProposal, env: Environment) -> BlueprintRecord:
    raws = answer.raw_outputs if isinstance(answer, Structured) else []
    proposal = answer.value if isinstance(answer, Structured) else answer
    if proposal is None:
        assert isinstance(answer, Structured)
        empty = Blueprint(blueprint_id="bp_none", env_id=env.env_id, user_goal="", changes_state=False, actions=[],
                          outputs=[])
        record = BlueprintRecord(blueprint=empty, raw_outputs=raws)
        record.reject(answer.check or EXECUTION_CHECK, answer.error or "no blueprint proposed")
        return record
    blueprint = Blueprint.from_proposal(proposal, blueprint_id(env.env_id, proposal), env.env_id)
    if not isinstance(env, EnvironmentSpec):  # an external tool's schema may want what a strict answer cannot say
        for action in blueprint.actions:
            action.arguments = coerce_arguments(env, action.api, action.arguments)
    return BlueprintRecord(blueprint=blueprint, raw_outputs=raws)


def _scalars(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _scalars(item)]
    if isinstance(value, list):
        return [v for item in value for v in _scalars(item)]
    return [value]


def normalise(text: Any) -> str:
    if isinstance(text, bool):
        text = "true" if text else "false"
    elif isinstance(text, float) and text.is_integer():
        text = int(text)
    return " ".join(str(text).split()).lower()


def output_found(output: str, values: Sequence[Any]) -> bool:
    """Whether a stated output is one of the values returned (or contained in one)."""
    wanted = normalise(output)
    return any(wanted == normalise(v) or (isinstance(v, str) and wanted in normalise(v)) for v in values
               if v is not None)


def execute_blueprint(record: BlueprintRecord, env: Environment, session: EnvironmentSession,
                      limits: Limits = DEFAULT_LIMITS) -> BlueprintRecord:
    """Run the record's actions from the initial state in the sandbox and give the rule verdict (see the module
    docstring). ``record`` is updated and returned."""
    if not record.accepted:
        return record
    bp = record.blueprint
    names = {t.name for t in env.tools}
    for n, action in enumerate(bp.actions):
        if action.api not in names:
            record.reject(UNKNOWN_TOOL_CHECK, f"action {n} names unknown tool {action.api!r}")
            return record
    execution = session.run(env, [(a.api, a.arguments) for a in bp.actions], limits)
    record.executed = True
    record.results = execution.results
    if execution.failure:
        check = execution.failed_check or EXECUTION_CHECK  # a limit or the sandbox keeps its own check
        record.reject(EXECUTION_CHECK if check == CALL_FAILED_CHECK else check, execution.failure)
        return record
    record.final_state = execution.final_state
    record.diff = [d.as_dict() for d in diff(env, start_state(env), execution.final_state)]
    if bp.changes_state and not record.diff:
        record.reject(NO_EFFECT_CHECK, "the goal asks for a change but the actions change nothing")
    elif not record.diff and not bp.outputs:
        record.reject(NO_EFFECT_CHECK, "the actions change nothing and the blueprint reports nothing")
    else:
        values = [v for result in execution.results for v in _scalars(result)]
        missing = [o for o in bp.outputs if not output_found(o, values)]
        if missing:
            record.reject(OUTPUTS_CHECK, f"output {missing[0]!r} is in no action's result")
    return record


async def propose_blueprints(env: Environment, count: int, gateway: LLMGateway, sample_base: int = 0,
                             guidance: str = "") -> list[BlueprintRecord]:
    """``count`` blueprints for ``env`` (``guidance``: loss steering's instruction, see :func:`blueprint_messages`)."""
    answers = await asyncio.gather(*(
        gateway.structured(BlueprintProposal, blueprint_messages(env, k, guidance), stage=STAGE,
                           sample=sample_base + k)
        for k in range(count)))
    return [parse_blueprint(a, env) for a in answers]


# ---------------------------------------------------------------------------------------------- the committee


def blueprint_sample(record: BlueprintRecord, env: Environment, index: int = 0) -> Sample:
    """The blueprint as a sample the judges read: the goal as the user's turn, the actions as one call turn each
    with its real result, and the outputs as the final answer."""
    bp = record.blueprint
    turns: list[SampleTurn] = [SampleTurn(role="user", content=bp.user_goal)]
    for n, (action, result) in enumerate(zip(bp.actions, record.results, strict=False)):
        call = ToolCall(id=f"call_{n}", name=action.api, arguments=action.arguments)
        turns.append(SampleTurn(role="assistant", tool_calls=[call]))
        turns.append(SampleTurn(role="tool", tool_call_id=call.id, name=action.api,
                                content=json.dumps(result, ensure_ascii=False)))
    final = "; ".join(bp.outputs) if bp.outputs else "Done."
    turns.append(SampleTurn(role="assistant", content=f"(tells the user) {final}"))
    return Sample(index=index, id=bp.blueprint_id,
                  tools=[ToolSpec(name=t.name, description=t.description, parameters=t.parameters,
                                  result_schema=t.result_schema) for t in env.tools], turns=turns)


def blueprint_review_messages(sample: Sample) -> Messages:
    question = (
        "This is a task blueprint: the user's goal, the ground-truth tool calls with their real results, and what "
        "the assistant must tell the user. Do the calls achieve exactly what the goal asks (no call missing, no "
        "call the goal did not ask for, in particular no update or deletion the user did not request), is the "
        "goal clear and realistic, and do the outputs answer it? passed is false if any of these fails.")
    return [
        {"role": "system", "content": "You are a task reviewer for function-calling training data: you check one "
         "task. Judge only what is asked, strictly but fairly, and answer with the JSON object requested."},
        {"role": "user", "content": f"{render_sample(sample)}\n\nQUESTION: {question}"},
    ]


BLUEPRINT_JUDGE = Judge(BLUEPRINT_JUDGE_CHECK, lambda s: True, blueprint_review_messages, JudgeAnswer)
COMMITTEE: tuple[Judge, ...] = (BLUEPRINT_JUDGE, HALLUCINATION)


async def review_blueprints(records: Sequence[BlueprintRecord], env: Environment, gateway: LLMGateway,
                            votes: int = 3, judges: Sequence[Judge] = COMMITTEE) -> list[BlueprintRecord]:
    """The committee's verdict on every record the rules passed (updated in place and returned)."""
    todo = [r for r in records if r.accepted]
    outcomes = await judge_samples([blueprint_sample(r, env, i) for i, r in enumerate(todo)], gateway, votes, judges)
    for record, outcome in zip(todo, outcomes, strict=True):
        record.raw_outputs.extend(outcome.raw_outputs)
        if outcome.failures:
            record.reject(outcome.failures[0].check, outcome.failures[0].reason)
    return list(records)

