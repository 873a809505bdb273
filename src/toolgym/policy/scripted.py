"""Scripted policies for tests and benchmarks: they follow a known plan instead of sampling a model.

`GoldPolicy` replays each task's gold chain (optionally without its last write), retrying a call whose
result came back as an error or unreadable output, then answers with the required facts. It keeps no state:
progress is read from the conversation, so the same policy serves any number of concurrent episodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from toolgym.agent.toolcall import format_tool_call
from toolgym.domains import load_domain
from toolgym.envs.environment import ToolCall
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.tasks.model import Task
from toolgym.tasks.perturb import drop_last_write
from toolgym.tasks.verify import gold_answer


def clean_result(content: str) -> bool:
    """Whether a tool message is a readable, successful result (not an error, not truncated or malformed)."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return False
    return not (isinstance(data, dict) and "error" in data)


class ScriptedPolicy:
    """A policy whose next message is computed by a function of the conversation."""

    tokenizer = None

    def __init__(self, step: Callable[[list[dict[str, Any]]], str], version: int = 0):
        self.step = step
        self.version = version

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        return [Completion(text=self.step(r.messages), version=self.version) for r in requests]


class GoldPolicy(ScriptedPolicy):
    """Follows each task's gold chain, keyed by the opening user message (the instruction it was given)."""

    def __init__(self, plans: dict[str, tuple[list[ToolCall], str]], retries: int = 3):
        self.plans = plans
        self.retries = retries
        super().__init__(self._next)

    @classmethod
    def from_tasks(cls, tasks: Iterable[Task], skip_last_write: bool = False, retries: int = 3) -> GoldPolicy:
        plans = {}
        for t in tasks:
            calls = drop_last_write(t, load_domain(t.domain)) if skip_last_write else list(t.gold_chain)
            plans[t.instruction] = (calls, gold_answer(t))
        return cls(plans, retries)

    def _next(self, messages: list[dict[str, Any]]) -> str:
        opening = next(m["content"] for m in messages if m["role"] == "user")
        if opening not in self.plans:
            return "I'm sorry, I can't help with that."
        calls, answer = self.plans[opening]
        done, failures = 0, 0
        for m in messages:
            if m["role"] != "tool":
                continue
            if clean_result(m["content"]) or failures >= self.retries:
                done, failures = done + 1, 0
            else:
                failures += 1
        return format_tool_call(calls[done]) if done < len(calls) else answer
