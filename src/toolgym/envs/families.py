"""Environment families behind one interface: tool-use domains (`tool`), and the peers that other packages add
(`code` sandboxes, `search` corpora). A task's environment record names its family; rollouts, evaluation, RL and
`tasks verify` open, title and verify every episode through this registry, so a run can mix families freely.

A family is an object with three methods:
- `open(record)`: a fresh environment for one episode, with `openai_tools()`, `call(name, arguments) -> ToolResult`
  (errors come back as results, never raised) and `close()`;
- `title(env)`: the name the system prompt gives the agent's employer or workspace;
- `verify(task, env, answer) -> Verdict`: the task's verdict on the episode's final environment and answer.
A family may also have `describe_call(name, arguments) -> TrailNote | None`: how a report's reading trail shows one of
its calls (search, open, find), None for calls it does not own.
Families other than `tool` are imported on first use, so a run that never meets one never pays for it.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Protocol

from toolgym.envs.environment import Environment, EnvironmentRecord, ToolCall
from toolgym.tasks.model import Task
from toolgym.tasks.verify import Verdict, verify


class Family(Protocol):
    """What a kind of environment provides to the episode loop."""

    def open(self, record: EnvironmentRecord) -> Any: ...

    def title(self, env: Any) -> str: ...

    def verify(self, task: Task, env: Any, answer: str) -> Verdict: ...


class TrailNote(NamedTuple):
    """One call as a reading trail shows it: its kind (`search`, `open`, `find`), a line of text, the page it read."""

    kind: str
    text: str
    page: str | None = None


class ToolFamily:
    """Tool-use domains: a SQLite database plus the domain's tools, verified by final state and required facts."""

    def open(self, record: EnvironmentRecord) -> Environment:
        return Environment.from_record(record)

    def title(self, env: Any) -> str:
        return unwrap(env).domain.spec.title

    def verify(self, task: Task, env: Any, answer: str) -> Verdict:
        return verify(task, unwrap(env), answer)


_FAMILIES: dict[str, Family] = {"tool": ToolFamily()}
_LAZY: dict[str, str] = {"code": "toolgym.code.family:FAMILY", "search": "toolgym.search.family:FAMILY"}
"""Family name -> 'module:attribute' of a family imported on first use."""


def register_family(name: str, implementation: Family) -> None:
    """Make `implementation` the family of environment records whose `family` is `name`."""
    _FAMILIES[name] = implementation


def family(name: str) -> Family:
    """The family called `name`; a clear error names the known ones."""
    if name not in _FAMILIES and name in _LAZY:
        module, attr = _LAZY[name].split(":")
        _FAMILIES[name] = getattr(importlib.import_module(module), attr)
    if name not in _FAMILIES:
        raise ValueError(f"unknown environment family {name!r}; known: {', '.join(sorted({*_FAMILIES, *_LAZY}))}")
    return _FAMILIES[name]


def unwrap(env: Any) -> Any:
    """The environment under any wrappers: a wrapper (tool noise) keeps what it wraps as `.env`, and no environment
    has an attribute of that name."""
    while hasattr(env, "env"):
        env = env.env
    return env


def open_env(record: EnvironmentRecord) -> Any:
    """A fresh environment for one episode of a task whose environment is `record`."""
    return family(record.family).open(record)


def replay(task: Task, calls: list[ToolCall], answer: str = "") -> Verdict:
    """Run `calls` on a fresh environment of the task and verify the outcome (the task's gold chain must pass)."""
    env = open_env(task.env)
    try:
        for call in calls:
            env.call(call.name, call.arguments)
        return verify_episode(task, env, answer)
    finally:
        env.close()


def takes_noise(task: Task) -> bool:
    """Whether instruction and tool noise apply to the task: they rewrite domain facts and tool results, so only
    tool-use domains take them; other families' episodes run clean."""
    return task.env.family == "tool"


def env_title(task: Task, env: Any) -> str:
    return family(task.env.family).title(env)


def describe_call(name: str, arguments: Any) -> TrailNote | None:
    """How a reading trail shows the call, from the first family (every known one, loaded if needed) that owns it;
    None when none does, as for every tool-use call."""
    for known in sorted({*_FAMILIES, *_LAZY}):
        describe = getattr(family(known), "describe_call", None)
        note = describe(name, arguments) if describe is not None else None
        if note is not None:
            return note
    return None


def verify_episode(task: Task, env: Any, answer: str) -> Verdict:
    """The task's verdict on the episode's (possibly wrapped) environment and final answer."""
    return family(task.env.family).verify(task, env, answer)
