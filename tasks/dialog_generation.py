"""Self-guided dialog generation with three agents: user, assistant and tool.

The user agent writes requests, the assistant agent calls the offered APIs (or answers, or asks for a
missing value), and the tool agent simulates each call with a result that validates against the API's
result schema. Every dialog ends accepted or rejected here with the reason and all raw LLM outputs;
the verification stage then applies the rule layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any

from pydantic import BaseModel

from schemas.llm_outputs import UserTurn
from schemas.records import APISpec, Dialog, DialogType, ToolCall, Turn
from tasks.call_format import openai_messages
from toolace.llm.gateway import LLMCallFailed, LLMGateway

STAGE = "dialog_generation"
TOOL_CALL_CHECK = "tool_call_json_v1"
EXPECTED_CALL_CHECK = "expected_tool_call_v1"
OFFERED_TOOL_CHECK = "offered_tool_v1"
SUPPORTED_TYPES: tuple[DialogType, ...] = ("single", "parallel", "non_tool", "clarification")


class DialogPlan(BaseModel):
    index: int
    dialog_type: DialogType
    targets: list[str] = []  # api_ids the user's request needs
    offered: list[str]  # api_ids offered to the assistant (targets + distractors), shuffled
    missing_param: str | None = None  # clarification: the required parameter the user leaves out


def plan_dialogs(apis: list[APISpec], count: int, mix: dict[str, float], candidates: int,
                 rng: random.Random) -> list[DialogPlan]:
    """Choose each dialog's type by the configured mix, its target API and its candidate tools."""
    usable = [a for a in apis if a.accepted]
    if not usable:
        return []
    types = [t for t in mix if mix[t] > 0]
    weights = [mix[t] for t in types]
    by_domain: dict[str, list[APISpec]] = {}
    for api in usable:
        by_domain.setdefault(api.domain, []).append(api)
    plans: list[DialogPlan] = []
    for index in range(count):
        dialog_type: DialogType = rng.choices(types, weights)[0]  # type: ignore[assignment]
        target = usable[index % len(usable)] if index < len(usable) else rng.choice(usable)
        missing = None
        if dialog_type == "clarification":
            required = target.parameters.get("required") or []
            if not required:
                dialog_type = "single"  # nothing can be missing: the plan becomes a single call
            else:
                missing = rng.choice(required)
        related = [a for a in by_domain[target.domain] if a.api_id != target.api_id]
        others = [a for a in usable if a.domain != target.domain]
        rng.shuffle(related)
        rng.shuffle(others)
        distractors = (related + others)[: max(0, candidates - 1)]
        offered = [target.api_id] + [a.api_id for a in distractors]
        rng.shuffle(offered)
        plans.append(DialogPlan(index=index, dialog_type=dialog_type,
                                targets=[] if dialog_type == "non_tool" else [target.api_id],
                                offered=offered, missing_param=missing))
    return plans


def _api_brief(api: APISpec) -> str:
    return json.dumps({"name": api.name, "description": api.description, "parameters": api.parameters},
                      ensure_ascii=False)


def _user_instruction(plan: DialogPlan, apis: dict[str, APISpec]) -> str:
    if plan.dialog_type == "non_tool":
        offered = ", ".join(apis[i].name for i in plan.offered)
        return ("Write a short, friendly message to an assistant: a question or small talk that none of "
                f"these tools can answer: {offered}. Do not ask for anything those tools do.")
    target = apis[plan.targets[0]]
    if plan.dialog_type == "parallel":
        return (f"Write one request that needs this API called twice with different values "
                f"(for example two cities or two dates), giving every required value: {_api_brief(target)}")
    if plan.dialog_type == "clarification":
        return (f"Write a request for this API but do NOT mention any value for '{plan.missing_param}'; "
                f"give the other required values: {_api_brief(target)}")
    return f"Write a request that needs this API, giving every required value in your words: {_api_brief(target)}"


def dialog_id(plan: DialogPlan, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{plan.index}:{plan.dialog_type}:{plan.offered}".encode()).hexdigest()[:16]




class _Rejected(Exception):
    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check


class DialogBuilder:
    """Runs the three agents for one plan; raises :class:`_Rejected` to end the dialog with a reason."""

    def __init__(self, plan: DialogPlan, apis: dict[str, APISpec], gateway: LLMGateway, seed: int) -> None:
        self.plan = plan
        self.apis = apis
        self.gateway = gateway
        self.tools = [apis[i] for i in plan.offered]
        self.dialog = Dialog(dialog_id=dialog_id(plan, seed), dialog_type=plan.dialog_type,
                             domain=apis[(plan.targets or plan.offered)[0]].domain, tools=self.tools)

    def _keep(self, raw: list[str] | str) -> None:
        self.dialog.raw_outputs.extend([raw] if isinstance(raw, str) else raw)

    async def user_says(self, instruction: str) -> None:
        answer = await self.gateway.structured(UserTurn, [
            {"role": "system", "content": "You play a user of an AI assistant. Write only the user's message."},
            {"role": "user", "content": instruction},
        ], stage=STAGE, sample=self.plan.index)
        self._keep(answer.raw_outputs)
        if answer.value is None or not answer.value.message.strip():
            raise _Rejected(answer.check or "user_turn_v1", answer.error or "the user agent wrote nothing")
        self.dialog.turns.append(Turn(role="user", content=answer.value.message.strip()))

    def _assistant_context(self, guidance: str) -> list[dict[str, Any]]:
        system = ("You are a helpful assistant with access to functions. " + guidance)
        return [{"role": "system", "content": system}, *openai_messages(self.dialog.turns)]

    async def assistant_calls(self) -> list[ToolCall]:
        result = await self.gateway.chat(
            self._assistant_context("Call the functions needed to fulfil the user's request."),
            stage=STAGE, tools=[t.tool_definition() for t in self.tools], tool_choice="required",
            sample=self.plan.index,
        )
        self._keep(result.raw_text)
        if not result.tool_calls:
            cut = " (answer cut off at max_tokens)" if result.finish_reason == "length" else ""
            raise _Rejected(EXPECTED_CALL_CHECK, f"the assistant agent made no function call{cut}")
        calls: list[ToolCall] = []
        for n, call in enumerate(result.tool_calls):
            try:
                arguments = json.loads(call.arguments_text)
            except json.JSONDecodeError as exc:
                raise _Rejected(TOOL_CALL_CHECK, f"arguments of {call.name} are not JSON: {exc.msg}") from exc
            if not isinstance(arguments, dict):
                raise _Rejected(TOOL_CALL_CHECK, f"arguments of {call.name} are not an object")
            calls.append(ToolCall(id=f"call_{self.dialog.dialog_id[:8]}_{len(self.dialog.turns)}_{n}",
                                  name=call.name, arguments=arguments))
        self.dialog.turns.append(Turn(role="assistant", tool_calls=calls))
        return calls

    async def tool_answers(self, calls: list[ToolCall]) -> None:
        by_name = {t.name: t for t in self.tools}
        for call in calls:
            api = by_name.get(call.name)
            if api is None:
                raise _Rejected(OFFERED_TOOL_CHECK, f"the assistant called {call.name}, which is not offered")
            answer = await self.gateway.structured_json(
                "ToolResult", api.result_schema, [
                    {"role": "system", "content": "You simulate an API server. Return only the API's result."},
                    {"role": "user", "content": f"API: {_api_brief(api)}\nCall arguments: "
                     f"{json.dumps(call.arguments, ensure_ascii=False)}\nReturn a realistic result."},
                ], stage=STAGE, sample=self.plan.index,
            )
            self._keep(answer.raw_outputs)
            if answer.value is None:
                raise _Rejected(answer.check or "tool_result_v1", answer.error or "the tool agent gave no result")
            self.dialog.turns.append(Turn(role="tool", tool_call_id=call.id, name=call.name,
                                          content=json.dumps(answer.value, ensure_ascii=False)))

    async def assistant_says(self, guidance: str) -> None:
        result = await self.gateway.chat(self._assistant_context(guidance), stage=STAGE,
                                         sample=self.plan.index, max_tokens=256)
        text = (result.content or "").strip()
        self._keep(result.raw_text)
        if not text:
            raise _Rejected("assistant_turn_v1", "the assistant agent wrote nothing")
        self.dialog.turns.append(Turn(role="assistant", content=text))

    async def run(self) -> Dialog:
        plan = self.plan
        try:
            if plan.dialog_type not in SUPPORTED_TYPES:
                raise _Rejected("dialog_type_supported_v1", f"dialog type {plan.dialog_type} is not generated yet")
            await self.user_says(_user_instruction(plan, self.apis))
            if plan.dialog_type == "non_tool":
                await self.assistant_says("None of your functions fits this message: answer it yourself, "
                                          "briefly, without calling a function.")
                return self.dialog
            if plan.dialog_type == "clarification":
                await self.assistant_says(f"A required value is missing ('{plan.missing_param}'): ask the user "
                                          "for it in one short question. Do not call a function yet.")
                target = self.apis[plan.targets[0]]
                await self.user_says(f"You asked an assistant for this: {self.dialog.turns[0].content}\n"
                                     f"It asked you: {self.dialog.turns[-1].content}\nAnswer with a value for "
                                     f"'{plan.missing_param}' ({target.parameters['properties'][plan.missing_param]})")
            calls = await self.assistant_calls()
            await self.tool_answers(calls)
            await self.assistant_says("Summarise the function results for the user in one or two sentences.")
            self.dialog.apis_used = list(dict.fromkeys(c.name for c in calls))
        except _Rejected as exc:
            self.dialog.reject(exc.check, str(exc))
        except LLMCallFailed as exc:
            self.dialog.reject(exc.check, str(exc))
        return self.dialog


async def generate_dialogs(plans: list[DialogPlan], apis: list[APISpec], gateway: LLMGateway,
                           seed: int) -> list[Dialog]:
    by_id = {a.api_id: a for a in apis}
    return list(await asyncio.gather(*(DialogBuilder(p, by_id, gateway, seed).run() for p in plans)))
