"""Confidence intervals: the bootstrap interval of pass@1 (tasks resampled) and the paired interval of a
difference between two runs on the same tasks."""

from __future__ import annotations

import random

import pytest

from toolgym.agent.trajectory import Trajectory
from toolgym.eval import EvalRun
from toolgym.eval.metrics import bootstrap_ci, compare_pass_at_1


def trials(passes: list[list[bool]]) -> list[Trajectory]:
    """Trajectories of task i with the given pass outcomes per trial."""
    return [Trajectory(task_id=f"t{i}", domain="d", trial=j, passed=p)
            for i, outcomes in enumerate(passes) for j, p in enumerate(outcomes)]


def test_interval_brackets_the_mean_and_narrows_with_more_tasks():
    rng = random.Random(0)
    small = [float(rng.random() < 0.3) for _ in range(20)]
    large = [float(rng.random() < 0.3) for _ in range(400)]
    for values in (small, large):
        low, high = bootstrap_ci(values)
        assert low <= sum(values) / len(values) <= high
    assert bootstrap_ci(large)[1] - bootstrap_ci(large)[0] < bootstrap_ci(small)[1] - bootstrap_ci(small)[0]
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_group_metrics_carry_the_pass_at_1_interval():
    run = EvalRun(name="r", policy="p", k=2, trajectories=trials([[True, False]] * 10 + [[False, False]] * 10))
    m = run.metrics()["overall"]
    assert m.pass_at_1 == pytest.approx(0.25)
    assert m.pass_at_1_ci[0] < 0.25 < m.pass_at_1_ci[1]


def test_a_consistent_gain_has_an_interval_above_zero_and_no_change_one_around_it():
    before = trials([[False, False]] * 30 + [[True, False]] * 30)
    after = trials([[True, False]] * 30 + [[True, True]] * 30)
    gain = compare_pass_at_1(before, after)
    assert gain.difference == pytest.approx(0.5) and gain.n_tasks == 60
    assert gain.ci_low > 0
    same = compare_pass_at_1(before, list(reversed(before)))
    assert same.difference == 0 and same.ci_low <= 0 <= same.ci_high
    assert compare_pass_at_1(after, before).ci_high < 0


def test_comparison_uses_only_the_shared_tasks():
    before = trials([[True]] * 4)
    after = [t.model_copy(update={"task_id": "x" + t.task_id}) for t in trials([[False]] * 4)] + trials([[True]] * 2)
    c = compare_pass_at_1(before, after)
    assert c.n_tasks == 2 and c.difference == 0
    with pytest.raises(ValueError):
        compare_pass_at_1(trials([[True]]), [t.model_copy(update={"task_id": "other"}) for t in trials([[True]])])
