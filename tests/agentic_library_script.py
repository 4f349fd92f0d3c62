"""Scripted-server rules that play every LLM role of the agentic pipeline on the library environment.

Used by tests/test_trajectories.py and benchmarks/agentic_environments.py: the environment designer answers the
library design (:mod:`tasks.environments.library_example`), the blueprint writer one of three tasks by the task
number in its prompt, the committee passes, the simulated user states its goal and then thanks the assistant, and
the assistant makes the goal's calls and then reports the values the goal asks for.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tasks.environments.library_example import library_proposal_data
from tests.scripted_llm_server import ScriptedLLMServer, last_user_text, schema_name


def _args(**values: Any) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


# task number -> (blueprint, the assistant's calls for it, its final answer)
TASKS: dict[int, tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], str]] = {
    1: ({"user_goal": "I am member m1 and I want to borrow the book b1. Tell me my loan id.", "changes_state": True,
         "actions": [{"api": "checkout_book", "arguments": _args(book_id="b1", member_id="m1")}], "outputs": ["2"]},
        [("checkout_book", {"book_id": "b1", "member_id": "m1"})], "Done: your loan id is 2."),
    2: ({"user_goal": "What is the title of the book b3, and is it available?", "changes_state": False,
         "actions": [{"api": "get_book", "arguments": _args(book_id="b3")}], "outputs": ["Persuasion"]},
        [("get_book", {"book_id": "b3"})], "The book b3 is Persuasion, and it is available."),
    3: ({"user_goal": "I am returning my loan number 1. Which book was it?", "changes_state": True,
         "actions": [{"api": "return_book", "arguments": _args(loan_id=1)}], "outputs": ["b2"]},
        [("return_book", {"loan_id": 1})], "Thanks, the book b2 is returned."),
}
_TASK = re.compile(r"Write task (\d+):")


def _goal_task(text: str) -> int | None:
    for number, (blueprint, _, _) in TASKS.items():
        if blueprint["user_goal"] in text:
            return number
    return None


def committee_and_user(name: str, text: str) -> dict[str, Any] | None:
    """The roles every scripted environment plays alike: the committee's judges pass the blueprint, and the
    simulated user states the goal, then thanks the assistant once it has answered; None for other requests."""
    if name in ("JudgeAnswer", "HallucinationAnswer"):
        answer: dict[str, Any] = {"reason": "The calls do what the goal asks.", "passed": True}
        if name == "HallucinationAnswer":
            answer["ungrounded_values"] = []
        return {"json": answer}
    if name == "SimulatedUserTurn":
        goal = text.split("Your goal: ", 1)[-1].split("\n", 1)[0]
        if re.search(r"^assistant: ", text, re.MULTILINE):
            return {"json": {"message": "Thank you, that is all.", "finished": True}}
        return {"json": {"message": goal, "finished": False}}
    return None


def library_rule(body: dict[str, Any]) -> dict[str, Any] | None:
    name = schema_name(body)
    text = last_user_text(body)
    if name == "EnvironmentProposal":
        return {"json": library_proposal_data()}
    if name == "BlueprintProposal":
        match = _TASK.search(text)
        number = (int(match.group(1)) - 1) % len(TASKS) + 1 if match else 1
        return {"json": TASKS[number][0]}
    if (answer := committee_and_user(name, text)) is not None:
        return answer
    if body.get("tools"):
        messages = body.get("messages") or []
        users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        number = _goal_task(users[0] if users else "")
        if number is None:
            return {"content": "How can I help?"}
        _, calls, final = TASKS[number]
        if messages and messages[-1].get("role") == "tool":
            return {"content": final}
        return {"tool_calls": [{"name": n, "arguments": json.dumps(a)} for n, a in calls]}
    return None


# loss steering (tasks.environments.agentic_guidance): a blueprint prompt with "too hard" guidance names the task it
# replaces; task number -> the simpler task written instead (a lookup), or None: the same task proposed again
SIMPLER_TASKS: dict[int, dict[str, Any] | None] = {
    1: {"user_goal": "What is the title of the book b1?", "changes_state": False,
        "actions": [{"api": "get_book", "arguments": _args(book_id="b1")}], "outputs": ["Dune"]},
    2: None,
    3: {"user_goal": "What is the title of the book b2?", "changes_state": False,
        "actions": [{"api": "get_book", "arguments": _args(book_id="b2")}], "outputs": ["Emma"]},
}
_TITLES = {"b1": "Dune", "b2": "Emma"}


def guided_library_rule(body: dict[str, Any]) -> dict[str, Any] | None:
    """The guided blueprint writer (tasks 1 and 3 replaced by lookups, task 2 repeated) and the assistant's answers
    to the lookups; everything else is left to :func:`library_rule` (script this rule after it, so it is tried
    first)."""
    text = last_user_text(body)
    if schema_name(body) == "BlueprintProposal" and "too hard for the target model" in text:
        number = _goal_task(text) or 2
        return {"json": SIMPLER_TASKS[number] or TASKS[number][0]}
    if body.get("tools"):
        messages = body.get("messages") or []
        users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        task = next((t for t in SIMPLER_TASKS.values() if t is not None and users and users[0] == t["user_goal"]),
                    None)
        if task is None:
            return None
        book = task["actions"][0]["arguments"][0]["value"]
        if messages[-1].get("role") == "tool":
            return {"content": f"The book {book} is {_TITLES[book]}."}
        return {"tool_calls": [{"name": "get_book", "arguments": json.dumps({"book_id": book})}]}
    return None


def script_library(server: ScriptedLLMServer) -> None:
    server.script(library_rule)
