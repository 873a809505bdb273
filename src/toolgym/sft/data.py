"""Environment-grounded cold-start SFT data: gold episodes executed in their environments, rendered in the same
format the rollout uses, with turn-level loss masks.

Two augmentations from the report: (1) failed turns: now and then a deliberately wrong call (malformed JSON or a
wrong id) is inserted with its real error result, its turn masked out (`train: false`) so the model learns to
recover without learning the mistake; (2) planning: at some decision points the assistant first lists a few
candidate tools inside <think>...</think> and names the one it picks. A third, for models trained from scratch:
value resampling renames the episode's identifiers and figures consistently across every message, so that the
only way to predict an argument is to copy it from the context rather than to remember it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from toolgym.agent.rollout import SYSTEM_PROMPT, tool_messages
from toolgym.agent.toolcall import format_tool_call, parse_assistant
from toolgym.envs.environment import Environment, ToolCall
from toolgym.sft.decompose import reasoned_plan
from toolgym.tasks.model import Task


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


def _copied_values(task: Task) -> list[str]:
    """The values an agent must copy in this episode: call arguments and required facts that contain a digit
    (identifiers, codes, amounts, ids); plain words such as enum values keep their meaning and are left alone."""
    values = [str(v) for call in task.gold_chain for v in call.arguments.values()
              if not isinstance(v, bool) and isinstance(v, int | float | str)]
    values += task.required_answers
    return sorted({v for v in values if re.search(r"\d", v)}, key=len, reverse=True)


def _fresh_like(value: str, rng: random.Random) -> str:
    """A random value of the same shape: digits stay digits (no new leading zero, no trailing zero after a decimal
    point, so a number keeps its printed length), letters stay letters of the same case, everything else is kept."""
    out = []
    for i, ch in enumerate(value):
        if ch.isdigit():
            leading = i == 0 or not value[i - 1].isdigit()
            trailing_decimal = i == len(value) - 1 and "." in value
            out.append(rng.choice("123456789" if leading or trailing_decimal else "0123456789"))
        elif ch.isupper():
            out.append(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        elif ch.islower():
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz"))
        else:
            out.append(ch)
    return "".join(out)


def _whole(*values: str) -> re.Pattern[str]:
    """Whole occurrences of any of `values`: not inside a longer word, number or code."""
    return re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, values)) + r")(?![\w]|\.\d)")


def resample_values(example: SFTExample, values: Iterable[str], rng: random.Random) -> SFTExample:
    """`example` with every whole occurrence of each value replaced by a fresh value of the same shape, the same
    replacement in every message (instruction, calls, tool results, answer), so the episode stays consistent."""
    text = "\n".join(str(m.get("content") or "") for m in example.messages)
    mapping: dict[str, str] = {}
    for value in values:
        for _ in range(50):
            new = _fresh_like(value, rng)
            if not _whole(new).search(text) and new not in mapping.values():
                mapping[value] = new
                break
    if not mapping:
        return example
    pattern = _whole(*mapping)
    messages = [{**m, "content": pattern.sub(lambda g: mapping[g.group(1)], m["content"])}
                if isinstance(m.get("content"), str) else m for m in example.messages]
    return example.model_copy(update={"messages": messages})


def quoted_answer(task: Task, context: str) -> str:
    """The gold answer with each required fact quoted the way the tool results wrote it ("9.2" for 9.20,
    "train_station" for train station), so a policy that decodes quotations by copying (policy.constrained, copy
    mode) can say it; a fact written nowhere verbatim (yes for true) stays unquoted."""
    parts = []
    for fact in task.required_answers:
        forms = [fact, fact.replace(" ", "_")]
        try:
            number = float(fact)
        except ValueError:
            pass
        else:
            forms += [json.dumps(number), str(int(number))] if number.is_integer() else [json.dumps(number)]
        found = next((f for f in forms if f and '"' not in f and f in context), None)
        parts.append(f'"{found}"' if found else fact)
    return "Done. " + "; ".join(parts)


def sft_example(task: Task, seed: int, fail_p: float = 0.15, plan_p: float = 0.2,
                resample: bool = False, reason_p: float = 0.0) -> SFTExample:
    """The gold episode of `task` with seeded failure and planning augmentation, and with its copied values
    renamed when `resample` is set. With probability `reason_p` a call is preceded by a reasoned plan instead
    (sft.decompose.reasoned_plan: candidates, each rejected for what executing it showed); at 0 the example is
    exactly the one made without it."""
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
        plan = rng.random() < plan_p
        if reason_p > 0 and rng.random() < reason_p:
            content = reasoned_plan(call, env, "\n".join(str(m.get("content") or "") for m in messages[1:]),
                                    rng) + content
        elif plan:
            content = _plan(call, env, rng) + content
        messages.append({"role": "assistant", "content": content})
        train.append(True)
        messages.extend(tool_messages(env, parse_assistant(content)))
    tool_text = "\n".join(m["content"] for m in messages if m["role"] == "tool")
    messages.append({"role": "assistant", "content": quoted_answer(task, tool_text)})
    train.append(True)
    tools = env.openai_tools()
    env.close()
    example = SFTExample(task_id=task.id, domain=task.domain, messages=messages, tools=tools, train=train)
    return resample_values(example, _copied_values(task), rng) if resample else example


def sft_examples(tasks: Iterable[Task], seed: int = 0, variants: int = 1, **kwargs: Any) -> Iterator[SFTExample]:
    """`variants` examples per task: the episode as executed, then `variants - 1` copies with resampled values."""
    if variants < 1:
        raise ValueError(f"variants must be at least 1, got {variants}")
    rng = random.Random(seed)
    for task in tasks:
        for variant in range(variants):
            yield sft_example(task, rng.getrandbits(32), resample=variant > 0, **kwargs)
