"""Scripted policies for search tasks: one that reads every candidate page on the way to the answer within a bounded
context window (the policy that needs context management), one that answers from search snippets without opening a
page, and a wrapper that meters the prompt tokens a policy is fed.

Like toolgym.policy.scripted, the policies keep no per-episode state: progress is read from the conversation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from toolgym.agent.context import RESET_NOTE
from toolgym.agent.rollout import approx_tokens
from toolgym.agent.toolcall import format_tool_call
from toolgym.envs.environment import ToolCall
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams
from toolgym.policy.scripted import ScriptedPolicy
from toolgym.search.corpus import Corpus, corpus_for, parse_page_text
from toolgym.search.questions import Question
from toolgym.search.roles import SOLVER_K, start_query
from toolgym.tasks.model import Task
from toolgym.tasks.text import words

OVERFLOW = "I cannot continue: this conversation no longer fits in my context window."


def read_everything_plan(corpus: Corpus, question: Question) -> list[ToolCall]:
    """Every call of a thorough reader: the start search, every part of every result, every part of each page on the
    walk and of every sibling a reverse hop chooses among, then a find of the answer's line on the last page."""
    def read(page: str) -> list[ToolCall]:
        return [ToolCall(name="open", arguments={"page": page, "part": p}) for p in range(1, corpus.page(page)[1] + 1)]

    calls = [ToolCall(name="search", arguments={"query": start_query(question), "k": SOLVER_K})]
    for result in corpus.search(start_query(question), SOLVER_K):
        calls += read(result["page"])
    for prev, hop in zip(question.hops, question.hops[1:]):
        if hop.direction == "forward":
            calls += read(hop.page)
            continue
        plural = words(corpus.domain.entities[hop.entity].plural_name).lower()
        backlinks = parse_page_text(corpus.text(prev.page)).backlinks
        for page in backlinks[(plural, words(hop.via.removesuffix("_id")))]:
            calls += read(page)
    fact = f"The {words(question.answer_field)} of this"
    return [*calls, ToolCall(name="find", arguments={"page": question.answer_page, "text": fact})]


def answer_from_find(content: str, field: str) -> str:
    """The final answer read from a find result's matching line ('' if the result holds no such line)."""
    try:
        matches = json.loads(content).get("matches", [])
    except (json.JSONDecodeError, AttributeError):
        return ""
    facts = parse_page_text("\n".join(m["line"] for m in matches)).facts
    return f"The {words(field)} is {facts[words(field)]}." if words(field) in facts else ""


class ReadEverythingPolicy(ScriptedPolicy):
    """Reads every candidate page of each search task, one call a turn, then answers from the last result. Past
    `context_window` tokens it gives up, as a model past its window would: without context management the long
    reading plans overflow; with it, older results are summarized or discarded and the plan can finish."""

    def __init__(self, tasks: Iterable[Task], context_window: int):
        self.plans: dict[str, tuple[list[ToolCall], str]] = {}
        for task in tasks:
            question = Question.model_validate(task.env.params["question"])
            self.plans[task.instruction] = (read_everything_plan(corpus_for(task.env), question),
                                            question.answer_field)
        self.context_window = context_window
        super().__init__(self._next)

    def _next(self, messages: list[dict[str, Any]]) -> str:
        if approx_tokens(messages) > self.context_window:
            return OVERFLOW
        opening = next(m["content"] for m in messages if m["role"] == "user")
        while opening.endswith(f"\n\n{RESET_NOTE}"):
            opening = opening.removesuffix(f"\n\n{RESET_NOTE}")
        calls, field = self.plans[opening]
        done = sum(1 for m in messages if m["role"] == "assistant")
        if done < len(calls):
            return format_tool_call(calls[done])
        return answer_from_find(next(m["content"] for m in reversed(messages) if m["role"] == "tool"), field)


def snippet_policy() -> ScriptedPolicy:
    """A policy that never opens a page: it searches the question once and answers with every snippet it got."""
    def step(messages: list[dict[str, Any]]) -> str:
        tool = [m for m in messages if m["role"] == "tool"]
        if not tool:
            question = next(m["content"] for m in messages if m["role"] == "user")
            return format_tool_call(ToolCall(name="search", arguments={"query": question, "k": 20}))
        results = json.loads(tool[-1]["content"]).get("results", [])
        return " ".join(f"{r['title']}: {r['snippet']}" for r in results) or "I don't know."

    return ScriptedPolicy(step)


class MeteredPolicy:
    """Wraps a policy and counts the prompt tokens (as the context manager measures them) of every request."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.prompt_tokens = 0

    @property
    def version(self) -> int:
        return self.policy.version

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        self.prompt_tokens += sum(approx_tokens(r.messages) for r in requests)
        return self.policy.generate(requests, sampling)
