"""Real endpoints' rules: strict structured-output schemas, reasoning models' parameters, refusals that stop the
run in one line, Retry-After, and reasoning kept beside the answers. Against the scripted server with OpenAI's
request rules on (``openai_rules=True``: HTTP 400 with OpenAI's error body), over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from schemas import judge_outputs, llm_outputs
from schemas.llm_outputs import DocumentExtraction, UserTurn, api_answer_model
from schemas.records import APISpec, Document, TreeNode
from tasks.apis import synthesis as api_synthesis
from tasks.corpus import mining
from tasks.dialogs.generation import DialogPlan, Segment, generate_dialogs
from tasks.verification import model_judges
from tasks.verification.rules import sample_from_dialog
from tests.conftest import judges_pass
from tests.scripted_llm_server import ScriptedLLMServer, instance_from_schema, openai_rule_error
from toolace.errors import EndpointError
from toolace.llm.gateway import (
    LLM_REQUEST_CHECK,
    GatewaySettings,
    LLMCallFailed,
    LLMGateway,
    RequestRefused,
    is_reasoning_model,
)
from toolace.llm.rate_limit import retry_after_s
from toolace.llm.response_format import (
    NotStrict,
    data_response_format,
    response_format_for,
    strict_schema_problems,
    strip_added_nulls,
    to_strict_schema,
)

MESSAGES = [{"role": "user", "content": "Document: a weather API with hourly forecasts."}]
MODELS = ("gpt-4o-mini", "gpt-5-mini", "o4-mini")


@pytest.fixture(scope="module")
def rules_server() -> Iterator[ScriptedLLMServer]:
    server = ScriptedLLMServer(MODELS, openai_rules=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def rules(rules_server: ScriptedLLMServer) -> Iterator[ScriptedLLMServer]:
    rules_server.reset()
    rules_server.script(judges_pass)
    yield rules_server
    rules_server.reset()


def gateway(server: ScriptedLLMServer, model: str = "gpt-4o-mini", **overrides: Any) -> LLMGateway:
    return LLMGateway(GatewaySettings(base_url=server.base_url, model=model, backoff_base_s=0.01, **overrides))


def run(work: Any, gw: LLMGateway) -> Any:
    """``work(gw)`` on a fresh event loop, the gateway closed afterwards."""

    async def main() -> Any:
        try:
            return await work(gw)
        finally:
            await gw.aclose()

    return asyncio.run(main())


# ------------------------------------------------------------------------------------ every schema we send


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def answer_models() -> list[type[BaseModel]]:
    """Every pydantic model the stages send as a response format (and every answer model defined)."""
    used = {UserTurn, DocumentExtraction, *(api_answer_model(c, n) for c in (False, True) for n in (False, True)),
            *(judge.output for judge in model_judges.JUDGES)}
    return sorted(used | set(_subclasses(llm_outputs._Answer)), key=lambda m: m.__name__)


def test_answer_models_cover_both_schema_modules() -> None:
    names = {m.__name__ for m in answer_models()}
    assert {"UserTurn", "DocumentExtraction", "ConstrainedNestedAPI", "HallucinationAnswer"} <= names
    assert all(m.__module__ in (llm_outputs.__name__, judge_outputs.__name__) for m in answer_models())


@pytest.mark.parametrize("model", answer_models(), ids=lambda m: m.__name__)
def test_every_answer_model_is_sent_as_a_strict_valid_schema(model: type[BaseModel]) -> None:
    fmt = response_format_for(model)
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["name"] == model.__name__
    schema = fmt["json_schema"]["schema"]
    assert strict_schema_problems(schema) == []
    assert openai_rule_error({"model": "gpt-4o-mini", "response_format": fmt}) is None  # the server's own reading
    text = json.dumps(schema)
    assert '"default"' not in text and '"minLength"' not in text and '"title"' not in text
    # an answer that follows the strict schema is one the model accepts (length bounds kept as patterns)
    model.model_validate(instance_from_schema(schema, "seed"))


# result schemas of synthesised and imported APIs: (schema, sent strict?)
DEEP: dict[str, Any] = {"type": "string"}
for _ in range(10):  # with the root object: 11 levels
    DEEP = {"type": "array", "items": DEEP}
OPTIONAL = {"type": "object", "properties": {"id": {"type": "string"}, "note": {"type": "string", "maxLength": 30},
                                             "score": {"type": "number", "minimum": 0, "default": 1.5}},
            "required": ["id"]}
RESULT_SCHEMAS: list[tuple[str, dict[str, Any], bool]] = [
    ("closed", {"type": "object", "properties": {"temp": {"type": "number", "minimum": -90}}, "required": ["temp"],
                "additionalProperties": False}, True),
    ("synthesised", {"type": "object", "properties": {
        "temperature": {"type": "number", "description": "degrees"},
        "alerts": {"type": "array", "description": "active alerts", "items": {"type": "string"}}},
        "required": ["temperature", "alerts"]}, True),
    ("optional", OPTIONAL, True),
    ("nested", {"type": "object", "properties": {"hotels": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "stars": {"type": "integer", "enum": [1, 2, 3]},
                                         "address": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "required": ["name"]}, "minItems": 1}}}, True),
    ("formats", {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"}, "link": {"type": "string", "format": "uri"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"}, "look": {"type": "string", "pattern": "^(?!x).*"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
        "required": ["when", "link", "code", "tags"]}, True),
    ("unions", {"type": "object", "properties": {
        "value": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "either": {"type": ["string", "integer"]},
        "maybe": {"type": "string", "nullable": True},
        "kind": {"enum": ["a", "b"]}}, "required": ["value", "either", "maybe", "kind"]}, True),
    ("refs", {"type": "object", "properties": {"owner": {"$ref": "#/definitions/Person", "description": "owner"},
                                               "friends": {"type": "array", "items": {"$ref": "#/definitions/Person"}}},
              "required": ["owner"], "definitions": {"Person": {"type": "object", "properties": {
                  "name": {"type": "string"}, "age": {"allOf": [{"type": "integer"}], "minimum": 0}}}}}, True),
    ("free-form map", {"type": "object", "properties": {"rates": {"type": "object",
                                                                  "additionalProperties": {"type": "number"}}}}, False),
    ("bare object", {"type": "object"}, False),
    ("untyped field", {"type": "object", "properties": {"data": {"description": "anything"}}}, False),
    ("tuple", {"type": "object", "properties": {"point": {"type": "array", "prefixItems": [{"type": "number"}]}}},
     False),
    ("array root", {"type": "array", "items": {"type": "string"}}, False),
    ("too deep", {"type": "object", "properties": {"a": DEEP}}, False),
    ("if-then", {"type": "object", "properties": {"n": {"type": "integer"}}, "if": {"required": ["n"]},
                 "then": {"properties": {"n": {"minimum": 1}}}, "not": {"required": ["x"]}}, True),
]


@pytest.mark.parametrize(("label", "schema", "strict"), RESULT_SCHEMAS, ids=[r[0] for r in RESULT_SCHEMAS])
def test_tool_result_formats_are_strict_valid_or_sent_without_strict(label: str, schema: dict[str, Any],
                                                                     strict: bool) -> None:
    original = json.loads(json.dumps(schema))
    fmt = data_response_format("ToolResult", schema)
    assert schema == original  # the API's own schema is left as it is
    sent = fmt["json_schema"]["schema"]
    assert fmt["json_schema"]["strict"] is strict
    check = jsonschema.validators.validator_for(schema)(schema)
    if not strict:
        assert sent == schema
        assert openai_rule_error({"model": "gpt-4o-mini", "response_format": fmt}) is None
        return
    assert strict_schema_problems(sent) == []
    assert openai_rule_error({"model": "gpt-4o-mini", "response_format": fmt}) is None
    # an answer that follows the strict form, less the nulls strict mode added, is valid for the API's schema
    for seed in ("a", "b", "c"):
        answer = instance_from_schema(sent, seed)
        check.validate(strip_added_nulls(answer, schema))


def test_optional_properties_become_required_and_nullable() -> None:
    strict = to_strict_schema(OPTIONAL)
    assert strict["required"] == ["id", "note", "score"] and strict["additionalProperties"] is False
    assert strict["properties"]["id"] == {"type": "string"}
    assert strict["properties"]["note"] == {"type": ["string", "null"], "pattern": r'^[^"\\\n\r]{0,30}$'}
    assert strict["properties"]["score"]["type"] == ["number", "null"]
    assert "default: 1.5" in strict["properties"]["score"]["description"]
    assert strip_added_nulls({"id": "x", "note": None, "score": None}, OPTIONAL) == {"id": "x"}
    with pytest.raises(NotStrict, match="free-form"):
        to_strict_schema({"type": "object", "properties": {"m": {"type": "object"}}})


@pytest.mark.parametrize(("schema", "fragment"), [
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, "additionalProperties"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": [], "additionalProperties": False},
     "missing a"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}, "required": ["a"],
      "additionalProperties": False}, "'minLength' not supported"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}, "required": ["a"],
      "additionalProperties": False}, "format 'uri'"),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}, "required": ["a"],
      "additionalProperties": False}, "'allOf' not supported"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A", "description": "x"}}, "required": ["a"],
      "additionalProperties": False, "$defs": {"A": {"type": "string"}}}, "$ref beside"),
    ({"anyOf": [{"type": "object", "properties": {}, "required": [], "additionalProperties": False}]}, "root"),
    ({"type": "array", "items": {"type": "string"}}, "root must be an object"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": [f"v{i}" for i in range(1001)]}},
      "required": ["a"], "additionalProperties": False}, "1001 enum values"),
])
def test_strict_schema_problems_name_each_documented_rule(schema: dict[str, Any], fragment: str) -> None:
    problems = strict_schema_problems(schema)
    assert any(fragment in p for p in problems), problems


def test_nesting_limit_is_ten_levels() -> None:
    def nested(levels: int) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "string"}
        for _ in range(levels):
            node = {"type": "object", "properties": {"x": node}, "required": ["x"], "additionalProperties": False}
        return node

    assert strict_schema_problems(nested(10)) == []
    assert any("11 levels" in p for p in strict_schema_problems(nested(11)))


# ------------------------------------------------------------------------------------------ reasoning models


@pytest.mark.parametrize(("name", "reasoning"), [
    ("gpt-5-mini", True), ("gpt-5", True), ("gpt-5.1", True), ("gpt-5-nano-2025-08-07", True), ("o1", True),
    ("o3-mini", True), ("o4-mini", True), ("openai/gpt-5-mini", True), ("ft:o4-mini-2025-04-16:org::x", True),
    ("gpt-4o-mini", False), ("gpt-4.1", False), ("gpt-3.5-turbo", False), ("Qwen/Qwen2.5-72B-Instruct", False),
    ("smollm2-135m-instruct", False), ("deepseek-reasoner", False), ("olmo-2", False), ("scripted-model", False),
])
def test_reasoning_models_are_known_by_name(name: str, reasoning: bool) -> None:
    assert is_reasoning_model(name) is reasoning
    assert GatewaySettings(base_url="x", model=name).reasoning is reasoning
    assert GatewaySettings(base_url="x", model=name, reasoning_model=not reasoning).reasoning is not reasoning


def test_reasoning_model_gets_max_completion_tokens_and_no_temperature(rules: ScriptedLLMServer) -> None:
    async def work(gw: LLMGateway) -> Any:
        await gw.chat(MESSAGES, stage="s", temperature=0.2, max_tokens=300)
        return await gw.structured(UserTurn, MESSAGES, stage="s")

    answer = run(work, gateway(rules, "gpt-5-mini", reasoning_effort="low"))
    assert answer.ok and rules.refusals == []
    for body in rules.requests:
        assert "temperature" not in body and "max_tokens" not in body
        assert body["reasoning_effort"] == "low"
    assert [b["max_completion_tokens"] for b in rules.requests] == [300, 512]


def test_other_models_keep_max_tokens_and_temperature(rules: ScriptedLLMServer) -> None:
    run(lambda gw: gw.chat(MESSAGES, stage="s", temperature=0.2), gateway(rules, reasoning_effort="low"))
    body = rules.requests[0]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 512
    assert "max_completion_tokens" not in body and "reasoning_effort" not in body


# ------------------------------------------------------------------------------ the stages against the rules


CITY = {"type": "string", "description": "city"}
POOL = [
    APISpec(api_id="w1", name="get_weather", description="Current weather for a city.",
            parameters={"type": "object", "properties": {"city": CITY}, "required": ["city"]},
            result_schema={"type": "object", "properties": {"temp_c": {"type": "number"},
                                                            "summary": {"type": "string", "maxLength": 60},
                                                            "alerts": {"type": "array", "items": {"type": "string"}}},
                           "required": ["temp_c"]},
            domain="Weather", node_ids=["n1"], operators=[]),
    APISpec(api_id="w2", name="get_rates", description="Exchange rates for a base currency.",
            parameters={"type": "object", "properties": {"base": {"type": "string", "enum": ["EUR", "USD"]}},
                        "required": ["base"]},
            result_schema={"type": "object", "properties": {"rates": {"type": "object",
                                                                      "additionalProperties": {"type": "number"}}}},
            domain="Finance", node_ids=["n2"], operators=["imported"]),
    APISpec(api_id="w3", name="find_hotel", description="Hotels in a city.",
            parameters={"type": "object", "properties": {"city": CITY}, "required": ["city"]},
            result_schema={"type": "object", "properties": {"hotels": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}, "url": {"type": "string",
                                                                                     "format": "uri"}},
                "required": ["name"]}}}, "required": ["hotels"]},
            domain="Travel", node_ids=["n3"], operators=[]),
]
# the target first: the scripted server calls the first tool offered
PLANS = [DialogPlan(index=i, dialog_type="single", offered=[target, *sorted({"w1", "w2", "w3"} - {target})],
                    segments=[Segment(kind="single", targets=[target])])
         for i, target in enumerate(["w1", "w2", "w3"])]
NODES = [TreeNode(node_id="d", parent_id=None, name="Weather", level=0, is_functionality=False, doc_ids=["x"]),
         TreeNode(node_id="s", parent_id="d", name="Forecasts", level=1, is_functionality=False, doc_ids=["x"]),
         TreeNode(node_id="f1", parent_id="s", name="get hourly forecast", level=2, is_functionality=True,
                  doc_ids=["x"]),
         TreeNode(node_id="f2", parent_id="s", name="get weather alerts", level=2, is_functionality=True,
                  doc_ids=["x"])]
DOC = Document(doc_id="d1", source="d1", title="Weather API",
               text="GET /v1/forecast?city=Paris returns JSON with the hourly temperature. Parameters: city "
                    "(string, required), days (integer). The endpoint requires an API key header.")


async def every_stage(gw: LLMGateway) -> dict[str, Any]:
    """Mining, API synthesis (every answer model), dialog generation and the judges, through one gateway."""
    mined = await mining.mine_documents([DOC], gw, 0.0, 2000)
    plans = [api_synthesis.APIPlan(index=i, domain="Weather", domain_id="d", node_ids=["f1"],
                                   functionalities=["get hourly forecast"], path=["Weather", "Forecasts"],
                                   breadth="narrow", operators=operators)
             for i, operators in enumerate([["add_parameters"], ["add_constraints"],
                                            ["add_parameters", api_synthesis.NEST_OPERATOR],
                                            ["add_constraints", api_synthesis.NEST_OPERATOR]])]
    apis = await api_synthesis.synthesize_apis(plans, gw, [None] * len(plans))
    dialogs = await generate_dialogs(PLANS, POOL, gw, seed=0)
    verdicts = await model_judges.judge_samples([sample_from_dialog(d) for d in dialogs if d.accepted], gw)
    return {"mined": mined, "apis": apis, "dialogs": dialogs, "verdicts": verdicts}


def test_a_run_for_gpt_4o_mini_sends_only_requests_openai_accepts(rules: ScriptedLLMServer) -> None:
    out = run(every_stage, gateway(rules, "gpt-4o-mini"))
    assert rules.refusals == []
    assert all(r.rejected_by != LLM_REQUEST_CHECK for key in ("mined", "apis", "dialogs") for r in out[key])
    assert all(d.accepted for d in out["dialogs"]), [d.reason for d in out["dialogs"]]
    formats = [r["response_format"]["json_schema"] for r in rules.requests if "response_format" in r]
    names = {f["name"] for f in formats}
    assert {"DocumentExtraction", "GeneratedAPI", "ConstrainedAPI", "NestedAPI", "ConstrainedNestedAPI", "UserTurn",
            "ToolResult"} <= names
    assert any(n.endswith("Answer") for n in names)  # the judges
    for fmt in formats:
        assert fmt["strict"] is False or strict_schema_problems(fmt["schema"]) == [], fmt["name"]
    tool_results = [f for f in formats if f["name"] == "ToolResult"]
    assert {f["strict"] for f in tool_results} == {True, False}  # the free-form map goes without strict
    assert all(r["max_tokens"] and "temperature" in r for r in rules.requests)


def test_a_run_for_gpt_5_mini_sends_reasoning_parameters(rules: ScriptedLLMServer) -> None:
    out = run(every_stage, gateway(rules, "gpt-5-mini"))
    assert rules.refusals == []
    assert all(d.accepted for d in out["dialogs"]), [d.reason for d in out["dialogs"]]
    assert all("max_completion_tokens" in r and "max_tokens" not in r and "temperature" not in r
               for r in rules.requests)


def assert_one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text and len(text) < 500, text
    for fragment in fragments:
        assert fragment in text, text


def test_a_wrong_reasoning_override_stops_at_the_first_refusal(rules: ScriptedLLMServer) -> None:
    gw = gateway(rules, "gpt-5-mini", reasoning_model=False, concurrency=1)

    async def work(gw: LLMGateway) -> Any:
        with pytest.raises(RequestRefused) as first:
            await generate_dialogs(PLANS, POOL, gw, seed=0)
        with pytest.raises(RequestRefused):  # later requests are refused here, without being sent
            await mining.mine_documents([DOC], gw, 0.0, 2000)
        return first.value

    refused = run(work, gw)
    assert isinstance(refused, EndpointError)  # a user error: the CLI prints it as its one line
    assert_one_line(refused, "the endpoint refused parameter 'max_tokens'", "Unsupported parameter",
                    "`reasoning_model: true`")
    assert refused.param == "max_tokens" and refused.config_key == "reasoning_model"
    assert len(rules.requests) == 1 and len(rules.refusals) == 1  # not retried, nor sent again
    assert gw.stats["dialog_generation"].retries == 0


def test_a_forced_temperature_is_refused_in_one_line(rules: ScriptedLLMServer) -> None:
    rules.fail_next(1, status=400, body=openai_rule_error({"model": "o4-mini", "temperature": 0.7}))
    with pytest.raises(RequestRefused) as refused:
        run(lambda gw: gw.chat(MESSAGES, stage="s"), gateway(rules, "gpt-4o-mini"))
    assert_one_line(refused.value, "parameter 'temperature'", "does not support 0.7", "`reasoning_model: true`")


def test_a_refused_schema_names_strict_schemas(rules: ScriptedLLMServer) -> None:
    loose = {"type": "json_schema", "json_schema": {"name": "ToolResult", "strict": True, "schema": {
        "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}
    with pytest.raises(RequestRefused) as refused:
        run(lambda gw: gw.chat(MESSAGES, stage="s", response_format=loose), gateway(rules))
    assert_one_line(refused.value, "parameter 'response_format'", "Invalid schema for response_format 'ToolResult'",
                    "additionalProperties", "`strict_schemas: false`")
    assert rules.refusals[0]["error"]["code"] == "invalid_json_schema"


def test_strict_schemas_false_sends_every_format_without_strict(rules: ScriptedLLMServer) -> None:
    async def work(gw: LLMGateway) -> Any:
        await gw.structured(UserTurn, MESSAGES, stage="s")
        return await gw.structured_json("ToolResult", OPTIONAL, MESSAGES, stage="s")

    assert run(work, gateway(rules, strict_schemas=False)).ok
    assert [r["response_format"]["json_schema"]["strict"] for r in rules.requests] == [False, False]
    assert rules.requests[1]["response_format"]["json_schema"]["schema"] == OPTIONAL


@pytest.mark.parametrize("body", [
    {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                          "9000 tokens.", "type": "invalid_request_error", "param": "messages",
               "code": "context_length_exceeded"}},
    {"error": {"message": "bad request", "type": "invalid_request_error"}},
])
def test_other_client_errors_still_reject_only_their_item(rules: ScriptedLLMServer, body: dict[str, Any]) -> None:
    rules.fail_next(1, status=400, body=body)
    with pytest.raises(LLMCallFailed, match="HTTP 400"):
        run(lambda gw: gw.chat(MESSAGES, stage="s"), gateway(rules))


def test_a_vllm_style_refusal_is_recognised(rules: ScriptedLLMServer) -> None:
    rules.fail_next(1, status=400, body={"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                                         "message": "Unsupported value: 'reasoning_effort' does not support 'xhigh' "
                                                    "with this model."})
    with pytest.raises(RequestRefused) as refused:
        run(lambda gw: gw.chat(MESSAGES, stage="s"), gateway(rules, "o4-mini", reasoning_effort="xhigh"))
    assert_one_line(refused.value, "parameter 'reasoning_effort'", "`reasoning_effort`")


# ---------------------------------------------------------------------------------------------- Retry-After


NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    rng = random.Random(0)
    assert retry_after_s({}, 60) is None
    assert retry_after_s({"Retry-After": "soon"}, 60) is None
    assert retry_after_s({"Retry-After": "0"}, 60) == 0
    for _ in range(50):
        assert 2.0 <= retry_after_s({"Retry-After": "2"}, 60, rng=rng) <= 2.4  # type: ignore[operator]
        assert 1.5 <= retry_after_s({"retry-after-ms": "1500", "Retry-After": "9"}, 60, rng=rng) <= 1.8  # type: ignore[operator]
        date = "Thu, 01 Jan 2026 12:00:10 GMT"
        assert 10.0 <= retry_after_s({"Retry-After": date}, 60, now=NOW, rng=rng) <= 12.0  # type: ignore[operator]
        capped = retry_after_s({"Retry-After": "3600"}, 60, rng=rng)
        assert capped is not None and 48.0 <= capped <= 60.0
    assert retry_after_s({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, 60, now=NOW) == 0  # a date passed
    spread = {round(retry_after_s({"Retry-After": "5"}, 60, rng=rng), 3) for _ in range(20)}  # type: ignore[arg-type]
    assert len(spread) > 10  # jittered
    before = random.getstate()
    assert 5.0 <= retry_after_s({"Retry-After": "5"}, 60) <= 6.0  # type: ignore[operator]
    assert random.getstate() == before  # without a generator, still not the process-wide one


def test_the_gateway_waits_as_told_but_never_past_the_cap(rules: ScriptedLLMServer) -> None:
    rules.fail_next(1, status=503, headers={"Retry-After": "3600"})
    rules.fail_next(1, status=429, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"})
    started = time.monotonic()
    result = run(lambda gw: gw.chat(MESSAGES, stage="s"), gateway(rules, retry_after_cap_s=0.2))
    assert result.content and time.monotonic() - started < 5
    assert len(rules.requests) == 3


# ------------------------------------------------------------------------------------------------ reasoning


def test_reasoning_is_kept_with_the_raw_outputs_and_the_assistant_turns(rules: ScriptedLLMServer) -> None:
    rules.script(lambda body: {"reasoning_content": f"thinking about {len(body['messages'])} messages"})
    rules.script(lambda body: {"reasoning": "openrouter style"} if body.get("tool_choice") == "required" else None)

    async def work(gw: LLMGateway) -> Any:
        chat = await gw.chat(MESSAGES, stage="s")
        structured = await gw.structured(UserTurn, MESSAGES, stage="s")
        dialogs = await generate_dialogs(PLANS[:1], POOL, gw, seed=0)
        return chat, structured, dialogs

    chat, structured, dialogs = run(work, gateway(rules))
    assert chat.reasoning == "thinking about 1 messages"
    assert chat.raw_text.startswith("<think>thinking about 1 messages</think>")
    assert structured.ok and structured.reasoning == "thinking about 1 messages"
    assert structured.raw_outputs[0].startswith("<think>") and json.loads(structured.raw_outputs[0].split(
        "</think>", 1)[1]) == structured.value.model_dump()
    dialog = dialogs[0]
    assert dialog.accepted, dialog.reason
    by_role = {(t.role, bool(t.tool_calls)): t.reasoning_content for t in dialog.turns}
    assert by_role[("assistant", True)] == "openrouter style"
    assert by_role[("assistant", False)].startswith("thinking about")
    assert by_role[("user", False)] is None and by_role[("tool", False)] is None
    assert any(raw.startswith("<think>") for raw in dialog.raw_outputs)
    assert dialog.model_validate_json(dialog.model_dump_json()) == dialog


# ------------------------------------------------------------------------------------ the run stops in one line


@pytest.mark.usefixtures("prefect_harness")
def test_a_refused_parameter_stops_the_run_with_one_line(rules: ScriptedLLMServer, mixed_corpus: str,
                                                         tmp_path: Any) -> None:
    """``toolace run`` against an endpoint that refuses every request: one line naming the parameter and the config
    key, at the first refusal (no batch retried, no rejected rows, no expectation suite)."""
    from typer.testing import CliRunner

    from toolace.cli import app
    from toolace.config import RunConfig

    config = tmp_path / "run.yaml"
    config.write_text("reasoning_model: false\napis: 2\ndialogs: 2\ntarget_model: none\n"
                      + ("template_families: []\n" if "template_families" in RunConfig.model_fields else ""))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--corpus", mixed_corpus, "--llm-base-url",
                                      rules.base_url, "--llm-model", "gpt-5-mini", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output  # Prefect logs the flow's failure above it
    assert "the endpoint refused parameter 'max_tokens'" in lines[0] and "`reasoning_model: true`" in lines[0]
    assert time.monotonic() - started < 60  # no batch waited for a retry
    assert 1 <= len(rules.refusals) <= 2 and len(rules.requests) == len(rules.refusals)  # each batch sent once


def test_a_cached_answer_keeps_its_reasoning(rules: ScriptedLLMServer, tmp_path: Any) -> None:
    rules.script(lambda body: {"reasoning_content": "cached thoughts"})

    async def work(gw: LLMGateway) -> Any:
        return [await gw.chat(MESSAGES, stage="s") for _ in range(2)]

    first, second = run(work, gateway(rules, cache_dir=str(tmp_path / "cache")))
    assert not first.cached and second.cached and len(rules.requests) == 1
    assert second.reasoning == first.reasoning == "cached thoughts"


class WithDefault(BaseModel):
    name: str
    count: int = 3
    note: str | None = None


def test_a_field_with_a_default_is_nullable_in_strict_mode_and_null_means_the_default(
        rules: ScriptedLLMServer) -> None:
    schema = response_format_for(WithDefault)["json_schema"]["schema"]
    assert schema["required"] == ["name", "count", "note"] and strict_schema_problems(schema) == []
    assert schema["properties"]["count"]["type"] == ["integer", "null"]
    rules.script(lambda body: {"json": {"name": "x", "count": None, "note": None}})
    answer = run(lambda gw: gw.structured(WithDefault, MESSAGES, stage="s"), gateway(rules))
    assert answer.value == WithDefault(name="x") and rules.refusals == []
