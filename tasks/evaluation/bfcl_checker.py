"""Our own BFCL checker: BFCL's prompt-mode decoding and its AST checker's rules, for Python categories.

It mirrors ``bfcl_eval`` 2026.3.23 (``model_handler/utils.py: default_decode_ast_prompting`` and
``eval_checker/ast_eval/ast_checker.py``, and the eval runner's relevance logic) rule by rule, quirks
included, so that a verdict here is the verdict BFCL would give; ``benchmarks/bfcl_agreement.py`` measures
that against BFCL's own code. It imports nothing of ``bfcl_eval``.

**Decoding** (:func:`decode_answer`). The answer is stripped of backticks, newlines and spaces at both ends,
wrapped in ``[...]`` where the brackets are missing, then parsed with :func:`ast.parse` (nothing is run). The
whole expression must be a call or a list of calls. Each call gives ``{name: {param: value}}`` where the name
is the dotted name and positional arguments are ignored (as BFCL does). Values are read from the tree:
literals; a leading minus (BFCL negates the operand of any unary operator, so ``+5`` reads ``-5``); lists,
dicts and tuples (kept as tuples, which an ``array`` parameter then refuses); a bare name reads as its text
(``x=true`` is the string ``"true"``); a call without keyword arguments reads as its source text and one with
keyword arguments as a nested ``{name: {...}}``; a subscript as its source text; ``...`` as ``"..."``. BFCL
evaluates arithmetic (``1/3``) with ``eval``; here arithmetic on number, string, list and tuple literals is
folded by a small walker instead (never ``eval``), with size limits, and anything else in an arithmetic
expression fails to decode. Lambdas, comparisons, f-strings, attributes, sets ... fail to decode, as in BFCL.

**Checking** (:func:`check_calls`), by category kind:

- *simple*: exactly one call, checked against the one expected call; *multiple*: as many calls as expected
  (one), the first checked against the expected function (picking another function fails);
  *parallel* / *parallel_multiple*: as many calls as expected, matched order-free (greedily, as BFCL does:
  each expected call takes the first unmatched output call that passes).
- One call: the function name must match; every required parameter present; no parameter the function
  does not declare or the answer does not list; each value of the declared type (``string``, ``integer``,
  ``float`` — an int is accepted for a float, not the reverse —, ``boolean``, ``array`` and ``tuple`` with
  their item type one level deep, ``dict``, ``any`` = string; Python types compared exactly, so a bool is not
  an integer); a value whose type is the type of the listed answers rather than the declared one is taken as
  a "variable" and compared as it is; each value among the acceptable ones, strings compared after
  standardisation (lowercased, spaces and ``,./-_*^`` removed, ``'`` -> ``"``), also inside lists and as
  dict values one level deep; dicts key by key (unknown key, missing key unless ``""`` is listed), lists of
  dicts element by element; finally every listed parameter without ``""`` among its values must be present.
- *irrelevance*: correct when the answer does not decode, or decodes to no call (``[]``);
  *relevance*: the opposite.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.evaluation.bfcl_data import Kind

PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
NESTED_TYPES = ("array", "tuple")
MAX_ANSWER_CHARS = 100_000  # longer answers are not decoded (as tasks.formats.call_parsing.MAX_TEXT_CHARS)
_STANDARDIZE = re.compile(r"[ \,\.\/\-\_\*\^]")


class BfclDecodeError(ValueError):
    """The answer does not decode into a list of calls."""


@dataclass
class CheckResult:
    """A verdict as BFCL writes it: ``valid``, an ``error_type`` such as
    ``simple_function_checker:missing_required`` and the error messages."""

    valid: bool
    error_type: str | None = None
    errors: list[Any] = field(default_factory=list)

    @staticmethod
    def ok() -> CheckResult:
        return CheckResult(True)

    @staticmethod
    def fail(error_type: str, *errors: Any) -> CheckResult:
        return CheckResult(False, error_type, list(errors))


@dataclass
class Verdict:
    """One answer judged: its decoded calls (None when it did not decode) and the check's result."""

    valid: bool
    error_type: str | None
    errors: list[Any]
    decoded: list[dict[str, dict[Any, Any]]] | None


# ------------------------------------------------------------------------------------------------ decoding

_MAX_FOLDED_ITEMS = 10_000
_MAX_POWER_BITS = 13_000  # ~3900 decimal digits: Python will not print ints past 4300

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert,
}


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _guard(op: type, left: Any, right: Any) -> None:
    """Refuse operations whose result would be huge (BFCL's eval would try them)."""
    numbers = (int, float, complex)
    if op is ast.Pow and isinstance(left, numbers) and isinstance(right, int | float):
        magnitude = abs(left)
        if magnitude > 1 and abs(right) * max(1.0, math.log2(magnitude)) > _MAX_POWER_BITS:
            raise BfclDecodeError("arithmetic result too large")
    if op is ast.LShift and isinstance(right, int) and right > _MAX_POWER_BITS:
        raise BfclDecodeError("arithmetic result too large")
    if op is ast.Mult:
        for seq, count in ((left, right), (right, left)):
            if _size(seq) and isinstance(count, int) and _size(seq) * count > _MAX_FOLDED_ITEMS:
                raise BfclDecodeError("arithmetic result too large")


def _fold(node: ast.expr, depth: int = 0) -> Any:
    """The value of a constant arithmetic expression (what BFCL's ``eval`` of it gives), by walking it."""
    if depth > 100:
        raise BfclDecodeError("arithmetic nested too deeply")
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_fold(e, depth + 1) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_fold(e, depth + 1) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_fold(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _fold(node.left, depth + 1), _fold(node.right, depth + 1)
        _guard(type(node.op), left, right)
        return _BINARY[type(node.op)](left, right)
    raise BfclDecodeError(f"cannot evaluate {type(node).__name__} in an arithmetic expression")


def _value(node: ast.expr | None) -> Any:
    """BFCL's ``resolve_ast_by_type``."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.operand, ast.Constant):
            raise BfclDecodeError(f"unsupported operand of a unary operator: {type(node.operand).__name__}")
        return -node.operand.value  # BFCL negates whatever the operator (TypeError for strings, None)
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.BinOp):
        return _fold(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else _call(node)
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise BfclDecodeError(f"Unsupported AST type: {type(node).__name__}")


def _call(node: ast.Call) -> dict[str, dict[Any, Any]]:
    """BFCL's ``resolve_ast_call``: ``{dotted.name: {keyword: value}}``; positional arguments are ignored."""
    parts: list[str] = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value) for kw in node.keywords}}


def decode_answer(text: str) -> list[dict[str, dict[Any, Any]]]:
    """BFCL's ``default_decode_ast_prompting`` for Python: the calls of a prompt-mode answer, or
    :class:`BfclDecodeError`."""
    if not isinstance(text, str):
        raise BfclDecodeError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_ANSWER_CHARS:
        raise BfclDecodeError(f"answer is {len(text)} characters, over the {MAX_ANSWER_CHARS} limit")
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        body = ast.parse(text.strip().strip("'"), mode="eval").body
        if isinstance(body, ast.Call):
            return [_call(body)]
        elements = getattr(body, "elts", None)
        if elements is None:
            raise BfclDecodeError(f"not a list of calls ({type(body).__name__})")
        calls: list[dict[str, dict[Any, Any]]] = []
        for element in elements:
            if not isinstance(element, ast.Call):
                raise BfclDecodeError(f"list element is not a call ({type(element).__name__})")
            calls.append(_call(element))
        return calls
    except BfclDecodeError:
        raise
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
        raise BfclDecodeError(f"{type(exc).__name__}: {exc}") from None


def is_call_list(decoded: Any) -> bool:
    """BFCL's ``is_function_calling_format_output``: a list of one-key ``{name: {params}}`` dicts."""
    return isinstance(decoded, list) and all(
        type(item) is dict and len(item) == 1 and type(next(iter(item.values()))) is dict for item in decoded
    )


def is_empty_output(decoded: Any) -> bool:
    """BFCL's ``is_empty_output``: no call (``[]``, ``[{}]``, or not a call list)."""
    return not is_call_list(decoded) or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)


# -------------------------------------------------------------------------------------------- value rules


def standardize_string(value: str) -> str:
    """BFCL's string key: spaces and ``,./-_*^`` removed, lowercased, ``'`` -> ``"``."""
    return _STANDARDIZE.sub("", value).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardize_string(value) if type(value) is str else value


def _answer_type(options: Any) -> type | None:
    """The type of the first acceptable value that is not ``""`` (the optional marker)."""
    for option in options:
        if option != "":
            return type(option)
    return None


@dataclass
class _TypeCheck:
    valid: bool
    is_variable: bool = False
    error_type: str | None = None
    errors: list[str] = field(default_factory=list)


def _type_check(param: str, value: Any, options: Any, expected_name: str, expected: type,
                nested: type | None) -> _TypeCheck:
    """BFCL's ``type_checker`` (one level of item types; a value of the answers' type is a "variable")."""
    answer_type = _answer_type(options)
    is_variable = answer_type is not None and answer_type != expected
    errors: list[str] = []
    nested_failed = False
    if type(value) is expected:
        if nested is None:
            return _TypeCheck(True, is_variable)
        for option in options:
            items_ok = True
            if type(option) is list:
                for item in value:
                    if not _type_check(param, item, option, str(nested), nested, None).valid:
                        items_ok = False
                        break
            if items_ok:
                return _TypeCheck(True, is_variable)
        nested_failed = True
        errors.append(f"Nested type checking failed for parameter {param!r}. Expected outer type {expected_name} "
                      f"with inner type {nested}. Parameter value: {value!r}.")
    if answer_type is not None and type(value) is answer_type:
        return _TypeCheck(not nested_failed, True, "type_error:nested" if nested_failed else None, errors)
    errors.append(f"Incorrect type for parameter {param!r}. Expected type {expected_name}, got "
                  f"{type(value).__name__}. Parameter value: {value!r}.")
    return _TypeCheck(False, is_variable, "type_error:simple", errors)


def _string_check(param: str, value: str, options: list[Any]) -> CheckResult:
    if standardize_string(value) not in [standardize_string(o) for o in options if type(o) is str]:
        return CheckResult.fail("value_error:string", f"Invalid value for parameter {param!r}: {value!r}. "
                                f"Expected one of {options}. Case insensitive.")
    return CheckResult.ok()


def _list_check(param: str, value: list[Any], options: list[Any]) -> CheckResult:
    standardized = [_std(v) for v in value]
    # every option is indexed as BFCL does: "" (optional) reads as an empty list
    standardized_options = [[_std(option[j]) for j in range(len(option))] for option in options]
    if standardized not in standardized_options:
        return CheckResult.fail("value_error:list/tuple",
                                f"Invalid value for parameter {param!r}: {value!r}. Expected one of {options}.")
    return CheckResult.ok()


def _dict_check(param: str, value: dict[Any, Any], options: list[Any]) -> CheckResult:
    """BFCL's ``dict_checker``: keys known, values standardised one level deep, required keys present."""
    result = CheckResult.fail("dict_checker:unclear")
    for option in options:
        if option == "":
            continue
        result = CheckResult.fail("dict_checker:unclear")
        matched = True
        for key, item in value.items():
            if key not in option:
                result = CheckResult.fail("value_error:dict_key", f"Unexpected dict key parameter: '{key}'.")
                matched = False
                break
            accepted = [_std(option[key][i]) for i in range(len(option[key]))]
            if _std(item) not in accepted:
                result = CheckResult.fail("value_error:dict_value", f"Invalid value for parameter {key!r}: "
                                          f"{item!r}. Expected one of {accepted}.")
                matched = False
                break
        for key, accepted_values in option.items():
            if key not in value and "" not in accepted_values:
                result = CheckResult(False, "value_error:dict_key",
                                     [*result.errors, f"Missing dict key parameter: '{key}'."])
                matched = False
                break
        if matched:
            return CheckResult.ok()
    return result


def _list_of_dicts_check(param: str, value: list[Any], options: list[Any]) -> CheckResult:
    result = CheckResult.fail("list_dict_checker:unclear")
    for option in options:
        if len(value) != len(option):
            result = CheckResult.fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        matched = True
        for index in range(len(value)):
            result = _dict_check(param, value[index], [option[index]])
            if not result.valid:
                matched = False
                break
        if matched:
            return CheckResult.ok()
    return result


def _param_types(details: dict[str, Any]) -> tuple[str, type, type | None]:
    type_name = details["type"]
    if type_name not in PYTHON_TYPES:
        raise KeyError(f"unknown parameter type {type_name!r}")
    nested = PYTHON_TYPES[details["items"]["type"]] if type_name in NESTED_TYPES else None
    return type_name, PYTHON_TYPES[type_name], nested


def check_call(function: dict[str, Any], output: dict[str, dict[Any, Any]],
               answer: dict[str, dict[str, list[Any]]]) -> CheckResult:
    """BFCL's ``simple_function_checker``: one decoded call against one expected call."""
    options_by_param = next(iter(answer.values()))
    name = function["name"]
    declared = function["parameters"]["properties"]
    required = function["parameters"]["required"]
    if name not in output:
        return CheckResult.fail("simple_function_checker:wrong_func_name",
                                f"Function name {name!r} not found in model output.")
    arguments = output[name]
    for param in required:
        if param not in arguments:
            return CheckResult.fail("simple_function_checker:missing_required",
                                    f"Missing required parameter: {param!r}.")
    for param, value in arguments.items():
        if param not in declared or param not in options_by_param:
            return CheckResult.fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {param!r}.")
        options = options_by_param[param]
        type_name, expected, nested = _param_types(declared[param])
        if type_name == "tuple" and type(value) is tuple:
            value = list(value)
        if type_name == "float" and type(value) is int:
            value = float(value)  # Python's own int -> float promotion
        typed = _type_check(param, value, options, type_name, expected, nested)
        if not typed.valid:
            return CheckResult(False, typed.error_type, typed.errors)
        if not typed.is_variable:
            if expected is dict:
                result = _dict_check(param, value, options)
            elif expected is list and nested is dict:
                result = _list_of_dicts_check(param, value, options)
            elif expected is str:
                result = _string_check(param, value, options)
            elif expected is list:
                result = _list_check(param, value, options)
            else:
                result = None
            if result is not None:
                if not result.valid:
                    return result
                continue
        if value not in options:
            return CheckResult.fail("value_error:others", f"Invalid value for parameter {param!r}: {value!r}. "
                                    f"Expected one of {options}.")
    for param, options in options_by_param.items():
        if param not in arguments and "" not in options:
            return CheckResult.fail("simple_function_checker:missing_optional",
                                    f"Optional parameter {param!r} not provided and not marked as optional.")
    return CheckResult.ok()


def _find_function(functions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for function in functions:
        if function["name"] == name:
            return function
    raise KeyError(f"expected function {name!r} is not among the item's functions")


def _check_parallel(functions: list[dict[str, Any]], outputs: list[dict[str, Any]],
                    answers: list[dict[str, Any]]) -> CheckResult:
    if len(outputs) != len(answers):
        return CheckResult.fail("parallel_function_checker_no_order:wrong_count", "Wrong number of functions.")
    matched: list[int] = []
    for answer_index, answer in enumerate(answers):
        function = _find_function(functions, next(iter(answer)))
        errors: list[Any] = []
        found = False
        for index, output in enumerate(outputs):
            if index in matched:
                continue
            result = check_call(function, output, answer)
            if result.valid:
                matched.append(index)
                found = True
                break
            errors.append({f"Model Result Index {index}": {"sub_error": result.errors,
                                                           "sub_error_type": result.error_type}})
        if not found:
            remaining = [i for i in range(len(outputs)) if i not in matched]
            return CheckResult(False, "parallel_function_checker_no_order:cannot_find_match", [
                f"Could not find a matching function among index {remaining} of model output for index "
                f"{answer_index} of possible answers.", *errors])
    return CheckResult.ok()


def check_calls(kind: Kind, functions: list[dict[str, Any]], decoded: list[dict[str, dict[Any, Any]]],
                possible_answer: list[dict[str, dict[str, list[Any]]]]) -> CheckResult:
    """BFCL's ``ast_checker`` for Python: decoded calls against the possible answer. A malformed function doc
    or answer (BFCL's checker would raise) gives an invalid result of type ``checker_error``."""
    try:
        if kind in ("parallel", "parallel_multiple"):
            return _check_parallel(functions, decoded, possible_answer)
        if kind == "multiple":
            if len(decoded) != len(possible_answer):
                return CheckResult.fail("multiple_function_checker:wrong_count", "Wrong number of functions.")
            function = _find_function(functions, next(iter(possible_answer[0])))
            return check_call(function, decoded[0], possible_answer[0])
        if len(decoded) != 1:
            return CheckResult.fail("simple_function_checker:wrong_count", "Wrong number of functions.")
        return check_call(functions[0], decoded[0], possible_answer[0])
    except Exception as exc:  # a malformed doc/answer or an unorderable value: BFCL would crash on it
        return CheckResult.fail("checker_error", f"{type(exc).__name__}: {exc}")


def judge_answer(kind: Kind, functions: list[dict[str, Any]], text: str,
                 possible_answer: list[dict[str, dict[str, list[Any]]]] | None) -> Verdict:
    """One prompt-mode answer judged as BFCL's eval runner does: decode, then the AST checker, or for
    (ir)relevance whether a call came out at all."""
    try:
        decoded: list[dict[str, dict[Any, Any]]] | None = decode_answer(text)
        decode_error = None
    except BfclDecodeError as exc:
        decoded, decode_error = None, str(exc)
    return judge_decoded(kind, functions, decoded, decode_error, possible_answer)


def judge_decoded(kind: Kind, functions: list[dict[str, Any]], decoded: Any, decode_error: str | None,
                  possible_answer: list[dict[str, dict[str, list[Any]]]] | None, *,
                  notes: list[str] | None = None) -> Verdict:
    """A decoded answer (``None`` when it did not decode, ``decode_error`` saying why) judged as BFCL's eval
    runner does, in either mode: for (ir)relevance whether a call came out at all (``notes`` kept on a right
    irrelevance answer), otherwise the call-list format, then the AST checker."""
    if kind in ("irrelevance", "relevance"):
        has_call = decoded is not None and not is_empty_output(decoded)
        if kind == "irrelevance":
            if has_call:
                return Verdict(False, "irrelevance_error:decoder_success",
                               ["Valid syntax. Successfully decode AST when it should not."], decoded)
            return Verdict(True, None, notes or [], decoded)
        if not has_call:
            return Verdict(False, "relevance_error:decoder_failed",
                           [f"Invalid syntax. Failed to decode AST when it should have. {decode_error or ''}"
                            .strip()], decoded)
        return Verdict(True, None, [], decoded)
    if decoded is None:
        return Verdict(False, "ast_decoder:decoder_failed", [f"Invalid syntax. Failed to decode AST. {decode_error}"],
                       None)
    if not is_call_list(decoded):
        return Verdict(False, "ast_decoder:decoder_wrong_output_format",
                       ["Did not output in the specified format."], decoded)
    if possible_answer is None:
        raise ValueError(f"category kind {kind} needs a possible answer")
    result = check_calls(kind, functions, copy.deepcopy(decoded), possible_answer)
    return Verdict(result.valid, result.error_type, result.errors, decoded)


def jsonable(value: Any) -> Any:
    """A decoded value as JSON can hold it: tuples as lists, dict keys as strings, other objects as repr."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_POWER_BITS:
        return f"<int of {value.bit_length()} bits>"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else ("null" if k is None else repr(k)): jsonable(v) for k, v in value.items()}
    return repr(value)
