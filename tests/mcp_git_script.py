"""Scripted-server rules that play every LLM role of the agentic pipeline on the real ``mcp-server-git`` environment.

The environment is :func:`tests.test_mcp_environments.git_spec` over :func:`tests.test_mcp_environments.seeded_repo`
(one commit, ``first commit``; README.md modified and notes.txt untracked). Used by
tests/test_mcp_environment_flow.py and ``benchmarks/agentic_environments.py --mcp-git N``: the blueprint writer
answers task ``k`` of the prompt ("Write task k:") with :func:`git_task` ``(k)``, the committee passes, the simulated
user states its goal and then thanks the assistant, and the assistant makes the goal's calls in one turn and then
reports the values the goal asks for. Nothing here answers an environment design (there is none to design: the
server is the environment).

The tasks follow the blueprint prompt's three kinds (task ``k``'s kind is ``(k - 1) % 3``): a commit of notes.txt,
a lookup, and a commit of both files; later rounds of the same kind change the commit message (so every commit
task is a task of its own) and cycle through three lookups. Commits hash the same in every execution (the spec
fixes the identities and dates), so a trajectory's final state equals its blueprint's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.agentic_library_script import committee_and_user
from tests.scripted_llm_server import ScriptedLLMServer, last_user_text, schema_name

REPO = "/workspace"
COMMITTED = "committed successfully"  # in "Changes committed successfully with hash ..."
_TASK = re.compile(r"Write task (\d+):")


@dataclass(frozen=True)
class GitTask:
    blueprint: dict[str, Any]  # a BlueprintProposal's JSON
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # the assistant's calls, in one turn
    answer: str = ""  # the assistant's final message

    @property
    def goal(self) -> str:
        return str(self.blueprint["user_goal"])


def _action(api: str, **values: Any) -> dict[str, Any]:
    return {"api": api, "arguments": [{"name": k, "value": v} for k, v in values.items()]}


# (goal, probe tool, its arguments, the output, the assistant's answer)
_LOOKUPS: tuple[tuple[str, str, dict[str, Any], str, str], ...] = (
    (f"Which file in my repository at {REPO} is not tracked by git yet?", "git_status", {}, "notes.txt",
     "The file notes.txt is not tracked yet."),
    (f"What is the message of the latest commit in my repository at {REPO}?", "git_log", {"max_count": 1},
     "first commit", "The latest commit's message is: first commit."),
    (f"Which file in my repository at {REPO} has changes that are not staged yet?", "git_status", {}, "README.md",
     "README.md has changes that are not staged yet."),
)


def git_task(number: int) -> GitTask:
    """Task ``number`` (1-based, as the blueprint prompt counts): see the module docstring."""
    kind, round_ = (number - 1) % 3, (number - 1) // 3
    part = f", part {round_ + 1}" if round_ else ""
    if kind == 1:
        goal, tool, extra, output, answer = _LOOKUPS[round_ % len(_LOOKUPS)]
        return GitTask({"user_goal": goal, "changes_state": False, "outputs": [output],
                        "actions": [_action(tool, repo_path=REPO, **extra)]},
                       [(tool, {"repo_path": REPO, **extra})], answer)
    if kind == 0:
        message, files = f"Add notes{part}", ["notes.txt"]
        goal = f"In my repository at {REPO}, stage notes.txt and commit it with the message '{message}'."
    else:
        message, files = f"Update README and add notes{part}", ["README.md", "notes.txt"]
        goal = (f"In my repository at {REPO}, stage both README.md and notes.txt and commit them together with the "
                f"message '{message}'.")
    # a strict answer has no lists: the files as the JSON array the environment turns into git_add's list
    return GitTask({"user_goal": goal, "changes_state": True, "outputs": [COMMITTED],
                    "actions": [_action("git_add", repo_path=REPO, files=json.dumps(files) if len(files) > 1
                                        else files[0]),
                                _action("git_commit", repo_path=REPO, message=message)]},
                   [("git_add", {"repo_path": REPO, "files": files}),
                    ("git_commit", {"repo_path": REPO, "message": message})],
                   f"Done: your changes were {COMMITTED}.")


def _task_of_goal(goal: str, limit: int = 300) -> GitTask | None:
    return next((t for t in map(git_task, range(1, limit + 1)) if t.goal == goal), None)


def git_rule(body: dict[str, Any]) -> dict[str, Any] | None:
    """Every role of the agentic pipeline on the git environment (see the module docstring); None for anything
    else (a request this script does not know)."""
    name = schema_name(body)
    text = last_user_text(body)
    if name == "BlueprintProposal":
        if "Environment: git:" not in text:
            return None
        match = _TASK.search(text)
        return {"json": git_task(int(match.group(1)) if match else 1).blueprint}
    if (answer := committee_and_user(name, text)) is not None:
        return answer
    if body.get("tools"):
        messages = body.get("messages") or []
        users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        task = _task_of_goal(users[0]) if users else None
        if task is None:
            return None
        if messages[-1].get("role") == "tool":
            return {"content": task.answer}
        return {"tool_calls": [{"name": n, "arguments": json.dumps(a)} for n, a in task.calls]}
    return None


def script_git(server: ScriptedLLMServer) -> None:
    server.script(git_rule)
