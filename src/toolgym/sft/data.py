"""Environment-grounded cold-start SFT data: gold episodes executed in their environments, rendered in the same
format the rollout uses, with turn-level loss masks.

Two augmentations from the report: (1) failed turns: now and then a deliberately wrong call (malformed JSON or a
wrong id) is inserted with its real error result, its turn masked out (`train: false`) so the model learns to
recover without learning the mistake; (2) planning: at some decision points the assistant first lists a few
candidate tools inside <think>...</think> and names the one it picks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from toolgym.agent.rollout import SYSTEM_PROMPT, tool_messages
from toolgym.agent.toolcall import format_tool_call, parse_assistant
from toolgym.envs.environment import Environment, ToolCall
from toolgym.tasks.model import Task
from toolgym.tasks.verify import gold_answer


class SFTExample(BaseModel):
    """One conversation; `train[i]` says whether assistant message i (in order) is trained on."""

    task_id: str
    domain: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    train: list[bool]


def _wrong_call(call: ToolCall, rng: random.Random) -> str:
    """A plausible mistake: a malformed call, or the right tool aimed at a row that does not exist."""
    ids = [k for k, v in call.arguments.items() if k.endswith("_id") and isinstance(v, int)]
    if ids and rng.random() < 0.6:
        key = rng.choice(ids)
        return format_tool_call(ToolCall(name=call.name, arguments={**call.arguments, key: call.arguments[key] + 10**6}))
    return '<tool_call>{"name": "' + call.name + '", "arguments": {</tool_call>'


def _plan(call: ToolCall, env: Environment, rng: random.Random) -> str:
    others = rng.sample([t for t in env.tool_names if t != call.name], k=min(2, len(env.tool_names) - 1))
    options = sorted([call.name, *others], key=lambda _: rng.random())
    return f"<think>Candidates: {', '.join(options)}. Next step: {call.name}.</think>"


def sft_example(task: Task, seed: int, fail_p: float = 0.15, plan_p: float = 0.2) -> SFTExample:
    """The gold episode of `task` with seeded failure and planning augmentation."""
    rng = random.Random(seed)
    env = Environment.from_record(task.env)
    title = env.domain.spec.title
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT.format(title=title)},
                                      {"role": "user", "content": task.instruction}]
    train: list[bool] = []
    for call in task.gold_chain:
        if rng.random() < fail_p:
            wrong = _wrong_call(call, rng)
            messages.append({"role": "assistant", "content": wrong})
            train.append(False)
            messages.extend(tool_messages(env, parse_assistant(wrong)))
        content = format_tool_call(call)
        if rng.random() < plan_p:
            content = _plan(call, env, rng) + content
        messages.append({"role": "assistant", "content": content})
        train.append(True)
        messages.extend(tool_messages(env, parse_assistant(content)))
    messages.append({"role": "assistant", "content": gold_answer(task)})
    train.append(True)
    tools = env.openai_tools()
    env.close()
    return SFTExample(task_id=task.id, domain=task.domain, messages=messages, tools=tools, train=train)


def sft_examples(tasks: Iterable[Task], seed: int = 0, **kwargs: Any) -> Iterator[SFTExample]:
    rng = random.Random(seed)
    for task in tasks:
        yield sft_example(task, rng.getrandbits(32), **kwargs)
