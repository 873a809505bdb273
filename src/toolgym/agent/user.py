"""User simulators: a deterministic rule-based one (the default) and one driven by any Policy.

Both open with the task instruction, reveal facts the user only gives when asked, confirm what the agent
proposes, and end the conversation once the agent answers without asking for anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from toolgym.policy.base import GenerationRequest, Policy, SamplingParams
from toolgym.tasks.model import Task
from toolgym.tasks.text import fmt, words

STOP = "###STOP###"
_CONFIRM = re.compile(r"\b(confirm|proceed|go ahead|shall i|should i|do you want|would you like|is that (ok|right|correct))\b",
                      re.IGNORECASE)


@dataclass
class UserReply:
    text: str
    done: bool


class UserSimulator(Protocol):
    def opening(self) -> str: ...

    def respond(self, assistant_text: str) -> UserReply: ...


class RuleUser:
    """Answers from the task's user profile: withheld facts when asked, 'yes' to confirmations, else done."""

    def __init__(self, task: Task, instruction: str | None = None):
        self.task = task
        self.instruction = instruction or task.instruction
        self.revealed: set[str] = set()

    def opening(self) -> str:
        return self.instruction

    def respond(self, assistant_text: str) -> UserReply:
        asked = assistant_text.lower()
        keys = [k for k in self.task.user.on_request if k not in self.revealed and (words(k) in asked or k in asked)]
        if keys:
            self.revealed.update(keys)
            return UserReply(" ".join(f"My {words(k)} is {fmt(self.task.user.on_request[k])}." for k in keys), False)
        if "?" in assistant_text and _CONFIRM.search(assistant_text):
            return UserReply("Yes, please go ahead.", done=False)
        if "?" in assistant_text and self.task.user.known:
            known = " ".join(f"My {words(k)} is {fmt(v)}." for k, v in self.task.user.known.items())
            return UserReply(f"{known} Please do what I asked.", done=False)
        return UserReply(f"Thanks, that's all. {STOP}", done=True)


USER_PROMPT = """You are a customer talking to a support agent. Stay in character and reply with one short message.
Your request: {instruction}
Facts you may give only if the agent asks for them: {on_request}
Never invent facts. When your request is fully handled, reply with exactly: {stop}"""


class PolicyUser:
    """A user played by a Policy, prompted with the task instruction and the facts it may reveal when asked."""

    def __init__(self, task: Task, policy: Policy, sampling: SamplingParams | None = None,
                 instruction: str | None = None):
        self.task = task
        self.policy = policy
        self.sampling = sampling or SamplingParams(temperature=0.7, max_new_tokens=96)
        self.instruction = instruction or task.instruction
        on_request = "; ".join(f"{words(k)}: {fmt(v)}" for k, v in task.user.on_request.items()) or "none"
        self.history = [{"role": "system", "content": USER_PROMPT.format(
            instruction=self.instruction, on_request=on_request, stop=STOP)}]

    def opening(self) -> str:
        return self.instruction

    def respond(self, assistant_text: str) -> UserReply:
        self.history.append({"role": "user", "content": assistant_text})
        text = self.policy.generate([GenerationRequest(messages=self.history)], self.sampling)[0].text.strip()
        self.history.append({"role": "assistant", "content": text})
        return UserReply(text.replace(STOP, "").strip() or "Thanks.", done=STOP in text)
