"""Class 6 of issue 17: synthesis never makes a task that a do-nothing agent (no tool call, empty answer) passes."""

from __future__ import annotations

import itertools

import pytest

from toolgym.domains import builtin_names, load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.tasks.synthesize import SynthesisFailed, passes_untouched, synthesize_task
from toolgym.tasks.verify import verify


def _env(domain: str, seed: int, index: int):
    envs = list(itertools.islice(EnvironmentSampler(load_domain(domain), seed=seed).sample_many(index + 1), index + 1))
    for env in envs[:index]:
        env.close()
    return envs[index]


def test_a_chain_that_undoes_itself_no_longer_makes_a_task_that_doing_nothing_passes():
    # Before the fix: "send aircraft N044AQ to maintenance. ... return it to service", no change, no answer.
    env = _env("airline", 11, 2)
    task = synthesize_task(env, 1007)
    untouched = env.fork()
    verdict = verify(task, untouched, "")
    assert not verdict.passed and (task.expected_changes or task.required_answers)
    untouched.close()
    env.close()


def test_the_check_recognises_a_task_that_rewards_doing_nothing():
    env = _env("bank", 0, 0)
    task = synthesize_task(env, 5)
    assert not passes_untouched(task, env)
    assert passes_untouched(task.model_copy(update={"expected_changes": [], "required_answers": []}), env)
    env.close()


@pytest.mark.parametrize("domain", builtin_names())
def test_no_synthesized_task_passes_the_untouched_environment(domain):
    env = _env(domain, 3, 0)
    made = 0
    for seed in range(6):
        try:
            task = synthesize_task(env, seed)
        except SynthesisFailed:
            continue
        made += 1
        assert not passes_untouched(task, env), task.instruction
    assert made >= 4
    env.close()
