"""The local RL runtime with a scripted policy whose episodes pass or fail at random (so groups carry signal)
and a simulated trainer: staleness bound, streaming vs barrier, multi-version trajectories, resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from toolgym.agent.rollout import RolloutConfig
from toolgym.agent.trajectory import Trajectory, TurnRecord
from toolgym.policy.scripted import CoinGoldPolicy
from toolgym.rl.config import RLConfig
from toolgym.rl.manager import ManagerConfig, RolloutManager
from toolgym.rl.queue import SampleGroup, SampleQueue
from toolgym.rl.runtime_local import CheckpointError, TrainingRun
from toolgym.rl.simulated import SimulatedTrainer

@pytest.fixture(scope="module")
def rl_tasks(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:2] if t.expected_changes]


def _run(tmp: Path, tasks, mode="async", steps=6, staleness=1, **kw) -> TrainingRun:
    cfg = RLConfig(model="unused", tasks="unused", out=str(tmp), mode=mode, steps=steps, groups_per_step=3,
                   max_staleness=staleness, checkpoint_every=2, curriculum=False,
                   manager=ManagerConfig(group_size=4, inflight_groups=6), rollout=RolloutConfig(max_turns=12), **kw)
    trainer = SimulatedTrainer()
    run = TrainingRun(cfg, tasks, CoinGoldPolicy(tasks), trainer, show_progress=False)
    return run


def test_delivering_into_a_full_queue_replans_the_evicted_group(rl_tasks):
    """A full queue evicts its oldest group on put and reports it to the manager from inside delivery: the
    manager's own lock must not deadlock that (it did when rollouts outran the trainer, as with vLLM)."""
    manager = RolloutManager(rl_tasks, CoinGoldPolicy(rl_tasks), None, ManagerConfig(group_size=2, seed=0),
                             RolloutConfig())
    manager.queue = SampleQueue(max_staleness=1, capacity=1, on_stale=manager.regenerate)
    issued = [manager.issue() for _ in range(2)]

    def deliver_all() -> None:
        for gid, tid in issued:
            trajectories = [Trajectory(task_id=tid, domain="d", reward=r, passed=r > 0.5,
                                       turns=[TurnRecord(index=0, version=0, n_tokens=1, finish_reason="stop")])
                            for r in (0.0, 1.0)]
            manager.deliver(gid, SampleGroup(group_id=f"g{gid}", task_id=tid, domain="d", trajectories=trajectories))

    worker = threading.Thread(target=deliver_all, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "delivery deadlocked on a full queue"
    assert manager.queue.stats().depth == 1 and manager.queue.stats().dropped_stale == 1
    assert manager.plan[0] == issued[0][1], "the evicted group's task was not planned again"
    assert not manager.pending


def test_rollouts_that_outrun_the_trainer_stop_at_what_it_can_use(tmp_path, rl_tasks):
    """Scripted rollouts are far faster than a 0.3 s training step: no group is issued while groups_per_step x
    (max_staleness + 1) wait, so the queue holds at most that plus the groups in flight, instead of filling with
    groups that would only go stale."""
    trainer = SimulatedTrainer(step_seconds=0.3)
    cfg = RLConfig(model="unused", tasks="unused", out=str(tmp_path), steps=6, groups_per_step=3, max_staleness=1,
                   checkpoint_every=0, curriculum=False, manager=ManagerConfig(group_size=4, inflight_groups=6),
                   rollout=RolloutConfig(max_turns=12))
    run = TrainingRun(cfg, rl_tasks, CoinGoldPolicy(rl_tasks), trainer, show_progress=False)
    assert run.run().steps == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(row["queue_depth"] for row in rows) <= 3 * 2 + 6


def test_async_training_respects_the_staleness_bound(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, staleness=1)
    summary = run.run()
    assert summary.steps == 6 and summary.trained_groups == 18
    assert all(version - made_by <= 1 for _, version, made_by in run.trainer.seen)
    ids = [gid for gid, _, _ in run.trainer.seen]
    assert len(ids) == len(set(ids))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"reward", "pass_rate_by_domain", "staleness", "queue_depth", "trainer_idle_fraction"} <= set(rows[0])


def test_async_rollouts_span_policy_versions(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=8, staleness=3)
    run.run()
    assert max(version - made_by for _, version, made_by in run.trainer.seen) >= 1, \
        "async rollouts never overlapped a weight update"


def test_sync_mode_trains_only_fresh_groups(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, mode="sync", staleness=0)
    summary = run.run()
    assert summary.trained_groups == 18
    assert all(version == made_by for _, version, made_by in run.trainer.seen)


def test_groups_without_signal_are_never_trained(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=3)
    run.run()
    assert run.queue.stats().dropped_no_signal > 0


def test_interrupted_run_resumes_without_losing_or_repeating_groups(tmp_path, rl_tasks):
    full = _run(tmp_path / "full", rl_tasks)
    full.run()
    first = _run(tmp_path / "resumed", rl_tasks)
    assert first.run(stop_after=3).interrupted
    second = _run(tmp_path / "resumed", rl_tasks)
    summary = second.run(resume=True)
    assert summary.steps == 6
    trained = second.state.trained
    assert len(trained) == len(full.state.trained) == 18
    assert len(set(trained)) == len(trained)
    assert second.trainer.version == 6


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, rl_tasks):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(tmp_path, rl_tasks).run(resume=True)


@pytest.mark.parametrize("damage", ["drop tracker", "truncate"])
def test_resume_from_a_damaged_checkpoint_is_a_clear_error(tmp_path, rl_tasks, damage):
    assert _run(tmp_path, rl_tasks).run(stop_after=2).interrupted
    path = tmp_path / "checkpoint" / "state.json"
    if damage == "drop tracker":
        state = json.loads(path.read_text())
        del state["manager"]["tracker"]
        path.write_text(json.dumps(state))
    else:
        path.write_text(path.read_text()[:40])
    with pytest.raises(CheckpointError, match="not a run state"):
        _run(tmp_path, rl_tasks).run(resume=True)


def test_a_run_without_any_signal_stops_with_a_reason(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=3, max_wait_seconds=2.0)
    run.manager.policy.inner.p_lazy = 0.0       # every episode passes: no group has reward variance
    summary = run.run()
    assert summary.steps == 0 and "no trainable group" in summary.stopped_reason
    assert "had equal rewards" in summary.stopped_reason


def test_a_run_whose_rollouts_never_finish_says_so(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=1, max_wait_seconds=0.5)
    inner = run.manager.policy.inner
    generate = inner.generate
    inner.generate = lambda *args, **kwargs: time.sleep(1.0) or generate(*args, **kwargs)
    summary = run.run()
    assert summary.steps == 0 and "no group finished" in summary.stopped_reason
