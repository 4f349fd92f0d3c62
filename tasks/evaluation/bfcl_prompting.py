"""BFCL's prompt-mode system prompt and the shapes every BFCL evaluation shares: an :class:`Answer`, an
:class:`AnswerSource` (a model answers a list of chats) and a :class:`CategoryScore`.

Kept apart from :mod:`tasks.evaluation.bfcl_eval` (which re-exports all of it) so that the evaluations built on
it (single-turn, function-calling mode, multi-turn) import it without importing each other.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.evaluation.statistics import Interval, accuracy_interval, counts_interval

PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
PERSONA = "You are an expert in composing functions."
TASK = ("You are given a question and a set of possible functions. Based on the question, you will need to make "
        "one or more function/tool calls to achieve the purpose. If none of the functions can be used, point it "
        "out. If the given question lacks the parameters required by the function, also point it out.")
OUTPUT_FORMAT = "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]"
TOOL_CALL_FORMAT = ("You should only return the function calls in your response.\n\nIf you decide to invoke any of "
                    f"the function(s), you MUST put it in the format of {OUTPUT_FORMAT}.  You SHOULD NOT include any "
                    "other text in the response.")  # two spaces: BFCL's empty {param_types} sits between
MULTITURN_BEHAVIOR = ("At each turn, you should try your best to complete the tasks requested by the user within the "
                      "current turn. Continue to output functions to call until you have fulfilled the user's request "
                      "to the best of your ability. Once you have no more functions to call, the system will consider "
                      "the current turn complete and proceed to the next turn or task.")

def prompt_functions(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The function docs as BFCL shows them to the model: a copy, each description ending in its Python hint."""
    docs = copy.deepcopy(functions)
    for doc in docs:
        doc["description"] = str(doc.get("description", "")) + PYTHON_HINT
    return docs


def system_prompt(functions: list[dict[str, Any]]) -> str:
    """BFCL's default prompt-mode system prompt (persona and task run together, as BFCL's template has it)."""
    tools = f"Here is a list of functions in json format that you can invoke.\n{json.dumps(functions, indent=4)}\n"
    return f"{PERSONA}{TASK}\n\n{TOOL_CALL_FORMAT}\n\n{MULTITURN_BEHAVIOR}\n\n{tools}"


@dataclass
class Answer:
    """A model's answer text, or why there is none (``error``)."""

    text: str | None
    error: str | None = None
    stopped: str | None = None  # the stop rule and its reason when the answer was cut short (its verdict settled)


class AnswerSource(Protocol):
    description: str
    chunk_size: int

    def answer(self, chats: list[list[dict[str, str]]]) -> list[Answer]: ...


@dataclass
class CategoryScore:
    category: str
    items: int
    correct: int
    outcomes: tuple[bool, ...] = field(default=(), compare=False)  # each item's verdict, in item order

    def interval(self) -> Interval:
        """The accuracy with its 95% bootstrap interval over items."""
        if self.outcomes:
            return accuracy_interval(self.outcomes)
        return counts_interval(self.correct, self.items)

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else 0.0


def prompted_first_turn(question: list[list[dict[str, Any]]], functions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The first turn of an item or entry with BFCL's prompt-mode system prompt in front
    (``system_prompt_pre_processing_chat_model``: merged into a system message the turn already has)."""
    messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in question[0]]
    prompt = system_prompt(prompt_functions(functions))
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = prompt + "\n\n" + messages[0]["content"]
    else:
        messages.insert(0, {"role": "system", "content": prompt})
    return messages
