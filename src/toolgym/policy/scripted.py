"""Scripted policies for tests and benchmarks: they follow a known plan instead of sampling a model.

`GoldPolicy` replays each task's gold chain (optionally without its last write), retrying a call whose
result came back as an error or unreadable output, then answers with the required facts. It keeps no state:
progress is read from the conversation, so the same policy serves any number of concurrent episodes.
"""

from __future__ import annotations

import json
import random
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


def next_step(messages: list[dict[str, Any]], calls: list[ToolCall], answer: str, retries: int | None = None) -> str:
    """The next message of a planned episode: the first call not yet answered cleanly, else the answer.

    A call counts as done once its result is clean, or after `retries` unclean results in a row (None: never)."""
    done, failures = 0, 0
    for m in messages:
        if m["role"] != "tool":
            continue
        if clean_result(m["content"]) or (retries is not None and failures >= retries):
            done, failures = done + 1, 0
        else:
            failures += 1
    return format_tool_call(calls[done]) if done < len(calls) else answer


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
            calls = drop_last_write(t, load_domain(t.domain_source)) if skip_last_write else list(t.gold_chain)
            plans[t.instruction] = (calls, gold_answer(t))
        return cls(plans, retries)

    def _next(self, messages: list[dict[str, Any]]) -> str:
        opening = next(m["content"] for m in messages if m["role"] == "user")
        if opening not in self.plans:
            return "I'm sorry, I can't help with that."
        calls, answer = self.plans[opening]
        return next_step(messages, calls, answer, self.retries)


class CoinGoldPolicy(ScriptedPolicy):
    """Gold-following episodes that fail on purpose at random, so RL groups carry reward variance.

    On an episode's first turn it draws a plan: whether the episode is lazy (skips the last write, with
    probability `p_lazy`) and how many times to repeat the chain's first read before starting
    (`extra_reads(rng)`, e.g. long-tailed for benchmarks). The plan is written into that first message as <think>{json}</think>, so the policy stays
    stateless across the concurrent episodes it serves."""

    def __init__(self, tasks: Iterable[Task], p_lazy: float = 0.5, seed: int = 0,
                 extra_reads: Callable[[random.Random], int] | None = None):
        self.plans: dict[str, tuple[list[ToolCall], list[ToolCall], list[ToolCall], str]] = {}
        for t in tasks:
            domain = load_domain(t.domain_source)
            reads = [c for c in t.gold_chain if not domain.tools[c.name].writes][:1]
            self.plans[t.instruction] = (reads, list(t.gold_chain), drop_last_write(t, domain), gold_answer(t))
        self.rng = random.Random(seed)
        self.p_lazy = p_lazy
        self.extra_reads = extra_reads
        super().__init__(self._next)

    def _draw(self) -> dict[str, Any]:
        extra = self.extra_reads(self.rng) if self.extra_reads else 0
        return {"lazy": self.rng.random() < self.p_lazy, "extra_reads": extra}

    def _next(self, messages: list[dict[str, Any]]) -> str:
        opening = next(m["content"] for m in messages if m["role"] == "user")
        reads, gold, lazy_calls, answer = self.plans[opening]
        first = next((m["content"] for m in messages if m["role"] == "assistant"), None)
        plan = self._draw() if first is None else json.loads(first[len("<think>"):first.index("</think>")])
        calls = reads * plan["extra_reads"] + (lazy_calls if plan["lazy"] else gold)
        text = next_step(messages, calls, answer)
        return (f"<think>{json.dumps(plan)}</think>" if first is None else "") + text
