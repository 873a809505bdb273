"""Noise: seeded and levelled, protected values survive instruction noise, and at the highest tool-noise level a
retrying gold executor still solves every task of every domain without running any write twice."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from toolgym.domains import builtin_names, load_domain
from toolgym.envs.environment import Environment, ToolResult
from toolgym.envs.sample import EnvironmentSampler
from toolgym.noise import (INSTRUCTION_KINDS, TOOL_KINDS, NoiseCurriculum, NoisyEnvironment, ToolNoise,
                           apply_instruction_noise, protected_values)
from toolgym.noise.tool import FAILURE_KINDS
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import synthesize_task
from toolgym.tasks.text import fmt, words
from toolgym.tasks.verify import gold_answer, verify


TASKS_PER_DOMAIN = 5


@pytest.fixture(scope="module")
def task_pool() -> list[Task]:
    """A few synthesized tasks of every built-in domain (fewer than conftest's, to keep this file quick)."""
    return [synthesize_task(env, 300 + i) for name in builtin_names()
            for i, env in enumerate(EnvironmentSampler(load_domain(name), seed=3).sample_many(TASKS_PER_DOMAIN))]


def run_gold(env: NoisyEnvironment, task: Task) -> list[ToolResult]:
    """Run the gold chain, retrying each call until it comes back clean (ok, no raw text) or retries run out."""
    results = []
    for call in task.gold_chain:
        for _ in range(env.noise.max_consecutive + 1):
            result = env.call(call.name, call.arguments)
            if result.ok and result.raw_text is None:
                break
        assert result.ok, f"{task.id}: {call.name} failed: {result.error}"
        results.append(result)
    return results


def count_executions(env: Environment) -> Counter[str]:
    """Count the tool executions that reach `env` (the noisy wrapper's calls that really run)."""
    counts: Counter[str] = Counter()
    original = env.call

    def counting(name, arguments=None):
        counts[name] += 1
        return original(name, arguments)

    env.call = counting
    return counts


# ---- instruction noise ----

def test_instruction_noise_is_seeded(task_pool):
    sample = task_pool[::4]
    differ = 0
    for task in sample:
        first = apply_instruction_noise(task, 1.0, seed=1)
        assert first == apply_instruction_noise(task, 1.0, seed=1)
        differ += first[0].instruction != apply_instruction_noise(task, 1.0, seed=2)[0].instruction
    assert differ > len(sample) // 2


def test_level_zero_changes_nothing(task_pool):
    for task in task_pool[::3]:
        noisy, applied = apply_instruction_noise(task, 0.0, seed=5)
        assert noisy == task and applied == []
        assert noisy is not task and noisy.user is not task.user


def test_protected_values_survive_on_every_domain(task_pool):
    seen: Counter[str] = Counter()
    for task in task_pool:
        for seed in range(5):
            noisy, applied = apply_instruction_noise(task, 1.0, seed)
            seen.update(applied)
            assert noisy.instruction != task.instruction
            assert noisy.gold_chain == task.gold_chain and noisy.required_answers == task.required_answers
            withheld = {text for v in noisy.user.on_request.values() for text in (fmt(v), str(v))}
            for value in protected_values(task):
                if value in task.instruction:
                    assert value in noisy.instruction or any(value in w for w in withheld), \
                        f"{task.id} lost {value!r} ({applied}):\n{task.instruction}\n{noisy.instruction}"
    assert set(seen) == set(INSTRUCTION_KINDS), seen


def test_omit_moves_the_fact_to_on_request(task_pool):
    moved = 0
    for task in task_pool:
        noisy, applied = apply_instruction_noise(task, 1.0, seed=0, kinds={"omit"})
        stated = [k for k, v in task.user.known.items()
                  if f"my {words(k)} is {fmt(v)}".lower() in task.instruction.lower()]
        assert applied == (["omit"] if stated else [])
        if not stated:
            assert noisy == task
            continue
        (key,) = set(task.user.known) - set(noisy.user.known)
        assert noisy.user.on_request[key] == task.user.known[key]
        assert f"my {words(key)} is".lower() not in noisy.instruction.lower()
        assert noisy.instruction.strip() and not noisy.instruction.startswith(" ")
        moved += 1
    assert moved


def test_self_correction_states_the_right_value_last(task_pool):
    corrected = 0
    for task in task_pool:
        noisy, applied = apply_instruction_noise(task, 1.0, seed=3, kinds={"self_correction"})
        if applied:
            match = re.search(r"(\S+), sorry, I mean (\S+?)[.,;)]?(?:\s|$)", noisy.instruction)
            assert match and match.group(1) != match.group(2), noisy.instruction
            assert noisy.instruction.replace(f"{match.group(1)}, sorry, I mean ", "", 1) == task.instruction
            corrected += 1
    assert corrected


def test_bad_instruction_noise_settings_are_refused(task_pool):
    task = task_pool[0]
    with pytest.raises(ValueError, match="level"):
        apply_instruction_noise(task, 1.5, seed=0)
    with pytest.raises(ValueError, match="shout"):
        apply_instruction_noise(task, 0.5, seed=0, kinds={"shout"})


# ---- tool noise ----

def noisy_run(task: Task, noise: ToolNoise) -> tuple[list[str], list]:
    env = noise.wrap(Environment.from_record(task.env))
    texts = [r.text() for r in run_gold(env, task)]
    log = env.log
    env.close()
    return texts, log


def test_tool_noise_is_seeded(task_pool):
    sample = task_pool[::6]
    differ = 0
    for task in sample:
        first = noisy_run(task, ToolNoise(1.0, seed=11))
        assert first == noisy_run(task, ToolNoise(1.0, seed=11))
        differ += first[1] != noisy_run(task, ToolNoise(1.0, seed=12))[1]
    assert differ > len(sample) // 2


def test_tool_noise_level_zero_is_the_plain_environment(task_pool):
    for task in task_pool[::5]:
        plain = Environment.from_record(task.env)
        noisy = ToolNoise(0.0, seed=3).wrap(Environment.from_record(task.env))
        for call in task.gold_chain:
            assert noisy.call(call.name, call.arguments) == plain.call(call.name, call.arguments)
        assert all(event.kind is None for event in noisy.log)
        assert noisy.state_hash() == plain.state_hash()


def test_retrying_gold_executor_solves_every_task_at_full_noise(task_pool):
    """The key guarantee: noise never makes a task unsolvable, and retried writes never run twice."""
    noisy = 0
    for i, task in enumerate(task_pool):
        inner = Environment.from_record(task.env)
        executed = count_executions(inner)
        env = ToolNoise(1.0, seed=i).wrap(inner)
        run_gold(env, task)
        writes = Counter(c.name for c in task.gold_chain if inner.tools[c.name].writes)
        assert {name: executed[name] for name in writes} == dict(writes), task.id
        assert all(e.kind in FAILURE_KINDS for e in env.log if e.kind and inner.tools[e.tool].writes)
        verdict = verify(task, env.env, gold_answer(task))
        assert verdict.passed, f"{task.id}: {verdict.explain()}"
        assert verify(task, env, gold_answer(task)).passed
        noisy += sum(e.kind is not None for e in env.log)
        env.close()
    assert noisy > len(task_pool)


@pytest.mark.parametrize("kind", TOOL_KINDS)
def test_each_kind_really_happens_alone(task_pool, kind):
    count = 0
    for task in task_pool[::2]:
        env = ToolNoise(1.0, seed=4, kinds={kind}).wrap(Environment.from_record(task.env))
        run_gold(env, task)
        for call in task.gold_chain:  # re-reads after the writes make stale reads visible
            if not env.tools[call.name].writes:
                env.call(call.name, call.arguments)
        assert {e.kind for e in env.log} <= {kind, None}
        count += sum(e.kind == kind for e in env.log)
        env.close()
    assert count > 0


def test_noisy_responses_look_broken_in_the_promised_way(task_pool):
    broken: Counter[str | None] = Counter()
    for task in task_pool[::2]:
        env = ToolNoise(1.0, seed=8, kinds={"truncated", "malformed", "transient", "timeout"}).wrap(
            Environment.from_record(task.env))
        for call in task.gold_chain:
            for _ in range(env.noise.max_consecutive + 1):
                result = env.call(call.name, call.arguments)
                kind = env.log[-1].kind
                broken[kind] += 1
                if kind is None:
                    break
                if kind == "truncated":
                    assert result.raw_text.endswith(" ...[truncated]")
                elif kind == "malformed":
                    with pytest.raises(json.JSONDecodeError):
                        json.loads(result.raw_text)
                else:
                    assert not result.ok and "retry" in result.error
                    assert kind == "timeout" or re.match(r"HTTP (408|429|503) ", result.error)
            assert result.ok and result.raw_text is None
        env.close()
    assert all(broken[k] for k in ("truncated", "malformed", "transient", "timeout")), broken


def test_partial_page_hint_recovers_the_rest(task_pool):
    checked = 0
    for task in task_pool:
        env = ToolNoise(1.0, seed=2, kinds={"partial_page"}).wrap(Environment.from_record(task.env))
        plain = env.env  # the same database, without noise
        for call in task.gold_chain:
            result = env.call(call.name, call.arguments)
            if env.log[-1].kind != "partial_page":
                continue
            full = plain.call(call.name, call.arguments).content
            page = result.content
            assert page["total"] == full["total"] and 0 < len(page["items"]) < len(full["items"])
            rest = plain.call(call.name, {**call.arguments, "offset": page["next_offset"]}).content["items"]
            assert page["items"] + rest[:len(full["items"]) - len(page["items"])] == full["items"]
            checked += 1
        env.close()
    assert checked


def test_stale_read_then_requery_gives_the_fresh_result(task_pool):
    checked = 0
    for task in task_pool:
        env = ToolNoise(1.0, seed=6, kinds={"stale"}).wrap(Environment.from_record(task.env))
        for call in task.gold_chain:  # the writes change the rows the reads look at
            if env.tools[call.name].writes:
                env.call(call.name, call.arguments)
        for call in task.gold_chain:
            if env.tools[call.name].writes:
                continue
            fresh = env.env.call(call.name, call.arguments)
            answers = [env.call(call.name, call.arguments) for _ in range(env.noise.max_consecutive + 1)]
            if env.log[-len(answers)].kind == "stale":
                assert answers[0].content != fresh.content
                assert fresh in answers
                checked += 1
        env.close()
    assert checked


def test_identical_calls_are_noisy_at_most_max_consecutive_times_in_a_row(task_pool):
    task = next(t for t in task_pool if not load_domain(t.domain).tools[t.gold_chain[0].name].writes)
    env = Environment.from_record(task.env)
    read = task.gold_chain[0]
    for limit in (0, 1, 3):
        noisy = ToolNoise(1.0, seed=9, max_consecutive=limit).wrap(env.fork())
        for _ in range(60):
            noisy.call(read.name, read.arguments)
        runs = "".join("n" if e.kind else "c" for e in noisy.log)
        assert "n" * (limit + 1) not in runs
        assert runs.count("n") > 0 if limit else runs.count("n") == 0


def test_unknown_tools_and_bad_arguments_pass_straight_through(task_pool):
    task = task_pool[0]
    plain = Environment.from_record(task.env)
    env = ToolNoise(1.0, seed=1).wrap(Environment.from_record(task.env))
    tool = task.gold_chain[0].name
    for name, args in [("no_such_tool", {}), (tool, {"bogus": 1}), (tool, "not an object")]:
        for _ in range(5):
            assert env.call(name, args) == plain.call(name, args)
    assert env.log == []


def test_fork_is_noisy_independent_and_deterministic(task_pool):
    task = next(t for t in task_pool if t.expected_changes)
    parents = [ToolNoise(1.0, seed=21).wrap(Environment.from_record(task.env)) for _ in range(2)]
    forks = [p.fork() for p in parents]
    assert all(isinstance(f, NoisyEnvironment) and f.noise == p.noise for f, p in zip(forks, parents))
    for fork in forks:
        run_gold(fork, task)
        assert verify(task, fork, gold_answer(task)).passed
    assert forks[0].log == forks[1].log
    assert parents[0].state_hash() != forks[0].state_hash()
    assert parents[0].openai_tools() == parents[0].env.openai_tools()
    assert parents[0].tool_names == parents[0].env.tool_names and parents[0].domain is parents[0].env.domain


def test_bad_tool_noise_settings_are_refused():
    with pytest.raises(ValueError, match="level"):
        ToolNoise(-0.1, seed=0)
    with pytest.raises(ValueError, match="gremlins"):
        ToolNoise(0.5, seed=0, kinds={"gremlins"})


# ---- curriculum ----

def test_curriculum_raises_levels_only_when_the_gap_is_small():
    cur = NoiseCurriculum(step=0.25)
    assert cur.update(0.8, 0.5) == {"instruction": 0.0, "tool": 0.0}
    assert cur.update(0.8, 0.78) == {"instruction": 0.25, "tool": 0.25}
    assert cur.update(0.8, 0.7) == {"instruction": 0.25, "tool": 0.25}
    for _ in range(10):
        levels = cur.update(0.8, 0.8)
    assert levels == {"instruction": 1.0, "tool": 1.0}
    assert [h[2]["tool"] for h in cur.history[:4]] == [0.0, 0.0, 0.25, 0.25]
    assert cur.history[1][:2] == (0.8, 0.78)


def test_curriculum_waits_min_episodes_caps_and_round_trips():
    cur = NoiseCurriculum(levels={"instruction": 0.2, "tool": 0.9}, step=0.3, max_level=0.95, min_episodes=2)
    assert cur.update(0.5, 0.5) == {"instruction": 0.2, "tool": 0.9}
    assert cur.update(0.5, 0.5) == {"instruction": 0.5, "tool": 0.95}
    restored = NoiseCurriculum.model_validate(cur.model_dump())
    assert restored == cur
    assert NoiseCurriculum.model_validate_json(cur.model_dump_json()) == cur
    restored.update(0.6, 0.6)
    assert restored.update(0.6, 0.6) == {"instruction": 0.8, "tool": 0.95}
