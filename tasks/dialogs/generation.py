"""Self-guided dialog generation with three agents: user, assistant and tool.

The user agent writes requests, the assistant agent calls the offered APIs (or answers without tools, or
asks for a missing value), and the tool agent simulates each call with a result that validates against
the API's result schema. Each assistant tool-call decision is sampled ``decision_samples`` times and kept
only when every sample makes the same calls. Dialog types: single call, parallel calls, dependent calls (a
later call uses a value an earlier call returned), non-tool, clarification; a multi-turn dialog chains
several of them in one conversation. Tool sets are the plan's target APIs, the APIs closest to them in
the context tree (shared tree nodes, then same domain), then distractors from other domains.

Every dialog ends accepted or rejected here with the reason and all raw LLM outputs; the verification
stage then applies the rule layer. Self-guidance (see :mod:`tasks.dialogs.self_guidance`) reruns a plan with an
extra instruction for the user agent (``DialogPlan.guidance``) when the target model finds the dialog
too easy or too hard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any, Protocol

from pydantic import BaseModel

from schemas.llm_outputs import UserTurn
from schemas.records import SEGMENT_TYPES, APISpec, Dialog, DialogType, SegmentType, ToolCall, Turn
from tasks.apis.schema_validity import schema_problem
from tasks.formats.call_format import openai_messages
from toolace.llm.gateway import LLMCallFailed, LLMGateway
from toolace.llm.rate_limit import REQUEST_PRIORITY

STAGE = "dialog_generation"
TOOL_CALL_CHECK = "tool_call_json_v1"
EXPECTED_CALL_CHECK = "expected_tool_call_v1"
OFFERED_TOOL_CHECK = "offered_tool_v1"
AGREEMENT_CHECK = "decision_agreement_v1"
DEPENDENT_CALL_CHECK = "dependent_call_v1"
API_SCHEMA_CHECK = "api_schema_v1"
_JSON_SCALARS = ("string", "integer", "number")
# Larger pools are sampled instead of scanned per plan: distractor tools beyond OTHERS_SCAN APIs, dependency
# partners outside the neighbourhood beyond LINK_SCAN APIs (smaller pools give exactly the scanned result).
OTHERS_SCAN = 2048
LINK_SCAN = 512


class ToolRunResult(Protocol):
    """An executed call (see :class:`ToolExecutor`): its result, seconds taken, and the check and reason of a
    failure (a time limit hit, an error answer, a result breaking the tool's outputSchema)."""

    result: Any
    duration_s: float
    error: str | None
    check: str | None


class ToolExecutor(Protocol):
    """Calls some tools for real instead of the tool agent (``tasks.mcp.execution.MCPToolExecutor``)."""

    def executes(self, api: APISpec) -> bool: ...

    async def execute(self, api: APISpec, arguments: dict[str, Any]) -> ToolRunResult: ...


class DependencyLink(BaseModel):
    """A dependent pair: ``to_param`` of the second API takes the ``from_field`` the first API returns."""

    from_api: str
    from_field: str
    to_api: str
    to_param: str


class Segment(BaseModel):
    kind: SegmentType
    targets: list[str] = []  # api_ids the user's request needs, in call order
    missing_param: str | None = None  # clarification: the required parameter the user leaves out
    link: DependencyLink | None = None  # dependent calls


class DialogPlan(BaseModel):
    index: int
    dialog_type: DialogType
    offered: list[str]  # api_ids offered to the assistant (targets + related + distractors), shuffled
    segments: list[Segment]
    planned_type: DialogType | None = None  # set when the planned type could not be built and was replaced
    round: int = 0  # self-guidance round this plan is for (0 = first version)
    guidance: str = ""  # the self-guidance instruction for the user agent

    @property
    def targets(self) -> list[str]:
        return [t for s in self.segments for t in s.targets]


# --------------------------------------------------------------------------------------------------- planning


def _scalar_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    return kind if kind in _JSON_SCALARS and "enum" not in schema else None


def _words(name: str) -> set[str]:
    return {w for w in name.lower().split("_") if len(w) > 2}


def find_link(first: APISpec, candidates: list[APISpec]) -> DependencyLink | None:
    """A result field of ``first`` that can feed a parameter of another API of the same JSON type,
    preferring required parameters and shared name words (``city`` -> ``city_name``)."""
    fields = {k: _scalar_type(v) for k, v in first.result_schema.get("properties", {}).items()
              if isinstance(v, dict)}
    best: tuple[int, DependencyLink] | None = None
    for second in candidates:
        if second.api_id == first.api_id:
            continue
        required = set(second.parameters.get("required") or [])
        for param, schema in second.parameters.get("properties", {}).items():
            kind = _scalar_type(schema) if isinstance(schema, dict) else None
            for field, field_kind in fields.items():
                if kind is None or field_kind != kind:
                    continue
                score = 2 * (param in required) + len(_words(param) & _words(field)) * 3
                if best is None or score > best[0]:
                    best = (score, DependencyLink(from_api=first.api_id, from_field=field, to_api=second.api_id,
                                                  to_param=param))
    return best[1] if best else None


def _segment(kind: SegmentType, target: APISpec, related: list[APISpec], usable: list[APISpec],
             rng: random.Random) -> Segment:
    if kind == "non_tool":
        return Segment(kind="non_tool")
    if kind == "clarification":
        required = target.parameters.get("required") or []
        if required:
            return Segment(kind="clarification", targets=[target.api_id], missing_param=rng.choice(required))
        return Segment(kind="single", targets=[target.api_id])  # nothing can be missing
    if kind == "dependent":
        # beyond the neighbourhood, a sample of the pool: a scan of every API per plan is quadratic at scale
        link = find_link(target, related) or find_link(
            target, usable if len(usable) <= LINK_SCAN else rng.sample(usable, LINK_SCAN))
        if link:
            return Segment(kind="dependent", targets=[link.from_api, link.to_api], link=link)
        return Segment(kind="single", targets=[target.api_id])  # nothing it returns feeds another API
    return Segment(kind=kind, targets=[target.api_id])


class Neighbourhoods:
    """The pool indexed by tree node and by domain, so each plan looks at its neighbourhood only (planning
    33,900 dialogs over 26,500 APIs scanned the whole pool per plan: about 40 minutes, now seconds)."""

    def __init__(self, usable: list[APISpec]) -> None:
        self.usable = usable
        self.position = {a.api_id: i for i, a in enumerate(usable)}
        self.by_node: dict[str, list[APISpec]] = {}
        self.by_domain: dict[str, list[APISpec]] = {}
        for api in usable:
            for node_id in dict.fromkeys(api.node_ids):
                self.by_node.setdefault(node_id, []).append(api)
            self.by_domain.setdefault(api.domain, []).append(api)

    def related(self, target: APISpec, rng: random.Random) -> list[APISpec]:
        """Sharing a tree node first, then the same domain, each shuffled (in pool order before the shuffle,
        so the result is the one a scan of the pool gives)."""
        found = {a.api_id: a for node_id in dict.fromkeys(target.node_ids) for a in self.by_node.get(node_id, [])
                 if a.api_id != target.api_id}
        shared = sorted(found.values(), key=lambda a: self.position[a.api_id])
        same_domain = [a for a in self.by_domain.get(target.domain, [])
                       if a.api_id != target.api_id and a.api_id not in found]
        rng.shuffle(shared)
        rng.shuffle(same_domain)
        return shared + same_domain

    def others(self, target: APISpec, count: int, rng: random.Random) -> list[APISpec]:
        """APIs of other domains in random order, as distractors: all of them (shuffled) in a pool of at most
        :data:`OTHERS_SCAN` APIs, else ``count`` drawn at random."""
        if len(self.usable) <= OTHERS_SCAN:
            others = [a for a in self.usable if a.domain != target.domain]
            rng.shuffle(others)
            return others
        picked: dict[str, APISpec] = {}
        for _ in range(20 * count):
            if len(picked) >= count:
                break
            api = self.usable[rng.randrange(len(self.usable))]
            if api.domain != target.domain:
                picked.setdefault(api.api_id, api)
        return list(picked.values())


def plan_dialogs(apis: list[APISpec], count: int, mix: dict[str, float], candidates: int,
                 rng: random.Random, max_segments: int = 3, start: int = 0,
                 segment_mix: dict[str, float] | None = None, pool: Neighbourhoods | None = None) -> list[DialogPlan]:
    """Choose each dialog's type by the configured mix, its target APIs and its candidate tools. ``start``: the
    first plan's index (plans made in chunks continue the sequence); ``segment_mix``: the weights of a multi-turn
    dialog's parts (default ``mix``); ``pool``: the usable APIs' neighbourhoods, when already built."""
    usable = [a for a in apis if a.accepted]
    if not usable:
        return []
    types = [t for t in mix if mix[t] > 0]
    weights = [mix[t] for t in types]
    parts = segment_mix if segment_mix is not None else mix
    segment_types = [t for t in parts if parts[t] > 0 and t in SEGMENT_TYPES] or list(SEGMENT_TYPES)
    segment_weights = [parts.get(t, 0) or 1.0 for t in segment_types]
    plans: list[DialogPlan] = []
    pool = pool or Neighbourhoods(usable)
    for index in range(start, start + count):
        dialog_type: DialogType = rng.choices(types, weights)[0]  # type: ignore[assignment]
        target = usable[index % len(usable)] if index < len(usable) else rng.choice(usable)
        related = pool.related(target, rng)
        kinds: list[SegmentType]
        if dialog_type == "multi_turn":
            kinds = rng.choices(segment_types, segment_weights, k=rng.randint(2, max_segments))  # type: ignore[arg-type]
        else:
            kinds = [dialog_type]  # type: ignore[list-item]
        segments: list[Segment] = []
        for n, kind in enumerate(kinds):
            # later parts of a conversation move on to a related API when there is one
            segment_target = target if n == 0 or not related else related[(n - 1) % len(related)]
            segments.append(_segment(kind, segment_target, related, usable, rng))
        built: DialogType = "multi_turn" if len(segments) > 1 else segments[0].kind
        targets = list(dict.fromkeys(t for s in segments for t in s.targets))
        others = pool.others(target, candidates + len(targets), rng)
        fill = list(dict.fromkeys(a.api_id for a in related + others if a.api_id not in targets))
        offered = (targets + fill)[: max(candidates, len(targets))]
        if not targets:  # non-tool: the offered tools are the target's neighbourhood, none of it asked for
            offered = ([target.api_id] + fill)[:candidates]
        rng.shuffle(offered)
        plans.append(DialogPlan(index=index, dialog_type=built, offered=offered, segments=segments,
                                planned_type=dialog_type if built != dialog_type else None))
    return plans


# ----------------------------------------------------------------------------------------------- the agents


def _api_brief(api: APISpec) -> str:
    return json.dumps({"name": api.name, "description": api.description, "parameters": api.parameters},
                      ensure_ascii=False)


def _user_instruction(segment: Segment, offered: list[APISpec], apis: dict[str, APISpec]) -> str:
    if segment.kind == "non_tool":
        names = ", ".join(a.name for a in offered)
        return ("Write a short, friendly message to an assistant: a question or small talk that none of "
                f"these tools can answer: {names}. Do not ask for anything those tools do.")
    target = apis[segment.targets[0]]
    if segment.kind == "parallel":
        return (f"Write one request that needs this API called twice with different values "
                f"(for example two cities or two dates), giving every required value: {_api_brief(target)}")
    if segment.kind == "clarification":
        return (f"Write a request for this API but do NOT mention any value for '{segment.missing_param}'; "
                f"give the other required values: {_api_brief(target)}")
    if segment.kind == "dependent" and segment.link:
        second = apis[segment.link.to_api]
        return (f"Write one request that needs two steps: first this API: {_api_brief(target)}; then, using the "
                f"'{segment.link.from_field}' it returns as '{segment.link.to_param}', this API: "
                f"{_api_brief(second)}. Give every value the first step needs; do not give "
                f"'{segment.link.to_param}' yourself.")
    return f"Write a request that needs this API, giving every required value in your words: {_api_brief(target)}"


def dialog_id(plan: DialogPlan, seed: int) -> str:
    kinds = [s.kind for s in plan.segments]
    return hashlib.sha1(f"{seed}:{plan.index}:{plan.dialog_type}:{kinds}:{plan.offered}".encode()).hexdigest()[:16]


def _canonical(calls: list[ToolCall]) -> list[str]:
    """Order-free form of a decision: what two samples must share to agree."""
    def norm(value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.split()).lower()
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {str(k): norm(v) for k, v in value.items()}
        return value

    return sorted(json.dumps([c.name, norm(c.arguments)], sort_keys=True) for c in calls)


def _values(value: Any) -> list[Any]:
    """Every scalar inside a tool result (a dependent call must reuse one of them)."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return [value]


class _Rejected(Exception):
    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check


class DialogBuilder:
    """Runs the three agents for one plan; raises :class:`_Rejected` to end the dialog with a reason."""

    def __init__(self, plan: DialogPlan, apis: dict[str, APISpec], gateway: LLMGateway, seed: int,
                 decision_samples: int = 1, executor: ToolExecutor | None = None) -> None:
        self.plan = plan
        self.apis = apis
        self.gateway = gateway
        self.executor = executor
        self.samples = decision_samples
        self.tools = [apis[i] for i in plan.offered]
        self.dialog = Dialog(dialog_id=dialog_id(plan, seed), dialog_type=plan.dialog_type,
                             domain=apis[(plan.targets or plan.offered)[0]].domain, tools=self.tools,
                             segments=[s.kind for s in plan.segments], decision_samples=decision_samples)

    def _keep(self, raw: list[str] | str) -> None:
        self.dialog.raw_outputs.extend([raw] if isinstance(raw, str) else raw)

    def _sample(self, k: int = 0) -> int:
        return self.plan.index * 1000 + self.plan.round * 100 + k

    async def user_says(self, instruction: str) -> None:
        answer = await self.gateway.structured(UserTurn, [
            {"role": "system", "content": "You play a user of an AI assistant. Write only the user's message."},
            {"role": "user", "content": instruction},
        ], stage=STAGE, sample=self._sample())
        self._keep(answer.raw_outputs)
        if answer.value is None or not answer.value.message.strip():
            raise _Rejected(answer.check or "user_turn_v1", answer.error or "the user agent wrote nothing")
        self.dialog.turns.append(Turn(role="user", content=answer.value.message.strip()))

    def _assistant_context(self, guidance: str) -> list[dict[str, Any]]:
        system = ("You are a helpful assistant with access to functions. " + guidance)
        return [{"role": "system", "content": system}, *openai_messages(self.dialog.turns)]

    async def _one_decision(self, k: int) -> tuple[list[ToolCall], str | None]:
        """One sample of the tool-call decision: its calls, and the reasoning the endpoint returned with them."""
        result = await self.gateway.chat(
            self._assistant_context("Call the functions needed for the user's request now."),
            stage=STAGE, tools=[t.tool_definition() for t in self.tools], tool_choice="required",
            sample=self._sample(k),
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
        return calls, result.reasoning

    async def assistant_calls(self) -> list[ToolCall]:
        """The tool-call decision, sampled ``decision_samples`` times: kept only when all samples agree."""
        sampled = await asyncio.gather(*(self._one_decision(k) for k in range(self.samples)))
        decisions = [calls for calls, _ in sampled]
        forms = [_canonical(d) for d in decisions]
        if any(form != forms[0] for form in forms[1:]):
            shown = "; ".join(" + ".join(c.name for c in d) or "no call" for d in decisions)
            raise _Rejected(AGREEMENT_CHECK, f"{self.samples} samples of the tool-call decision disagree ({shown})")
        calls = decisions[0]
        by_name = {t.name for t in self.tools}
        for call in calls:
            if call.name not in by_name:
                raise _Rejected(OFFERED_TOOL_CHECK, f"the assistant called {call.name}, which is not offered")
        self.dialog.turns.append(Turn(role="assistant", tool_calls=calls, reasoning_content=sampled[0][1]))
        return calls

    async def tool_answers(self, calls: list[ToolCall]) -> list[Any]:
        by_name = {t.name: t for t in self.tools}
        results: list[Any] = []
        for call in calls:
            api = by_name[call.name]
            if self.executor is not None and self.executor.executes(api):
                results.append(await self._executed(api, call))
                continue
            answer = await self.gateway.structured_json(
                "ToolResult", api.result_schema, [
                    {"role": "system", "content": "You simulate an API server. Return only the API's result."},
                    {"role": "user", "content": f"API: {_api_brief(api)}\nCall arguments: "
                     f"{json.dumps(call.arguments, ensure_ascii=False)}\nReturn a realistic result."},
                ], stage=STAGE, sample=self._sample(),
            )
            self._keep(answer.raw_outputs)
            if answer.value is None:
                raise _Rejected(answer.check or "tool_result_v1", answer.error or "the tool agent gave no result")
            results.append(answer.value)
            self.dialog.turns.append(Turn(role="tool", tool_call_id=call.id, name=call.name,
                                          content=json.dumps(answer.value, ensure_ascii=False)))
        return results

    async def _executed(self, api: APISpec, call: ToolCall) -> Any:
        """The tool turn of a call really made: its result, duration and error; a failed call ends the dialog."""
        assert self.executor is not None
        run = await self.executor.execute(api, call.arguments)
        self.dialog.turns.append(Turn(role="tool", tool_call_id=call.id, name=call.name, executed=True,
                                      content=json.dumps(run.result, ensure_ascii=False),
                                      duration_s=round(run.duration_s, 3), error=run.error))
        if run.error is not None:
            raise _Rejected(run.check or "tool_execution_v1", run.error)
        return run.result

    async def assistant_says(self, guidance: str) -> None:
        result = await self.gateway.chat(self._assistant_context(guidance), stage=STAGE,
                                         sample=self._sample(), max_tokens=256)
        text = (result.content or "").strip()
        self._keep(result.raw_text)
        if not text:
            raise _Rejected("assistant_turn_v1", "the assistant agent wrote nothing")
        self.dialog.turns.append(Turn(role="assistant", content=text, reasoning_content=result.reasoning))

    def _instruction(self, segment: Segment, part: int) -> str:
        text = _user_instruction(segment, self.tools, self.apis)
        if part > 0:
            text = (f"You are continuing a conversation with an assistant; your last message was: "
                    f"{next(t.content for t in reversed(self.dialog.turns) if t.role == 'user')!r}. Now send your "
                    f"next message. {text}")
        if self.plan.guidance:
            text += f"\nAlso: {self.plan.guidance}"
        return text

    async def run_segment(self, segment: Segment, part: int) -> None:
        await self.user_says(self._instruction(segment, part))
        if segment.kind == "non_tool":
            await self.assistant_says("None of your functions fits this message: answer it yourself, "
                                      "briefly, without calling a function.")
            return
        if segment.kind == "clarification":
            await self.assistant_says(f"A required value is missing ('{segment.missing_param}'): ask the user "
                                      "for it in one short question. Do not call a function yet.")
            missing = self.apis[segment.targets[0]].parameters["properties"][segment.missing_param]
            await self.user_says(f"You asked an assistant for this: {self.dialog.turns[-2].content}\n"
                                 f"It asked you: {self.dialog.turns[-1].content}\nAnswer with a value for "
                                 f"'{segment.missing_param}' ({missing})")
        calls = await self.assistant_calls()
        results = await self.tool_answers(calls)
        used = [c.name for c in calls]
        if segment.kind == "dependent" and segment.link:
            link = segment.link
            second = self.apis[link.to_api]
            follow = await self.assistant_calls()
            await self.tool_answers(follow)
            used += [c.name for c in follow]
            fed = [c.arguments.get(link.to_param) for c in follow if c.name == second.name]
            produced = _values(results)
            if not fed:
                raise _Rejected(DEPENDENT_CALL_CHECK, f"the second step does not call {second.name}")
            if not any(v is not None and v in produced for v in fed):
                raise _Rejected(DEPENDENT_CALL_CHECK, f"{second.name}.{link.to_param} does not reuse a value "
                                                      f"the first call returned")
        await self.assistant_says("Summarise the function results for the user in one or two sentences.")
        self.dialog.apis_used = list(dict.fromkeys([*self.dialog.apis_used, *used]))

    def _check_offered(self) -> None:
        """Every offered API must have valid parameter and result schemas (before any LLM request): an
        imported or pooled API with a broken schema would make the tool agent's answer unverifiable."""
        for api in self.tools:
            for label, schema in (("parameter", api.parameters), ("result", api.result_schema)):
                problem = schema_problem(schema)
                if problem:
                    raise _Rejected(API_SCHEMA_CHECK, f"offered API {api.name} ({api.api_id}) has an invalid "
                                                      f"{label} schema: {problem}")

    async def run(self) -> Dialog:
        try:
            self._check_offered()
            for part, segment in enumerate(self.plan.segments):
                await self.run_segment(segment, part)
        except _Rejected as exc:
            self.dialog.reject(exc.check, str(exc))
        except LLMCallFailed as exc:
            self.dialog.reject(exc.check, str(exc))
        return self.dialog


async def generate_dialogs(plans: list[DialogPlan], apis: list[APISpec], gateway: LLMGateway,
                           seed: int, decision_samples: int = 1, executor: ToolExecutor | None = None) -> list[Dialog]:
    """``executor``: answers the calls of the tools it executes (imported MCP tools) instead of the tool agent."""
    by_id = {a.api_id: a for a in apis}

    async def build(plan: DialogPlan) -> Dialog:
        # each dialog is its own asyncio task: its requests wait for a slot with the plan's index as priority, so
        # the run's oldest dialogs go first and later ones (this batch's, the next batch's) fill the idle slots
        REQUEST_PRIORITY.set(plan.index)
        return await DialogBuilder(plan, by_id, gateway, seed, decision_samples, executor).run()

    return list(await asyncio.gather(*(build(p) for p in plans)))
