"""The local RL runtime with a scripted policy whose episodes pass or fail at random (so groups carry signal)
and a bookkeeping trainer: staleness bound, streaming vs barrier, multi-version trajectories, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from toolgym.agent.rollout import RolloutConfig
from toolgym.agent.toolcall import format_tool_call
from toolgym.domains import load_domain
from toolgym.rl.config import RLConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import TrainingRun
from toolgym.policy.scripted import ScriptedPolicy, clean_result
from toolgym.tasks.perturb import drop_last_write
from toolgym.tasks.verify import gold_answer

LAZY = "<think>lazy</think>"


class CoinPolicy(ScriptedPolicy):
    """Follows the gold chain, but on its first turn flips a coin: a lazy episode skips the last write."""

    def __init__(self, tasks, p_lazy=0.5, seed=0):
        self.plans = {t.instruction: (t.gold_chain, drop_last_write(t, load_domain(t.domain)), gold_answer(t))
                      for t in tasks}
        self.rng = random.Random(seed)
        self.p_lazy = p_lazy
        super().__init__(self._next)

    def _next(self, messages):
        opening = next(m["content"] for m in messages if m["role"] == "user")
        gold, lazy_calls, answer = self.plans[opening]
        first = next((m["content"] for m in messages if m["role"] == "assistant"), None)
        lazy = self.rng.random() < self.p_lazy if first is None else first.startswith(LAZY)
        calls = lazy_calls if lazy else gold
        done = sum(1 for m in messages if m["role"] == "tool" and clean_result(m["content"]))
        text = format_tool_call(calls[done]) if done < len(calls) else answer
        return (LAZY if lazy and first is None else "") + text


class BookkeepingTrainer:
    """Records what it is given; each step bumps the version and publishes it to the rollout policy."""

    def __init__(self, publish=None):
        self.version = 0
        self.publish = publish
        self.seen: list[tuple[str, int]] = []

    def step(self, groups):
        for g in groups:
            self.seen.append((g.group_id, self.version - g.min_version))
        self.version += 1
        if self.publish:
            self.publish({}, self.version)
        return {"loss": 0.0}

    def save(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        (path / "state.json").write_text(json.dumps({"version": self.version, "seen": self.seen}))

    def load(self, path: Path):
        state = json.loads((path / "state.json").read_text())
        self.version, self.seen = state["version"], [tuple(x) for x in state["seen"]]


@pytest.fixture(scope="module")
def rl_tasks(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:2] if t.expected_changes]


def _run(tmp: Path, tasks, mode="async", steps=6, staleness=1, **kw) -> TrainingRun:
    cfg = RLConfig(model="unused", tasks="unused", out=str(tmp), mode=mode, steps=steps, groups_per_step=3,
                   max_staleness=staleness, checkpoint_every=2, curriculum=False,
                   manager=ManagerConfig(group_size=4, inflight_groups=6), rollout=RolloutConfig(max_turns=12), **kw)
    trainer = BookkeepingTrainer()
    run = TrainingRun(cfg, tasks, CoinPolicy(tasks), trainer, show_progress=False)
    trainer.publish = run.policy.set_weights
    return run


def test_async_training_respects_the_staleness_bound(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, staleness=1)
    summary = run.run()
    assert summary.steps == 6 and summary.trained_groups == 18
    assert all(staleness <= 1 for _, staleness in run.trainer.seen)
    ids = [gid for gid, _ in run.trainer.seen]
    assert len(ids) == len(set(ids))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"reward", "pass_rate_by_domain", "staleness", "queue_depth", "trainer_idle_fraction"} <= set(rows[0])


def test_async_rollouts_span_policy_versions(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=8, staleness=3)
    run.run()
    versions = {g: s for g, s in run.trainer.seen}
    assert max(versions.values()) >= 1, "async rollouts never overlapped a weight update"


def test_sync_mode_trains_only_fresh_groups(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, mode="sync", staleness=0)
    summary = run.run()
    assert summary.trained_groups == 18
    assert all(staleness == 0 for _, staleness in run.trainer.seen)


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


def test_a_run_without_any_signal_stops_with_a_reason(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks, steps=3, max_wait_seconds=2.0)
    run.manager.policy.inner.p_lazy = 0.0       # every episode passes: no group has reward variance
    summary = run.run()
    assert summary.steps == 0 and "no trainable group" in summary.stopped_reason
