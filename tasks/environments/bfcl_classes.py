"""BFCL's executable classes (file system, messaging, posting, tickets, trading, travel, vehicle control, math) as
built-in environments, run in a sandboxed worker (:mod:`tasks.environments.sandbox`).

The classes are those of the installed ``bfcl-eval`` wheel (``eval_checker/multi_turn_eval/func_source_code/``),
imported in the worker only, one module at a time (the wheel is installed ``--no-deps``: nothing else of it is
imported; ``MathAPI`` needs ``mpmath``). Their semantics mirror bfcl-eval 2026.3.23's
``multi_turn_utils.execute_multi_turn_func_call`` and ``multi_turn_checker`` without its ``eval`` of call strings:

- **Loading** (``load``): each involved class is instantiated with no argument, and, unless stateless
  (``MathAPI``), given ``_load_scenario(deepcopy(initial_config.get(class, {})), long_context=...)``. The methods a
  call may name are the class's documented methods (``data/multi_turn_func_doc/<class>.json``, which are exactly
  its public methods); a name maps to the last involved class that has it, as BFCL's mapping does.
- **Calls** (``execute``): each call arrives as data, ``{"name", "args", "kwargs"}``, and is dispatched with
  ``getattr(instance, name)(*args, **kwargs)`` when ``name`` is on the allow list; nothing is evaluated. The
  result string is BFCL's: a ``str`` as it is, a ``dict`` as ``json.dumps`` (``str`` when that fails), anything
  else ``str(...)``; an exception ``"Error during execution: <message>"``. Names BFCL refuses (``kill``,
  ``exit``, ``quit``, ``remove``, ``unlink``, ``popen``, ``Popen``, ``run``) give ``"Function call <name> is not
  allowed."``; an unknown name gives Python's ``name '<name>' is not defined`` (BFCL's ``eval`` would raise that
  NameError), a dotted one the same for its first part. A ``MemoryError`` is not a result: it ends the worker.
- **State** (``compare``): BFCL's ``state_checker``: for each class of the reference environment, every public
  attribute (``vars``, no leading ``_``) of the reference instance must equal (``==``) the same attribute of
  the other; the first class that differs is returned with each differing attribute and both values (described
  as JSON: objects as their public attributes).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.environments.sandbox import SandboxLimits, SandboxWorker

MODULE_PREFIX = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
# class -> (module in func_source_code, function-doc file in data/multi_turn_func_doc)
CLASSES: dict[str, tuple[str, str]] = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
STATELESS_CLASSES = frozenset({"MathAPI"})
BLOCKED_NAMES = frozenset({"kill", "exit", "quit", "remove", "unlink", "popen", "Popen", "run"})
ERROR_PREFIX = "Error during execution: "
HANDLER = "tasks.environments.bfcl_classes:BfclEnvironments"
_DESCRIBE_DEPTH = 8
_DESCRIBE_CHARS = 2000


class BfclEnvironmentError(RuntimeError):
    """BFCL's classes cannot be found or loaded."""


def bfcl_package_dir() -> Path:
    """The folder of the installed ``bfcl_eval`` package (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BfclEnvironmentError("bfcl-eval is not installed: run `toolace fetch-models --only bfcl`")
    return Path(locations[0])


def function_docs(class_name: str, package_dir: Path | None = None) -> list[dict[str, Any]]:
    """BFCL's function docs of one class (``data/multi_turn_func_doc/<file>``, JSON Lines), in file order."""
    if class_name not in CLASSES:
        raise BfclEnvironmentError(f"unknown BFCL class {class_name!r}: choose from {', '.join(CLASSES)}")
    path = (package_dir or bfcl_package_dir()) / "data" / "multi_turn_func_doc" / CLASSES[class_name][1]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BfclEnvironmentError(f"cannot read BFCL's function docs {path}: {exc}") from None
    docs: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BfclEnvironmentError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
                raise BfclEnvironmentError(f"{path}:{number}: a function doc needs a string 'name'")
            docs.append(doc)
    return docs


def execution_result(value: Any) -> str:
    """A method's return value as BFCL hands it to the model and to its checker."""
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except Exception:
            return str(value)
    return str(value)


def describe(value: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
    """A JSON description of a state value: objects as their public attributes, cycles cut, long texts cut."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _DESCRIBE_CHARS else value[:_DESCRIBE_CHARS] + f"... ({len(value)} chars)"
    if id(value) in seen or depth > _DESCRIBE_DEPTH:
        return f"<{type(value).__name__}>"
    inner = seen | {id(value)}
    if isinstance(value, dict):
        return {str(k): describe(v, depth + 1, inner) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [describe(v, depth + 1, inner) for v in items]
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return {"__class__": type(value).__name__,
                **{k: describe(v, depth + 1, inner) for k, v in attributes.items() if not k.startswith("_")}}
    text = repr(value)
    return text if len(text) <= _DESCRIBE_CHARS else text[:_DESCRIBE_CHARS] + "..."


# ------------------------------------------------------------------------------------- in the worker


@dataclass
class _Environment:
    instances: dict[str, Any] = field(default_factory=dict)  # class -> instance, in involved order
    owners: dict[str, str] = field(default_factory=dict)  # method name -> class (last involved class wins)


class BfclEnvironments:
    """The sandbox handler: named environments (sets of BFCL class instances) and the requests on them."""

    def __init__(self) -> None:
        self.environments: dict[str, _Environment] = {}
        self.package_dir = bfcl_package_dir()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "load":
            return self._load(str(request["env"]), list(request["classes"]), dict(request.get("initial_config") or {}),
                              bool(request.get("long_context", False)))
        if op == "execute":
            environment = self._environment(request)
            return {"results": [self._execute(environment, call) for call in request.get("calls", [])]}
        if op == "compare":
            return self._compare(self._environment(request), self._environment(request, "reference"))
        if op == "state":
            environment = self._environment(request)
            return {"state": {name: describe({k: v for k, v in vars(instance).items() if not k.startswith("_")})
                              for name, instance in environment.instances.items()}}
        if op == "drop":
            self.environments.pop(str(request.get("env")), None)
            return {}
        raise ValueError(f"unknown request {op!r}")

    def _environment(self, request: dict[str, Any], key: str = "env") -> _Environment:
        name = str(request.get(key))
        if name not in self.environments:
            raise KeyError(f"no environment {name!r} is loaded")
        return self.environments[name]

    def _load(self, name: str, classes: list[str], initial_config: dict[str, Any], long_context: bool
              ) -> dict[str, Any]:
        environment = _Environment()
        for class_name in classes:
            if class_name not in CLASSES:
                raise ValueError(f"unknown BFCL class {class_name!r}: choose from {', '.join(CLASSES)}")
            module = importlib.import_module(f"{MODULE_PREFIX}.{CLASSES[class_name][0]}")
            instance = getattr(module, class_name)()
            if class_name not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(initial_config.get(class_name, {})), long_context=long_context)
            environment.instances[class_name] = instance
            documented = {doc["name"] for doc in function_docs(class_name, self.package_dir)}
            public = {n for n, _ in inspect.getmembers(instance, predicate=inspect.ismethod) if not n.startswith("_")}
            for method in sorted(documented & public):
                environment.owners[method] = class_name
        self.environments[name] = environment
        return {"methods": sorted(environment.owners)}

    def _execute(self, environment: _Environment, call: dict[str, Any]) -> str:
        name = call.get("name")
        args, kwargs = call.get("args") or [], call.get("kwargs") or {}
        if not isinstance(name, str) or not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            return ERROR_PREFIX + "malformed call"
        if call.get("error"):  # the caller found the call not executable (e.g. a nested call in an argument)
            return ERROR_PREFIX + str(call["error"])
        parts = name.split(".")
        checked = parts[1] if len(parts) > 1 else parts[0]  # the name BFCL's safety check looks at
        if checked in BLOCKED_NAMES:
            return ERROR_PREFIX + f"Function call {checked} is not allowed."
        if len(parts) > 1 or name not in environment.owners:
            return ERROR_PREFIX + f"name {parts[0]!r} is not defined"
        method = getattr(environment.instances[environment.owners[name]], name)
        try:
            return execution_result(method(*args, **{str(k): v for k, v in kwargs.items()}))
        except MemoryError:
            raise
        except Exception as exc:
            return ERROR_PREFIX + str(exc)

    @staticmethod
    def _compare(model: _Environment, reference: _Environment) -> dict[str, Any]:
        for class_name, expected in reference.instances.items():
            actual = model.instances.get(class_name)
            if actual is None or type(actual) is not type(expected):
                return {"valid": False, "class": class_name, "differences": {"<instance>": {
                    "model": None if actual is None else type(actual).__name__, "ground_truth": class_name}}}
            differences: dict[str, Any] = {}
            for attribute in vars(expected):
                if attribute.startswith("_"):
                    continue
                mine = getattr(actual, attribute, None)
                theirs = getattr(expected, attribute)
                if mine != theirs:
                    differences[attribute] = {"model": describe(mine), "ground_truth": describe(theirs)}
            if differences:
                return {"valid": False, "class": class_name, "differences": differences}
        return {"valid": True}


# ------------------------------------------------------------------------------------- in the parent


@dataclass(frozen=True)
class Call:
    """One call as data: a (possibly dotted) name, positional and keyword arguments, or why it cannot run."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "args": list(self.args), "kwargs": self.kwargs}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class StateComparison:
    valid: bool
    class_name: str | None = None
    differences: dict[str, Any] = field(default_factory=dict)


class BfclSandbox:
    """A worker holding BFCL environments, with typed helpers; a context manager."""

    def __init__(self, limits: SandboxLimits | None = None, label: str = "bfcl") -> None:
        self.worker = SandboxWorker(HANDLER, limits, label)

    def __enter__(self) -> BfclSandbox:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.worker.close()

    def load(self, env: str, classes: Iterable[str], initial_config: dict[str, Any], long_context: bool = False
             ) -> list[str]:
        """Fresh instances of ``classes`` under the name ``env``; the method names calls may use."""
        answer = self.worker.request({"op": "load", "env": env, "classes": list(classes),
                                      "initial_config": initial_config, "long_context": long_context},
                                     timeout_s=max(self.worker.limits.call_timeout_s, 30.0))
        return list(answer.get("methods", []))

    def execute(self, env: str, calls: list[Call]) -> list[str]:
        """Each call's result string, in order (one request; its deadline grows with the number of calls)."""
        if not calls:
            return []
        answer = self.worker.request({"op": "execute", "env": env, "calls": [c.wire() for c in calls]},
                                     timeout_s=self.worker.limits.call_timeout_s * len(calls))
        return [str(r) for r in answer["results"]]

    def compare(self, env: str, reference: str) -> StateComparison:
        answer = self.worker.request({"op": "compare", "env": env, "reference": reference})
        return StateComparison(bool(answer["valid"]), answer.get("class"), answer.get("differences") or {})

    def state(self, env: str) -> dict[str, Any]:
        return dict(self.worker.request({"op": "state", "env": env})["state"])

    def drop(self, env: str) -> None:
        self.worker.request({"op": "drop", "env": env})
