"""Rollouts with scripted policies: gold scores pass^k = 1, a skipped write scores 0 with a diff naming it,
malformed calls become tool errors, context management summarizes then resets, episodes run concurrently."""

from __future__ import annotations

import json

import pytest

from toolgym.agent.context import RESET_NOTE, ContextConfig
from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.toolcall import format_tool_call, parse_assistant, parse_native
from toolgym.agent.user import RuleUser
from toolgym.envs.environment import Environment, ToolCall
from toolgym.policy.scripted import GoldPolicy, ScriptedPolicy


@pytest.fixture(scope="module")
def suite(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:3]]


def _episodes(tasks, k=1):
    return [Episode(task=t, env=Environment.from_record(t.env), trial=i) for t in tasks for i in range(k)]


def test_gold_policy_passes_every_trial(suite):
    trajs = run_episodes(_episodes(suite, k=2), GoldPolicy.from_tasks(suite), concurrency=16)
    assert len(trajs) == 2 * len(suite)
    assert all(t.passed and t.reward == 1.0 for t in trajs), [t.verdict for t in trajs if not t.passed]
    assert all(t.termination == "answer" and t.progress == 1.0 for t in trajs)
    assert sum(t.n_tool_calls for t in trajs) == 2 * sum(len(t.gold_chain) for t in suite)


def test_skipping_a_write_fails_with_the_missing_change_named(suite):
    writing = [t for t in suite if t.expected_changes]
    trajs = run_episodes(_episodes(writing), GoldPolicy.from_tasks(writing, skip_last_write=True))
    for task, traj in zip(writing, trajs):
        assert not traj.passed and traj.reward == 0.0
        assert "missing" in traj.verdict
        assert any(c.table in traj.verdict for c in task.expected_changes)


def test_failed_episode_is_rewarded_for_the_gold_calls_it_made_only_when_asked(suite):
    writing = [t for t in suite if t.expected_changes and len(t.gold_chain) > 1]
    assert writing
    for weight in (0.0, 0.3):
        trajs = run_episodes(_episodes(writing), GoldPolicy.from_tasks(writing, skip_last_write=True),
                             RolloutConfig(progress_reward=weight))
        for task, traj in zip(writing, trajs):
            assert not traj.passed
            assert traj.progress == pytest.approx(1 - 1 / len(task.gold_chain))
            assert traj.reward == pytest.approx(weight * traj.progress)


def test_malformed_tool_calls_become_errors_the_model_sees(suite):
    task = suite[0]
    replies = iter(['<tool_call>{"name": "get_x", "arguments": [1]}</tool_call>', "<tool_call>{not json",
                    format_tool_call(ToolCall(name="no_such_tool", arguments={})), "I give up."])
    policy = ScriptedPolicy(lambda messages: next(replies))
    traj = run_episodes(_episodes([task]), policy, concurrency=1)[0]
    tool_msgs = [m["content"] for m in traj.messages if m["role"] == "tool"]
    assert "must be an object" in tool_msgs[0]
    assert "unterminated" in tool_msgs[1]
    assert "unknown tool" in tool_msgs[2]
    assert traj.turns[0].parse_error and not traj.passed and traj.termination == "answer"


def test_parsers_handle_thinking_native_calls_and_strings():
    turn = parse_assistant('<think>plan</think>Sure.<tool_call>{"name":"a","arguments":"{\\"x\\": 1}"}</tool_call>')
    assert turn.thinking == "plan" and turn.content == "Sure." and turn.tool_calls[0].arguments == {"x": 1}
    calls, errors = parse_native([{"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{\"y\":2}"}},
                                  {"function": {"name": "b", "arguments": "{oops"}}])
    assert calls == [ToolCall(name="a", arguments={"y": 2})] and len(errors) == 1


def test_user_simulator_reveals_withheld_facts_only_when_asked(suite):
    task = next(t for t in suite if t.user.on_request)
    key, value = next(iter(task.user.on_request.items()))
    user = RuleUser(task)
    assert str(value) not in user.opening() or key in task.user.known
    reply = user.respond(f"Could you give me your {key.replace('_', ' ')}?")
    assert str(value).replace("_", " ") in reply.text or str(value) in reply.text
    assert not reply.done
    assert user.respond("Shall I proceed with the cancellation?").text.startswith("Yes")
    assert user.respond("All done.").done


def test_long_episode_summarizes_then_resets(suite):
    task = suite[0]
    env = Environment.from_record(task.env)
    reader = next(n for n in env.tool_names if n.startswith("search_"))
    policy = ScriptedPolicy(lambda messages: format_tool_call(ToolCall(name=reader, arguments={})))
    cfg = RolloutConfig(max_turns=14, context=ContextConfig(summary_threshold_tokens=1500, keep_recent_tool_results=1,
                                                            reset_after_turns=9))
    traj = run_episodes([Episode(task=task, env=env)], policy, cfg)[0]
    kinds = [e.kind for e in traj.events]
    assert "summary" in kinds and "reset" in kinds
    assert kinds.index("summary") < kinds.index("reset")
    summary = next(e for e in traj.events if e.kind == "summary")
    assert summary.tokens_after < summary.tokens_before
    reset = next(e for e in traj.events if e.kind == "reset")
    assert reset.tokens_after < reset.tokens_before
    assert traj.termination == "max_turns"
    assert traj.messages[0]["role"] == "system" and RESET_NOTE in traj.messages[1]["content"]


def test_policy_failure_ends_the_episode_not_the_run(suite):
    def boom(messages):
        raise RuntimeError("server down")

    trajs = run_episodes(_episodes(suite[:2]), ScriptedPolicy(boom))
    assert all(t.termination == "error" and "server down" in t.error and not t.passed for t in trajs)


def test_many_concurrent_episodes_are_batched(suite):
    episodes = _episodes(suite, k=8)
    policy = GoldPolicy.from_tasks(suite)
    calls = []
    original = policy.generate
    policy.generate = lambda reqs, sampling: calls.append(len(reqs)) or original(reqs, sampling)
    trajs = run_episodes(episodes, policy, RolloutConfig(max_batch=64), concurrency=len(episodes))
    assert all(t.passed for t in trajs)
    assert max(calls) > 1, "requests from concurrent episodes were never batched"
    json.dumps([t.model_dump() for t in trajs[:2]])
