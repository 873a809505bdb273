"""Environment families: episodes of any registered family run, are titled and verified through the registry."""

from __future__ import annotations

import pytest

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.envs.environment import EnvironmentRecord, ToolCall, ToolResult
from toolgym.envs.families import TrailNote, family, open_env, register_family, replay
from toolgym.eval.report import opened_pages, reading_trail
from toolgym.policy.scripted import GoldPolicy
from toolgym.tasks.model import Difficulty, Task, UserProfile
from toolgym.tasks.verify import Verdict


class Counter:
    """A toy environment: one tool that adds to a counter."""

    def __init__(self, target: int):
        self.value, self.target, self.closed = 0, target, False

    def openai_tools(self):
        return [{"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}]

    def call(self, name, arguments=None):
        if name != "add" or not isinstance((arguments or {}).get("n"), int):
            return ToolResult(ok=False, error="add takes an integer n")
        self.value += arguments["n"]
        return ToolResult(ok=True, content={"value": self.value})

    def close(self):
        self.closed = True


class CounterFamily:
    def open(self, record):
        return Counter(record.params["target"])

    def title(self, env):
        return "Counter Inc."

    def verify(self, task, env, answer):
        ok = env.value == env.target
        return Verdict(passed=ok, state_ok=ok, answers_ok=True, problems=[] if ok else ["wrong value"],
                       missing_answers=[])

    def describe_call(self, name, arguments):
        if name != "add":
            return None
        return TrailNote("open", f"add {arguments['n']}", f"counter-{arguments['n']}")


def counter_task(target: int) -> Task:
    record = EnvironmentRecord(id=f"c{target}", family="counter", domain="counter", tools=["add"],
                               params={"target": target})
    return Task(id=f"t{target}", domain="counter", seed=0, env=record, instruction=f"Reach {target}.",
                user=UserProfile(), gold_chain=[{"name": "add", "arguments": {"n": target}}], expected_changes=[],
                expected_state_hash="", required_answers=[],
                difficulty=Difficulty(chain_length=1, n_writes=1, n_env_tools=1, n_targets=1))


def test_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown environment family 'nope'.*tool"):
        family("nope")


def test_registered_family_runs_titles_and_verifies_episodes():
    register_family("counter", CounterFamily())
    task = counter_task(3)
    assert replay(task, task.gold_chain).passed
    assert not replay(task, [*task.gold_chain, *task.gold_chain]).passed
    env = open_env(task.env)
    policy = GoldPolicy({task.instruction: (task.gold_chain, "Done.")})
    [traj] = run_episodes([Episode(task=task, env=env)], policy, RolloutConfig(max_turns=3))
    assert traj.passed and env.value == 3
    assert "Counter Inc." in traj.messages[0]["content"]


def test_a_family_describes_its_own_calls_in_the_report_trail():
    register_family("counter", CounterFamily())
    task = counter_task(4)
    chain = [ToolCall(name="add", arguments={"n": 1}), ToolCall(name="add", arguments={"n": 3})]
    policy = GoldPolicy({task.instruction: (chain, "Done.")})
    [traj] = run_episodes([Episode(task=task, env=open_env(task.env))], policy, RolloutConfig(max_turns=4))
    trail = reading_trail(traj)
    assert [(s.kind, s.text) for s in trail] == [("open", "add 1"), ("open", "add 3")]
    assert opened_pages(trail) == ["counter-1", "counter-3"]
