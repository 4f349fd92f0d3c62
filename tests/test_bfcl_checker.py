"""Our BFCL checker, rule by rule (benchmarks/bfcl_agreement.py compares it with bfcl-eval's own code)."""

from __future__ import annotations

import pytest

from tasks.evaluation.bfcl_checker import (
    BfclDecodeError,
    check_calls,
    decode_answer,
    is_empty_output,
    jsonable,
    judge_answer,
    standardize_string,
)

WEATHER = {
    "name": "weather.get",
    "description": "Weather for a city.",
    "parameters": {"type": "dict", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City"},
        "days": {"type": "integer", "description": "Days ahead"},
        "unit": {"type": "string", "description": "celsius or fahrenheit"},
        "threshold": {"type": "float", "description": "Alert threshold"},
        "alerts": {"type": "boolean", "description": "Include alerts"},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags"},
        "hours": {"type": "array", "items": {"type": "integer"}, "description": "Hours"},
        "point": {"type": "tuple", "items": {"type": "float"}, "description": "Lat/lon"},
        "filters": {"type": "dict", "description": "Filters", "properties": {}},
        "stops": {"type": "array", "items": {"type": "dict"}, "description": "Stops"},
    }},
}
WEATHER_ANSWER = {"weather.get": {
    "city": ["New York, NY", "New York"],
    "days": [3],
    "unit": ["celsius", ""],
    "threshold": [2.0, ""],
    "alerts": [True, ""],
    "tags": [["rain", "wind"], ""],
    "hours": [[6, 12], ""],
    "point": [[40.7, -74.0], ""],
    "filters": [{"kind": ["storm"], "level": ["high", ""]}, ""],
    "stops": [[{"name": ["Boston"]}, {"name": ["Albany"]}], ""],
}}
SUM = {"name": "math.sum", "description": "Add.", "parameters": {"type": "dict", "required": ["a", "b"], "properties": {
    "a": {"type": "integer", "description": "a"}, "b": {"type": "integer", "description": "b"}}}}


def simple(text: str, functions: list | None = None, answer: dict | None = None):
    return judge_answer("simple", functions or [WEATHER], text, [answer or WEATHER_ANSWER])


# ------------------------------------------------------------------------------------------------ decoding


def test_decodes_a_call_list_with_dotted_names_and_literals():
    decoded = decode_answer('[weather.get(city="Oslo", days=-2, tags=["a"], point=(1.5, 2), x=None), f()]')
    assert decoded == [{"weather.get": {"city": "Oslo", "days": -2, "tags": ["a"], "point": (1.5, 2), "x": None}},
                       {"f": {}}]
    assert isinstance(decoded[0]["weather.get"]["point"], tuple)  # tuples stay tuples, as in BFCL


def test_decoding_adds_missing_brackets_and_strips_backticks():
    assert decode_answer('weather.get(city="Oslo")') == [{"weather.get": {"city": "Oslo"}}]
    assert decode_answer('```\n[f(a=1)]\n```') == [{"f": {"a": 1}}]
    assert decode_answer("[]") == []


def test_decoding_follows_bfcl_value_rules():
    decoded = decode_answer("[f(a=true, b=x[0], c=sqrt(2), d=g(z=1), e=+5, f=1/4, g=2**3, h=..., i={'k': (1,)})]")
    assert decoded == [{"f": {"a": "true", "b": "x[0]", "c": "sqrt(2)", "d": {"g": {"z": 1}}, "e": -5, "f": 0.25,
                              "g": 8, "h": "...", "i": {"k": (1,)}}}]
    assert decode_answer("[f(1, 2, a=3)]") == [{"f": {"a": 3}}]  # positional arguments are ignored


@pytest.mark.parametrize("text", [
    "Sure! [f(a=1)]",                       # prose: not a Python expression once bracketed
    "[f(a=lambda: 1)]",
    "[f(a=math.pi)]",                       # attribute values are not supported
    "[f(a={1, 2})]",
    "[f(a=1 < 2)]",
    "[f(a=-'x')]",
    "[f(a=1/0)]",
    "[f(a=10**10**10)]",                    # folded arithmetic is bounded
    "[f(a=__import__('os').getcwd() + 'x')]",  # arithmetic over a call is never evaluated
    "[1, f(a=1)]",
    "```python\n[f(a=1)]\n```",            # BFCL strips backticks only: "python" is left in front
])
def test_undecodable_answers(text):
    with pytest.raises(BfclDecodeError):
        decode_answer(text)


def test_decoding_never_runs_the_answer(tmp_path):
    marker = tmp_path / "ran"
    decoded = decode_answer(f"[f(a=open({str(marker)!r}, 'w'))]")
    assert decoded == [{"f": {"a": f"open({str(marker)!r}, 'w')"}}]
    assert not marker.exists()


def test_empty_output():
    assert is_empty_output([]) and is_empty_output([{}]) and is_empty_output("text")
    assert not is_empty_output([{"f": {}}])


def test_jsonable_handles_tuples_and_odd_keys():
    assert jsonable([{"f": {None: (1, 2), "k": {1: b"x"}}}]) == [{"f": {"null": [1, 2], "k": {"1": "b'x'"}}}]


# ----------------------------------------------------------------------------------------------- one call


def test_correct_call_and_optional_parameters():
    assert simple('[weather.get(city="New York", days=3)]').valid  # optional ones ("" listed) left out
    full = ('[weather.get(city="New York, NY", days=3, unit="celsius", threshold=2.0, alerts=True, tags=["rain", '
            '"wind"], hours=[6, 12], point=(40.7, -74.0), filters={"kind": "storm"}, '
            'stops=[{"name": "Boston"}, {"name": "Albany"}])]')
    assert simple(full).valid


def test_parameter_listed_without_empty_string_must_be_given():
    answer = {"weather.get": {"city": ["Oslo"], "days": [3]}}  # days is optional in the doc, not in the answer
    verdict = simple('[weather.get(city="Oslo")]', answer=answer)
    assert not verdict.valid and verdict.error_type == "simple_function_checker:missing_optional"


def test_missing_required_parameter():
    verdict = simple("[weather.get(days=3)]")
    assert not verdict.valid and verdict.error_type == "simple_function_checker:missing_required"


def test_unexpected_parameter():
    verdict = simple('[weather.get(city="New York", days=3, verbose=True)]')
    assert not verdict.valid and verdict.error_type == "simple_function_checker:unexpected_param"


@pytest.mark.parametrize("city", ["new york", "NEW-YORK", "New York, NY.", "new_york,ny", " New  York "])
def test_strings_are_compared_after_standardisation(city):
    assert simple(f'[weather.get(city="{city}", days=3)]').valid


def test_standardize_string():
    assert standardize_string("April 1, 2024") == standardize_string("april 1 2024") == "april12024"
    assert standardize_string("it's") == 'it"s'


def test_wrong_string_value():
    verdict = simple('[weather.get(city="Boston", days=3)]')
    assert not verdict.valid and verdict.error_type == "value_error:string"


def test_int_accepted_for_float_but_not_float_for_int():
    assert simple('[weather.get(city="New York", days=3, threshold=2)]').valid
    verdict = simple('[weather.get(city="New York", days=3.0)]')
    assert not verdict.valid and verdict.error_type == "type_error:simple"


@pytest.mark.parametrize("value", ['"3"', "True", "[3]"])
def test_wrong_type(value):
    verdict = simple(f'[weather.get(city="New York", days={value})]')
    assert not verdict.valid and verdict.error_type == "type_error:simple"


def test_json_style_true_is_a_string_not_a_boolean():
    verdict = simple('[weather.get(city="New York", days=3, alerts=true)]')
    assert not verdict.valid and verdict.error_type == "type_error:simple"


def test_wrong_number_value():
    verdict = simple('[weather.get(city="New York", days=4)]')
    assert not verdict.valid and verdict.error_type == "value_error:others"


def test_lists_order_and_item_types():
    assert simple('[weather.get(city="New York", days=3, tags=["RAIN", "Wind"])]').valid  # strings standardised
    assert not simple('[weather.get(city="New York", days=3, tags=["wind", "rain"])]').valid  # order matters
    nested = simple('[weather.get(city="New York", days=3, hours=[6, "12"])]',
                    answer={"weather.get": {"city": ["New York"], "days": [3], "hours": [[6, 12]]}})
    assert not nested.valid and nested.error_type == "type_error:nested"
    # as in BFCL, a "" among the acceptable values lets the item types pass; the value check then fails
    loose = simple('[weather.get(city="New York", days=3, hours=[6, "12"])]')
    assert not loose.valid and loose.error_type == "value_error:list/tuple"
    as_tuple = simple('[weather.get(city="New York", days=3, tags=("rain", "wind"))]')
    assert not as_tuple.valid and as_tuple.error_type == "type_error:simple"  # a tuple is not an array


def test_tuple_parameter_takes_a_tuple_or_a_list():
    assert simple('[weather.get(city="New York", days=3, point=(40.7, -74.0))]').valid
    assert simple('[weather.get(city="New York", days=3, point=[40.7, -74.0])]').valid


def test_dict_values():
    assert simple('[weather.get(city="New York", days=3, filters={"kind": "STORM"})]').valid  # "level" optional
    extra = simple('[weather.get(city="New York", days=3, filters={"kind": "storm", "x": 1})]')
    assert not extra.valid and extra.error_type == "value_error:dict_key"
    missing = simple('[weather.get(city="New York", days=3, filters={"level": "high"})]')
    assert not missing.valid and missing.error_type == "value_error:dict_key"
    wrong = simple('[weather.get(city="New York", days=3, filters={"kind": "rain"})]')
    assert not wrong.valid and wrong.error_type == "value_error:dict_value"


def test_list_of_dicts_element_by_element():
    assert simple('[weather.get(city="New York", days=3, stops=[{"name": "boston"}, {"name": "Albany"}])]').valid
    short = simple('[weather.get(city="New York", days=3, stops=[{"name": "Boston"}])]')
    assert not short.valid and short.error_type == "value_error:list_dict_count"


def test_value_of_the_answers_type_is_taken_as_a_variable():
    function = {"name": "f", "parameters": {"type": "dict", "required": ["x"],
                                             "properties": {"x": {"type": "string", "description": ""}}}}
    assert judge_answer("simple", [function], "[f(x=5)]", [{"f": {"x": [5]}}]).valid


def test_simple_needs_exactly_one_call():
    verdict = simple('[weather.get(city="New York", days=3), weather.get(city="New York", days=3)]')
    assert not verdict.valid and verdict.error_type == "simple_function_checker:wrong_count"


def test_undecodable_answer_is_wrong():
    verdict = simple("I would need to know the city.")
    assert not verdict.valid and verdict.error_type == "ast_decoder:decoder_failed" and verdict.decoded is None


# ------------------------------------------------------------------------------------- categories of items


def test_multiple_picks_the_right_function():
    functions = [SUM, WEATHER]
    answer = [{"math.sum": {"a": [1], "b": [2]}}]
    assert judge_answer("multiple", functions, "[math.sum(a=1, b=2)]", answer).valid
    wrong = judge_answer("multiple", functions, '[weather.get(city="Oslo", days=1)]', answer)
    assert not wrong.valid and wrong.error_type == "simple_function_checker:wrong_func_name"
    two = judge_answer("multiple", functions, '[math.sum(a=1, b=2), weather.get(city="Oslo")]', answer)
    assert not two.valid and two.error_type == "multiple_function_checker:wrong_count"


def test_parallel_is_order_free():
    answer = [{"math.sum": {"a": [1], "b": [2]}}, {"math.sum": {"a": [3], "b": [4]}}]
    for kind in ("parallel", "parallel_multiple"):
        assert judge_answer(kind, [SUM], "[math.sum(a=3, b=4), math.sum(a=1, b=2)]", answer).valid
        assert judge_answer(kind, [SUM], "[math.sum(a=1, b=2), math.sum(a=3, b=4)]", answer).valid
    missing = judge_answer("parallel", [SUM], "[math.sum(a=1, b=2)]", answer)
    assert not missing.valid and missing.error_type == "parallel_function_checker_no_order:wrong_count"
    wrong = judge_answer("parallel", [SUM], "[math.sum(a=1, b=2), math.sum(a=3, b=5)]", answer)
    assert not wrong.valid and wrong.error_type == "parallel_function_checker_no_order:cannot_find_match"


def test_parallel_multiple_mixes_functions():
    answer = [{"math.sum": {"a": [1], "b": [2]}}, {"weather.get": {"city": ["Oslo"], "days": [1]}}]
    text = '[weather.get(city="oslo", days=1), math.sum(a=1, b=2)]'
    assert judge_answer("parallel_multiple", [SUM, WEATHER], text, answer).valid


@pytest.mark.parametrize(("text", "valid"), [
    ("The functions cannot compute a triangle's area.", True),  # does not decode
    ("[]", True),  # decodes to no call
    ("[math.sum(a=1, b=2)]", False),
    ("math.sum()", False),
])
def test_irrelevance_is_correct_when_no_call_comes_out(text, valid):
    verdict = judge_answer("irrelevance", [SUM], text, None)
    assert verdict.valid is valid
    if not valid:
        assert verdict.error_type == "irrelevance_error:decoder_success"


def test_relevance_needs_a_call():
    assert judge_answer("relevance", [SUM], "[math.sum(a=9, b=9)]", None).valid
    assert not judge_answer("relevance", [SUM], "[]", None).valid


def test_malformed_function_doc_is_an_invalid_verdict_not_a_crash():
    broken = {"name": "f", "parameters": {"type": "dict", "required": [], "properties": {"x": {"type": "weird"}}}}
    result = check_calls("simple", [broken], [{"f": {"x": 1}}], [{"f": {"x": [1]}}])
    assert not result.valid and result.error_type == "checker_error"
