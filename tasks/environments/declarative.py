"""The platform's interpreter for synthesised environments: declarative effects over a state of records.

An environment (:class:`EnvironmentSpec`) is a family of APIs, a state schema (collections of typed records with a
key field), an initial state and one effect per API (see :mod:`schemas.environments` for the language). Nothing
the model wrote is ever run as code: :class:`Interpreter` walks the effect's steps over plain dicts, with no
``eval``/``exec`` and no loop a step can control (a ``filter`` visits each record once). It is deterministic: the
same calls from the same state give the same results and state (generated keys are the next free number).

**Bounds** (:class:`Limits`): records per collection, serialised state size, characters of a string value, steps
(each step is one, each record a filter visits one more) and calls per execution. A call that would break one is
stopped with :class:`LimitExceeded` (its reason names the limit) and changes nothing; an execution that hits one
ends there. A call that cannot be served (unknown API, a missing or mistyped argument, a missing record, a failed
precondition) is a :class:`CallFailed`: the caller gets an error result and the state is unchanged (every call is
atomic: its steps work on a copy of the state that replaces it only when every step succeeded).

**Validation** (:func:`validation_problem`): every effect names a known API and every API has one; steps name
existing collections and fields; a value read from an argument names one of the API's parameters; value types
agree with the state schema; the initial state fits the schema; and what each effect returns agrees with the API's
declared result schema, checked statically and by running each effect on the initial state with sample arguments
(drawn from the initial records where a parameter names a field) and validating the result against the schema.
An environment that does not validate is rejected with the first problem as its reason.

Execution in a subprocess with time and memory limits is :mod:`tasks.environments.declarative_sandbox`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from schemas.environments import (
    WRITE_OPERATIONS,
    CollectionSpec,
    Condition,
    EffectSpec,
    EnvironmentProposal,
    InitialRecord,
    StepSpec,
    ValueRef,
)
from schemas.records import APISpec
from toolace.safe_patterns import safe_validator, schema_hazard

ENVIRONMENT_CHECK = "environment_valid_v1"
CALL_FAILED_CHECK = "environment_call_v1"
LIMIT_CHECK = "environment_limits_v1"

State = dict[str, dict[str, dict[str, Any]]]  # collection -> key (as text) -> record


@dataclass(frozen=True)
class Limits:
    """What one execution may use (see the module docstring)."""

    max_records_per_collection: int = 500
    max_state_bytes: int = 500_000
    max_string_chars: int = 2_000
    max_steps: int = 20_000
    max_calls: int = 64


DEFAULT_LIMITS = Limits()


class EnvironmentSpec(BaseModel):
    """A synthesised environment: the APIs and the LLM's design (validated before use)."""

    env_id: str
    name: str
    description: str = ""
    tools: list[APISpec]
    collections: list[CollectionSpec]
    initial_records: list[InitialRecord]
    effects: list[EffectSpec]

    @classmethod
    def from_proposal(cls, proposal: EnvironmentProposal, tools: list[APISpec]) -> EnvironmentSpec:
        body = json.dumps([proposal.model_dump(mode="json"), sorted(t.api_id for t in tools)], sort_keys=True)
        return cls(env_id="env_" + hashlib.sha1(body.encode()).hexdigest()[:12], name=proposal.name,
                   description=proposal.description, tools=tools, collections=proposal.collections,
                   initial_records=proposal.initial_records, effects=proposal.effects)

    def tool(self, name: str) -> APISpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def effect(self, name: str) -> EffectSpec | None:
        return next((e for e in self.effects if e.api == name), None)

    def collection(self, name: str) -> CollectionSpec | None:
        return next((c for c in self.collections if c.name == name), None)


class CallFailed(Exception):
    """The call cannot be served; the message is the error result the caller sees."""


class LimitExceeded(Exception):
    """The execution ran past a bound; the message names it."""


class EnvironmentInvalid(ValueError):
    """The environment does not validate; the message is the reason."""


# ------------------------------------------------------------------------------------------------- types

_FIELD_PY: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                          "boolean": (bool,)}
_DIALECT = {"str": "string", "int": "integer", "float": "number", "double": "number", "bool": "boolean",
            "dict": "object", "list": "array", "tuple": "array"}


def value_fits(value: Any, kind: str) -> bool:
    """Whether a (non-null) value has the field type ``kind``."""
    if kind != "boolean" and isinstance(value, bool):
        return False
    return isinstance(value, _FIELD_PY.get(kind, ()))


def schema_type(schema: Any) -> str | None:
    """The JSON type a parameter/result schema declares (BFCL dialect names read), else None."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return _DIALECT.get(kind, kind) if isinstance(kind, str) else None


def types_agree(source: str | None, target: str | None) -> bool:
    """A value of JSON type ``source`` can be stored as / declared as ``target`` (an integer is a number)."""
    if source is None or target is None:
        return True  # unknown on one side: the sample run checks it
    return source == target or (source == "integer" and target == "number")


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (an error message never carries a huge argument whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def key_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------------------------- the state


def initial_state(env: EnvironmentSpec) -> State:
    """The state the initial records describe (assumed valid: see :func:`validation_problem`)."""
    state: State = {c.name: {} for c in env.collections}
    for record in env.initial_records:
        spec = env.collection(record.collection)
        if spec is None:
            raise EnvironmentInvalid(f"initial record in unknown collection {record.collection!r}")
        values = {f.name: None for f in spec.fields}
        values.update({v.field: v.value for v in record.values})
        state[spec.name][key_text(values[spec.key_field])] = values
    return state


def state_bytes(state: State) -> int:
    return len(json.dumps(state, ensure_ascii=False, separators=(",", ":")))


@dataclass(frozen=True)
class DiffEntry:
    path: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after}


def state_diff(before: State, after: State) -> list[DiffEntry]:
    """Every difference, as paths: ``collection/key`` for a record added or removed, ``collection/key/field`` for
    a changed field (sorted, so two diffs compare)."""
    out: list[DiffEntry] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        for key in sorted(set(old) | set(new)):
            if key not in new:
                out.append(DiffEntry(f"{name}/{key}", old[key], None))
            elif key not in old:
                out.append(DiffEntry(f"{name}/{key}", None, new[key]))
            elif old[key] != new[key]:
                for fname in sorted(set(old[key]) | set(new[key])):
                    a, b = old[key].get(fname), new[key].get(fname)
                    if a != b or type(a) is not type(b):
                        out.append(DiffEntry(f"{name}/{key}/{fname}", a, b))
    return out


# ------------------------------------------------------------------------------------------- the interpreter


@dataclass
class CallResult:
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    changed: list[str] = field(default_factory=list)  # state paths this call changed

    def as_content(self) -> dict[str, Any]:
        """What the caller sees in a tool turn."""
        return self.result if self.ok and self.result is not None else {"error": self.error}


class Interpreter:
    """One execution: a state, the steps and calls spent so far, and the limits."""

    def __init__(self, env: EnvironmentSpec, limits: Limits = DEFAULT_LIMITS, state: State | None = None) -> None:
        self.env = env
        self.limits = limits
        self.state = copy.deepcopy(state) if state is not None else initial_state(env)
        self.steps = 0
        self.calls = 0
        self._working: State = self.state

    def _spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(f"execution ran past {self.limits.max_steps} steps (max_steps)")

    def call(self, name: str, arguments: Any) -> CallResult:
        """Run one API call. A :class:`CallFailed` becomes an error result; :class:`LimitExceeded` propagates."""
        self.calls += 1
        if self.calls > self.limits.max_calls:
            raise LimitExceeded(f"execution ran past {self.limits.max_calls} calls (max_calls)")
        try:
            result, state = self._run(name, arguments)
        except CallFailed as exc:
            return CallResult(ok=False, error=str(exc))
        changed = [d.path for d in state_diff(self.state, state)] if state is not self.state else []
        self.state = state
        return CallResult(ok=True, result=result, changed=changed)

    # -- one call, on a copy of the state

    def _check_arguments(self, api: APISpec, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise CallFailed(f"arguments of {api.name} must be an object")
        params = api.parameters.get("properties") or {}
        required = api.parameters.get("required") or []
        for name in required if isinstance(required, list) else []:
            if name not in arguments:
                raise CallFailed(f"missing required argument {name!r} of {api.name}")
        for name, value in arguments.items():
            if name not in params:
                raise CallFailed(f"unknown argument {shown(name)} of {api.name}")
            kind = schema_type(params[name])
            if value is None:
                if name in required:
                    raise CallFailed(f"argument {name!r} of {api.name} must not be null")
                continue
            if kind in _FIELD_PY and not value_fits(value, kind):
                raise CallFailed(f"argument {name!r} of {api.name} must be {kind}, got {type(value).__name__}")
            enum = params[name].get("enum") if isinstance(params[name], dict) else None
            if isinstance(enum, list) and value not in enum:
                raise CallFailed(f"argument {name!r} of {api.name} must be one of {enum}")
            if isinstance(value, str) and len(value) > self.limits.max_string_chars:
                raise CallFailed(f"argument {name!r} of {api.name} is {len(value)} characters, over the "
                                 f"{self.limits.max_string_chars} limit")
        return arguments

    def _run(self, name: str, arguments: Any) -> tuple[dict[str, Any], State]:
        api = self.env.tool(name)
        effect = self.env.effect(name)
        if api is None or effect is None:
            raise CallFailed(f"unknown tool {shown(name)}")
        args = self._check_arguments(api, arguments)
        state: State = dict(self.state)  # collections replaced (copied) only when a step writes to them
        self._working = state
        copied: set[str] = set()
        selected: list[list[dict[str, Any]]] = []
        for index, step in enumerate(effect.steps):
            self._spend()
            previous = selected[-1][0] if selected and len(selected[-1]) == 1 else None
            records = self._step(step, args, state, copied, previous, index)
            selected.append(records)
        result_records = selected[effect.result_step]
        prev_of_result = selected[effect.result_step - 1][0] if effect.result_step > 0 and \
            len(selected[effect.result_step - 1]) == 1 else None

        def build(record: dict[str, Any]) -> dict[str, Any]:
            return {r.name: self._value(r.value, args, record, prev_of_result, None) for r in effect.returns}

        if effect.list_property is not None:
            self._spend(len(result_records))
            result: dict[str, Any] = {effect.list_property: [build(r) for r in result_records]}
        else:
            result = build(result_records[0])
        if copied:
            self._check_size(state, copied)
            return result, state
        return result, self.state

    def _check_size(self, state: State, written: set[str]) -> None:
        for name in written:
            if len(state[name]) > self.limits.max_records_per_collection:
                raise LimitExceeded(f"collection {name} would hold {len(state[name])} records, over the "
                                    f"{self.limits.max_records_per_collection} limit (max_records_per_collection)")
        size = state_bytes(state)
        if size > self.limits.max_state_bytes:
            raise LimitExceeded(f"state would be {size} bytes, over the {self.limits.max_state_bytes} limit "
                                "(max_state_bytes)")

    def _value(self, ref: ValueRef, args: dict[str, Any], record: dict[str, Any] | None,
               previous: dict[str, Any] | None, collection: str | None) -> Any:
        if ref.source == "argument":
            return args.get(ref.name or "")
        if ref.source == "literal":
            return ref.literal
        if ref.source == "record":
            if record is None:
                raise CallFailed(f"no record to read {ref.name!r} from")
            return record.get(ref.name or "")
        if ref.source == "previous":
            if previous is None:
                raise CallFailed(f"no previous record to read {ref.name!r} from")
            return previous.get(ref.name or "")
        if collection is None:
            raise CallFailed("a generated key outside an insert")
        return self._generated_key(collection)

    def _generated_key(self, collection: str) -> Any:
        spec = self.env.collection(collection)
        assert spec is not None
        kind = next(f.type for f in spec.fields if f.name == spec.key_field)
        taken = set(self._working.get(collection, {}))
        count = len(taken) + 1
        while True:
            candidate: Any = count if kind in ("integer", "number") else f"{collection}_{count}"
            if key_text(candidate) not in taken:
                return candidate
            count += 1

    def _holds(self, condition: Condition, record: dict[str, Any], args: dict[str, Any],
               previous: dict[str, Any] | None) -> bool:
        left = record.get(condition.field)
        right = self._value(condition.value, args, record, previous, None)
        op = condition.op
        if op == "eq":
            return bool(left == right)
        if op == "ne":
            return bool(left != right)
        if op == "contains":
            return isinstance(left, str) and isinstance(right, str) and right.lower() in left.lower()
        if left is None or right is None or isinstance(left, bool) != isinstance(right, bool):
            return False
        numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if not numbers and not (isinstance(left, str) and isinstance(right, str)):
            return False
        if op == "lt":
            return bool(left < right)
        if op == "le":
            return bool(left <= right)
        if op == "gt":
            return bool(left > right)
        return bool(left >= right)

    def _step(self, step: StepSpec, args: dict[str, Any], state: State, copied: set[str],
              previous: dict[str, Any] | None, index: int) -> list[dict[str, Any]]:
        spec = self.env.collection(step.collection)
        assert spec is not None  # validated
        fields = {f.name: f.type for f in spec.fields}
        records = state[spec.name]

        def writable() -> dict[str, dict[str, Any]]:
            if spec.name not in copied:
                state[spec.name] = dict(state[spec.name])
                copied.add(spec.name)
            return state[spec.name]

        if step.operation == "filter":
            self._spend(len(records))
            return [dict(r) for r in records.values()
                    if all(self._holds(c, r, args, previous) for c in step.where)]
        assert step.key is not None  # validated
        key = self._value(step.key, args, None, previous, spec.name if step.operation == "insert" else None)
        if key is None:
            raise CallFailed(f"no key given for {spec.name}")
        if not value_fits(key, fields[spec.key_field]):
            raise CallFailed(f"{spec.key_field} of {spec.name} must be {fields[spec.key_field]}")
        text = key_text(key)
        if step.operation == "insert":
            if text in records:
                raise CallFailed(f"{spec.name} record with {spec.key_field}={shown(key)} already exists")
            new: dict[str, Any] = {f: None for f in fields}
            new[spec.key_field] = key
            for assignment in step.assignments:
                new[assignment.field] = self._assigned(assignment.field, fields[assignment.field],
                                                       self._value(assignment.value, args, new, previous, None))
            writable()[text] = new
            return [dict(new)]
        record = records.get(text)
        if record is None:
            raise CallFailed(f"no {spec.name} record with {spec.key_field}={shown(key)}")
        for condition in step.require:
            if not self._holds(condition, record, args, previous):
                raise CallFailed(condition.message)
        if step.operation == "read":
            return [dict(record)]
        if step.operation == "delete":
            del writable()[text]
            return [dict(record)]
        updated = dict(record)
        for assignment in step.assignments:
            value = self._value(assignment.value, args, record, previous, None)
            if assignment.op == "add":
                current = updated.get(assignment.field) or 0
                if not (isinstance(value, int | float) and not isinstance(value, bool)):
                    raise CallFailed(f"cannot add {shown(value)} to {assignment.field}")
                value = current + value
            updated[assignment.field] = self._assigned(assignment.field, fields[assignment.field], value)
        writable()[text] = updated
        return [dict(updated)]

    def _assigned(self, name: str, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "number" and value_fits(value, "integer"):
            value = float(value) if not isinstance(value, bool) else value
        if not value_fits(value, kind):
            raise CallFailed(f"{name} must be {kind}, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > self.limits.max_string_chars:
            raise CallFailed(f"{name} would be {len(value)} characters, over the {self.limits.max_string_chars} "
                             "limit")
        return value


# ------------------------------------------------------------------------------------------------ executions


class Execution(BaseModel):
    """A sequence of calls run from a state: each call's result, the final state and, when the execution ended
    early, why (``failure``, ``failed_check``; a failed call ends it only with ``stop_on_failure``)."""

    results: list[dict[str, Any]] = Field(default_factory=list)
    ok: list[bool] = Field(default_factory=list)
    changed: list[list[str]] = Field(default_factory=list)
    final_state: State = Field(default_factory=dict)
    failure: str | None = None
    failed_check: str | None = None
    steps: int = 0


def run_calls(env: EnvironmentSpec, calls: list[tuple[str, dict[str, Any]]], limits: Limits = DEFAULT_LIMITS,
              stop_on_failure: bool = True, state: State | None = None) -> Execution:
    """Execute ``calls`` (``(api name, arguments)``) in order from the initial state (or ``state``)."""
    interpreter = Interpreter(env, limits, state)
    execution = Execution()
    for index, (name, arguments) in enumerate(calls):
        try:
            outcome = interpreter.call(name, arguments)
        except LimitExceeded as exc:
            execution.failure, execution.failed_check = f"call {index} ({name}): {exc}", LIMIT_CHECK
            break
        execution.results.append(outcome.as_content())
        execution.ok.append(outcome.ok)
        execution.changed.append(outcome.changed)
        if not outcome.ok and stop_on_failure:
            execution.failure, execution.failed_check = f"call {index} ({name}) failed: {outcome.error}", \
                CALL_FAILED_CHECK
            break
    execution.final_state = interpreter.state
    execution.steps = interpreter.steps
    return execution


# ------------------------------------------------------------------------------------------------ validation


def _check_ref(ref: ValueRef, where: str, api: APISpec, fields: dict[str, str],
               prev_fields: dict[str, str] | None, allow_generated: bool) -> str | None:
    """The JSON type the reference yields (``""`` when unknown), or raises EnvironmentInvalid."""
    params = api.parameters.get("properties") or {}
    if ref.source == "argument":
        if ref.name not in params:
            raise EnvironmentInvalid(f"{where}: argument {ref.name!r} is not a parameter of {api.name}")
        kind = schema_type(params[ref.name])
        if kind in ("object", "array"):
            raise EnvironmentInvalid(f"{where}: argument {ref.name!r} of {api.name} is {kind}, not a scalar")
        return kind
    if ref.source == "literal":
        value = ref.literal
        if value is None:
            return None
        return "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else \
            "number" if isinstance(value, float) else "string"
    if ref.source == "record":
        if ref.name not in fields:
            raise EnvironmentInvalid(f"{where}: field {ref.name!r} is not in the collection")
        return fields[ref.name]
    if ref.source == "previous":
        if prev_fields is None:
            raise EnvironmentInvalid(f"{where}: 'previous' needs a previous step that selects one record")
        if ref.name not in prev_fields:
            raise EnvironmentInvalid(f"{where}: field {ref.name!r} is not in the previous step's collection")
        return prev_fields[ref.name]
    if not allow_generated:
        raise EnvironmentInvalid(f"{where}: a generated value is only an insert's key")
    return ""


def _check_collections(env: EnvironmentSpec) -> None:
    names = [c.name for c in env.collections]
    if len(set(names)) != len(names):
        raise EnvironmentInvalid("two collections share a name")
    for spec in env.collections:
        fnames = [f.name for f in spec.fields]
        if len(set(fnames)) != len(fnames):
            raise EnvironmentInvalid(f"collection {spec.name}: two fields share a name")
        if spec.key_field not in fnames:
            raise EnvironmentInvalid(f"collection {spec.name}: key field {spec.key_field!r} is not one of its fields")


def _check_initial(env: EnvironmentSpec, limits: Limits) -> None:
    keys: dict[str, set[str]] = {c.name: set() for c in env.collections}
    for n, record in enumerate(env.initial_records):
        spec = env.collection(record.collection)
        if spec is None:
            raise EnvironmentInvalid(f"initial record {n}: unknown collection {record.collection!r}")
        fields = {f.name: f.type for f in spec.fields}
        for value in record.values:
            if value.field not in fields:
                raise EnvironmentInvalid(f"initial record {n}: {spec.name} has no field {value.field!r}")
            if value.value is not None and not value_fits(value.value, fields[value.field]):
                raise EnvironmentInvalid(f"initial record {n}: {spec.name}.{value.field} must be "
                                         f"{fields[value.field]}, got {shown(value.value)}")
        key = next((v.value for v in record.values if v.field == spec.key_field), None)
        if key is None:
            raise EnvironmentInvalid(f"initial record {n}: no value for the key field {spec.name}.{spec.key_field}")
        if key_text(key) in keys[spec.name]:
            raise EnvironmentInvalid(f"initial record {n}: duplicate key {spec.key_field}={shown(key)} in {spec.name}")
        keys[spec.name].add(key_text(key))
    for name, taken in keys.items():
        if len(taken) > limits.max_records_per_collection:
            raise EnvironmentInvalid(f"collection {name} starts with {len(taken)} records, over the "
                                     f"{limits.max_records_per_collection} limit")
    size = state_bytes(initial_state(env))
    if size > limits.max_state_bytes:
        raise EnvironmentInvalid(f"the initial state is {size} bytes, over the {limits.max_state_bytes} limit")


def _check_step(env: EnvironmentSpec, api: APISpec, step: StepSpec, where: str,
                prev_fields: dict[str, str] | None) -> dict[str, str]:
    spec = env.collection(step.collection)
    if spec is None:
        raise EnvironmentInvalid(f"{where}: unknown collection {step.collection!r}")
    fields = {f.name: f.type for f in spec.fields}
    op = step.operation
    if op == "filter":
        if step.key is not None:
            raise EnvironmentInvalid(f"{where}: a filter selects by conditions, not by a key")
    elif step.key is None:
        raise EnvironmentInvalid(f"{where}: a {op} needs the key of its record")
    else:
        kind = _check_ref(step.key, f"{where} key", api, fields, prev_fields, allow_generated=op == "insert")
        if not types_agree(kind or None, fields[spec.key_field]):
            raise EnvironmentInvalid(f"{where}: key is {kind}, but {spec.name}.{spec.key_field} is "
                                     f"{fields[spec.key_field]}")
        if step.key.source == "record":
            raise EnvironmentInvalid(f"{where}: a key cannot come from the record it selects")
    if step.where and op != "filter":
        raise EnvironmentInvalid(f"{where}: only a filter has 'where' conditions")
    if step.require and op not in ("read", "update", "delete"):
        raise EnvironmentInvalid(f"{where}: only read, update and delete have preconditions")
    if step.assignments and op not in ("insert", "update"):
        raise EnvironmentInvalid(f"{where}: only insert and update assign fields")
    for c in [*step.where, *step.require]:
        if c.field not in fields:
            raise EnvironmentInvalid(f"{where}: condition on unknown field {spec.name}.{c.field}")
        kind = _check_ref(c.value, f"{where} condition on {c.field}", api, fields, prev_fields, False)
        if c.op == "contains" and fields[c.field] != "string":
            raise EnvironmentInvalid(f"{where}: 'contains' on {spec.name}.{c.field}, which is not a string")
        if not (types_agree(kind or None, fields[c.field]) or types_agree(fields[c.field], kind or None)):
            raise EnvironmentInvalid(f"{where}: condition compares {spec.name}.{c.field} ({fields[c.field]}) "
                                     f"with a {kind}")
    for a in step.assignments:
        if a.field not in fields:
            raise EnvironmentInvalid(f"{where}: assignment to unknown field {spec.name}.{a.field}")
        if a.field == spec.key_field:
            raise EnvironmentInvalid(f"{where}: the key field {spec.name}.{a.field} is set by the step's key")
        kind = _check_ref(a.value, f"{where} assignment to {a.field}", api, fields, prev_fields, False)
        if a.op == "add" and (fields[a.field] not in ("integer", "number") or op != "update"):
            raise EnvironmentInvalid(f"{where}: 'add' needs a numeric field of an update, "
                                     f"{spec.name}.{a.field} is {fields[a.field]}")
        if not types_agree(kind or None, fields[a.field]):
            raise EnvironmentInvalid(f"{where}: assigns a {kind} to {spec.name}.{a.field} ({fields[a.field]})")
    return fields


def _check_effect(env: EnvironmentSpec, api: APISpec, effect: EffectSpec) -> None:
    step_fields: list[dict[str, str] | None] = []
    for index, step in enumerate(effect.steps):
        prev = step_fields[-1] if step_fields and effect.steps[index - 1].operation != "filter" else None
        step_fields.append(_check_step(env, api, step, f"effect of {api.name}, step {index}", prev))
    if not 0 <= effect.result_step < len(effect.steps):
        raise EnvironmentInvalid(f"effect of {api.name}: result_step {effect.result_step} is not one of its "
                                 f"{len(effect.steps)} steps")
    result_op = effect.steps[effect.result_step].operation
    if (result_op == "filter") != (effect.list_property is not None):
        raise EnvironmentInvalid(f"effect of {api.name}: list_property is set exactly when the result step is a "
                                 "filter")
    fields = step_fields[effect.result_step] or {}
    prev = step_fields[effect.result_step - 1] if effect.result_step > 0 and \
        effect.steps[effect.result_step - 1].operation != "filter" else None
    names = [r.name for r in effect.returns]
    if len(set(names)) != len(names):
        raise EnvironmentInvalid(f"effect of {api.name}: two returned properties share a name")
    returned = {r.name: _check_ref(r.value, f"effect of {api.name}, returned {r.name}", api, fields, prev, False)
                for r in effect.returns}
    _check_result_schema(api, effect, returned)


def _check_result_schema(api: APISpec, effect: EffectSpec, returned: dict[str, str | None]) -> None:
    schema = api.result_schema
    if schema_type(schema) != "object" or not isinstance(schema.get("properties"), dict):
        raise EnvironmentInvalid(f"result schema of {api.name} is not an object with properties")
    props: dict[str, Any] = schema["properties"]
    required = set(schema.get("required") or [])
    if effect.list_property is not None:
        holder = props.get(effect.list_property)
        if schema_type(holder) != "array":
            raise EnvironmentInvalid(f"effect of {api.name} returns a list in {effect.list_property!r}, which the "
                                     "result schema does not declare as an array")
        missing_top = sorted(required - {effect.list_property})
        if missing_top:
            raise EnvironmentInvalid(f"result schema of {api.name} requires {', '.join(missing_top)}, which the "
                                     "effect does not return")
        items = holder.get("items") if isinstance(holder, dict) else None
        if schema_type(items) != "object" or not isinstance(items.get("properties"), dict):
            return  # the items are not described: the sample run validates what it can
        props, required = items["properties"], set(items.get("required") or [])
    for name, kind in returned.items():
        if name not in props:
            raise EnvironmentInvalid(f"effect of {api.name} returns {name!r}, which its result schema does not "
                                     "declare")
        declared = schema_type(props[name])
        if not types_agree(kind or None, declared):
            raise EnvironmentInvalid(f"effect of {api.name} returns {name!r} as {kind}, its result schema "
                                     f"declares {declared}")
    missing = sorted(required - set(returned))
    if missing:
        raise EnvironmentInvalid(f"result schema of {api.name} requires {', '.join(missing)}, which the effect "
                                 "does not return")


def sample_arguments(env: EnvironmentSpec, api: APISpec, state: State) -> dict[str, Any]:
    """Arguments for a trial call: a parameter named like a field takes that field's value in the first record
    that has it (so a key finds its record), others a value of the parameter's type (its first enum value)."""
    values: dict[str, Any] = {}
    for records in state.values():
        for record in records.values():
            for name, value in record.items():
                if value is not None:
                    values.setdefault(name, value)
    out: dict[str, Any] = {}
    params = api.parameters.get("properties") or {}
    required = api.parameters.get("required") or []
    for name, schema in params.items():
        kind = schema_type(schema)
        enum = schema.get("enum") if isinstance(schema, dict) else None
        if isinstance(enum, list) and enum:
            out[name] = enum[0]
        elif name in values and kind in _FIELD_PY and value_fits(values[name], kind):
            out[name] = values[name]
        elif kind in _FIELD_PY:
            out[name] = {"string": "sample", "integer": 1, "number": 1.0, "boolean": True}[kind]
        elif name in required:
            out[name] = [] if kind == "array" else {}
    return out


def validation_problem(env: EnvironmentSpec, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why the environment is rejected, or None when it validates (see the module docstring)."""
    try:
        _check_collections(env)
        _check_initial(env, limits)
        tool_names = [t.name for t in env.tools]
        effect_names = [e.api for e in env.effects]
        for name in effect_names:
            if name not in tool_names:
                raise EnvironmentInvalid(f"effect for unknown API {name!r}")
        for name in tool_names:
            if effect_names.count(name) != 1:
                raise EnvironmentInvalid(f"API {name} has {effect_names.count(name)} effects, not one")
        for api in env.tools:
            hazard = schema_hazard(api.result_schema) or schema_hazard(api.parameters)
            if hazard:
                raise EnvironmentInvalid(f"schema of {api.name}: {hazard}")
            effect = env.effect(api.name)
            assert effect is not None
            _check_effect(env, api, effect)
        state = initial_state(env)
        for api in env.tools:  # a trial run of each effect on the initial state
            interpreter = Interpreter(env, limits, state)
            try:
                outcome = interpreter.call(api.name, sample_arguments(env, api, state))
            except LimitExceeded as exc:
                raise EnvironmentInvalid(f"trial call of {api.name}: {exc}") from None
            if outcome.ok and outcome.result is not None:
                error = next(iter(safe_validator(api.result_schema).iter_errors(outcome.result)), None)
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "/"
                    raise EnvironmentInvalid(f"trial call of {api.name}: the result does not match its result "
                                             f"schema at {where}: {error.message}")
    except EnvironmentInvalid as exc:
        return str(exc)
    return None


def is_destructive(env: EnvironmentSpec, api_name: str) -> bool:
    """Whether the API's effect updates or deletes records."""
    effect = env.effect(api_name)
    return effect is not None and any(s.operation in ("update", "delete") for s in effect.steps)


def writes_state(env: EnvironmentSpec, api_name: str) -> bool:
    effect = env.effect(api_name)
    return effect is not None and any(s.operation in WRITE_OPERATIONS for s in effect.steps)
