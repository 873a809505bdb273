"""Dynamic rollout budget (pass-rate values, greedy allocation) and the two-axis task curriculum."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from toolgym.domains import load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.rl.budget import PassRateTracker, allocate
from toolgym.rl.curriculum import TaskCurriculum
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import synthesize_task


@pytest.fixture(scope="module")
def base_task() -> Task:
    env = EnvironmentSampler(load_domain("food_delivery"), seed=1).sample()
    return synthesize_task(env, 3)


def _variant(task: Task, task_id: str, chain_length: int, n_writes: int) -> Task:
    difficulty = task.difficulty.model_copy(update={"chain_length": chain_length, "n_writes": n_writes})
    return task.model_copy(update={"difficulty": difficulty, "id": task_id})


def _ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def test_unseen_task_takes_the_prior():
    assert PassRateTracker().value("new") == pytest.approx(0.25)  # 0.5 * 0.5
    tracker = PassRateTracker(prior=0.2)
    assert tracker.pass_rate("new") == pytest.approx(0.2) and tracker.trials("new") == 0
    assert tracker.value("new") == pytest.approx(0.16)  # 0.2 * 0.8


def test_pass_rate_is_smoothed_and_threshold_is_half():
    tracker = PassRateTracker()
    tracker.update("a", [1.0, 0.0, 0.5, 0.49])  # 0.5 passes, 0.49 does not: 2 passes of 4
    tracker.update("a", [1.0, 1.0])  # 4 of 6
    assert tracker.trials("a") == 6
    assert tracker.pass_rate("a") == pytest.approx(5 / 8)  # (4 + 0.5 * 2) / (6 + 2)
    assert tracker.value("a") == pytest.approx(5 / 8 * 3 / 8)


def test_solved_and_hopeless_tasks_keep_only_the_exploration_value_after_min_trials():
    tracker = PassRateTracker(min_trials=4)
    tracker.update("solved", [1.0] * 3)
    tracker.update("hopeless", [0.0] * 3)
    assert tracker.value("solved") == pytest.approx(0.8 * 0.2)  # (3 + 1) / (3 + 2) = 0.8: too few trials to judge
    assert tracker.value("hopeless") > tracker.explore
    tracker.update("solved", [1.0])
    tracker.update("hopeless", [0.0])
    assert tracker.value("solved") == tracker.value("hopeless") == tracker.explore > 0
    tracker.update("solved", [0.0])
    assert tracker.value("solved") > tracker.explore
    assert PassRateTracker(explore=0.0).value("unseen") > 0
    with pytest.raises(ValueError):
        PassRateTracker(explore=0.25)


def test_exploration_value_ranks_below_any_task_still_being_learnt():
    tracker = PassRateTracker()
    tracker.update("judged", [1.0] * tracker.window)
    tracker.update("one_miss", [1.0] * (tracker.window - 1) + [0.0])  # the most lopsided mixed window
    tracker.update("one_hit", [0.0] * (tracker.window - 1) + [1.0])
    assert tracker.value("judged") < min(tracker.value("one_miss"), tracker.value("one_hit"))


def test_pass_rate_follows_the_policy_over_the_last_window_of_rollouts():
    tracker = PassRateTracker(window=16)
    tracker.update("a", [0.0] * 12 + [1.0] * 4)  # learning: early failures, then passes
    assert tracker.value("a") > 0
    tracker.update("a", [1.0] * 12)  # the last 16 rollouts all passed: solved now, whatever came before
    assert tracker.trials("a") == 16 and tracker.value("a") == tracker.explore
    assert tracker.pass_rate("a") == pytest.approx((16 + 1) / (16 + 2))


def test_a_checkpoint_from_before_the_window_loads_its_counts():
    tracker = PassRateTracker(window=8)
    tracker.load_state_dict({"passes": {"a": 3}, "trials": {"a": 20}})
    assert tracker.trials("a") == 8 and tracker.pass_rate("a") == pytest.approx((3 + 1) / (8 + 2))


def test_tracker_state_round_trips_through_json():
    tracker = PassRateTracker()
    tracker.update("a", [1.0, 0.0, 1.0])
    tracker.update("b", [0.0] * 5)
    restored = PassRateTracker()
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    for task_id in ("a", "b", "unseen"):
        assert restored.trials(task_id) == tracker.trials(task_id)
        assert restored.pass_rate(task_id) == tracker.pass_rate(task_id)
        assert restored.value(task_id) == tracker.value(task_id)


def _mixed_tracker(explore: float = 0.025) -> PassRateTracker:
    tracker = PassRateTracker(explore=explore)
    tracker.update("mid", [1.0, 0.0] * 4)  # p = (4 + 1) / (8 + 2) = 0.5, value 0.25
    tracker.update("easy", [1.0] * 9 + [0.0])  # p = (9 + 1) / (10 + 2) = 0.83, value 0.139
    tracker.update("solved", [1.0] * 8)
    return tracker


def test_allocate_favours_tasks_near_half_and_spends_the_whole_budget():
    groups = allocate(["easy", "mid", "solved"], _mixed_tracker(), total_groups=10)
    assert set(groups) == {"easy", "mid", "solved"}
    assert sum(groups.values()) == 10
    assert groups["mid"] > groups["easy"] > groups["solved"]


def test_a_judged_task_is_probed_again_once_the_learnable_ones_have_their_share():
    """The policy keeps changing, so a task it failed (or solved) every time must still get a group now and then:
    without one its window never changes and its value stays at the floor for the rest of the run."""
    tracker = PassRateTracker()
    tracker.update("learning", [1.0, 0.0] * 4)  # value 0.25
    tracker.update("failed", [0.0] * 8)
    groups = allocate(["learning", "failed"], tracker, total_groups=16)
    assert groups["learning"] > groups["failed"] >= 1
    assert allocate(["learning", "failed"], tracker, total_groups=4)["failed"] == 0  # not before its turn
    frozen = PassRateTracker(explore=0.0)
    frozen.load_state_dict(tracker.state_dict())
    assert allocate(["learning", "failed"], frozen, total_groups=16)["failed"] == 0


def test_allocate_is_deterministic_and_breaks_ties_by_order():
    tracker = PassRateTracker()
    assert allocate(["a", "b", "c"], tracker, 4) == {"a": 2, "b": 1, "c": 1}
    assert allocate(["c", "b", "a"], tracker, 4) == {"c": 2, "b": 1, "a": 1}
    mixed = _mixed_tracker()
    assert allocate(["easy", "mid", "solved"], mixed, 17) == allocate(["easy", "mid", "solved"], mixed, 17)


def test_allocate_round_robins_when_every_task_is_worthless():
    tracker = PassRateTracker(explore=0.0)
    tracker.update("solved", [1.0] * 4)
    tracker.update("hopeless", [0.0] * 4)
    tracker.update("also_solved", [1.0] * 6)
    groups = allocate(["solved", "hopeless", "also_solved"], tracker, 7)
    assert groups == {"solved": 3, "hopeless": 2, "also_solved": 2}


def test_allocate_respects_max_per_task_and_rejects_bad_input():
    groups = allocate(["easy", "mid", "solved"], _mixed_tracker(explore=0.0), total_groups=10, max_per_task=3)
    assert groups == {"easy": 3, "mid": 3, "solved": 0}  # both valuable tasks capped; zero-value task still skipped
    assert allocate([], PassRateTracker(), 5) == {}
    with pytest.raises(ValueError):
        allocate(["a", "a"], PassRateTracker(), 2)
    with pytest.raises(ValueError):
        allocate(["a"], PassRateTracker(), 2, max_per_task=0)


@pytest.fixture(scope="module")
def ladder(base_task: Task) -> list[Task]:
    shapes = {"c2w0": (2, 0), "c3w1": (3, 1), "c3w2": (3, 2), "c4w1": (4, 1), "c5w2": (5, 2), "c8w3": (8, 3),
              "c20w5": (20, 5)}
    return [_variant(base_task, task_id, chain, writes) for task_id, (chain, writes) in shapes.items()]


def test_capability_stages_cap_chain_length_and_writes(ladder):
    tracker = PassRateTracker()
    curriculum = TaskCurriculum()
    assert _ids(curriculum.eligible(ladder, tracker)) == ["c2w0", "c3w1"]
    curriculum.stage = 1
    assert _ids(curriculum.eligible(ladder, tracker)) == ["c2w0", "c3w1", "c3w2", "c4w1", "c5w2"]
    curriculum.stage = 3
    assert _ids(curriculum.eligible(ladder, tracker)) == _ids(ladder)


def test_difficulty_band_drops_judged_tasks_outside_it(base_task):
    tasks = [_variant(base_task, task_id, 2, 1) for task_id in ("easy", "hard", "fresh", "few", "mid")]
    tracker = PassRateTracker(prior_weight=0.1, min_trials=4)
    tracker.update("easy", [1.0] * 19 + [0.0])  # 19.05 / 20.1 = 0.95 > 0.9
    tracker.update("hard", [1.0] + [0.0] * 19)  # 1.05 / 20.1 = 0.05 < 0.1
    tracker.update("few", [1.0] * 3)  # 0.98 but only 3 trials: not judged yet
    tracker.update("mid", [1.0, 0.0] * 5)
    assert _ids(TaskCurriculum().eligible(tasks, tracker)) == ["fresh", "few", "mid"]
    assert _ids(TaskCurriculum(band=(0.0, 1.0)).eligible(tasks, tracker)) == _ids(tasks)


def test_eligible_is_never_empty_when_tasks_exist(base_task, ladder):
    tracker = PassRateTracker()
    solved = [_variant(base_task, task_id, 2, 0) for task_id in ("s1", "s2")]
    for task in solved:
        tracker.update(task.id, [1.0] * 10)
    assert _ids(TaskCurriculum().eligible(solved + ladder[-2:], tracker)) == ["s1", "s2"]  # band empty: whole stage
    assert _ids(TaskCurriculum().eligible(ladder[-2:], tracker)) == ["c8w3", "c20w5"]  # stage empty: all tasks
    assert TaskCurriculum().eligible([], tracker) == []


def test_update_advances_at_the_threshold_and_stops_at_the_last_stage():
    curriculum = TaskCurriculum(stages=[(3, 1), (5, 2), (99, 99)])
    assert not curriculum.update(0.59) and curriculum.stage == 0
    assert curriculum.update(0.6) and curriculum.stage == 1
    assert curriculum.update(0.9) and curriculum.stage == 2
    assert not curriculum.update(1.0) and curriculum.stage == 2
    assert [(h.stage, h.advanced) for h in curriculum.history] == [(0, False), (0, True), (1, True), (2, False)]
    assert [h.mean_pass_rate for h in curriculum.history] == [0.59, 0.6, 0.9, 1.0]


def test_curriculum_state_round_trips():
    curriculum = TaskCurriculum(band=(0.2, 0.8), advance_threshold=0.7)
    curriculum.update(0.75)
    curriculum.update(0.1)
    assert TaskCurriculum.model_validate(curriculum.model_dump()) == curriculum
    assert TaskCurriculum.model_validate(json.loads(curriculum.model_dump_json())) == curriculum


def test_invalid_curriculum_is_rejected():
    with pytest.raises(ValidationError):
        TaskCurriculum(stage=4)
    with pytest.raises(ValidationError):
        TaskCurriculum(stages=[])
    with pytest.raises(ValidationError):
        TaskCurriculum(band=(0.9, 0.1))
