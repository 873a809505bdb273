"""The Ray runtime (queue and rollout manager as actors, trainer in the driver) with a scripted policy whose episodes
pass or fail at random and a simulated trainer: group accounting, staleness, weight publishing, resume."""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from toolgym.agent.rollout import RolloutConfig  # noqa: E402
from toolgym.domains import load_domain  # noqa: E402
from toolgym.envs.sample import EnvironmentSampler  # noqa: E402
from toolgym.policy.scripted import CoinGoldPolicy  # noqa: E402
from toolgym.rl.config import RLConfig  # noqa: E402
from toolgym.rl.manager import ManagerConfig  # noqa: E402
from toolgym.rl.runtime_ray import RayTrainingRun  # noqa: E402
from toolgym.rl.simulated import SimulatedTrainer  # noqa: E402
from toolgym.tasks.model import Task  # noqa: E402
from toolgym.tasks.synthesize import synthesize_task  # noqa: E402

STEPS, GROUPS_PER_STEP, STALENESS = 4, 2, 1

@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One small Ray cluster for the module; a hung run dumps tracebacks and exits instead of stalling CI."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the policy factory lambda lives in this file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def rl_tasks() -> list[Task]:
    envs = [env for name in ("airline", "retail")
            for env in EnvironmentSampler(load_domain(name), seed=7).sample_many(3)]
    return [t for t in (synthesize_task(env, 100 + i) for i, env in enumerate(envs)) if t.expected_changes]


def _run(out: Path, tasks: list[Task]) -> RayTrainingRun:
    cfg = RLConfig(model="unused", tasks="unused", out=str(out), runtime="ray", steps=STEPS,
                   groups_per_step=GROUPS_PER_STEP, max_staleness=STALENESS, checkpoint_every=2,
                   manager=ManagerConfig(group_size=4, inflight_groups=4), rollout=RolloutConfig(max_turns=12))
    trainer = SimulatedTrainer()
    run = RayTrainingRun(cfg, tasks, lambda: CoinGoldPolicy(tasks), trainer, show_progress=False)
    return run


def test_async_run_trains_each_group_once_with_published_weights(tmp_path, rl_tasks):
    run = _run(tmp_path, rl_tasks)
    summary = run.run()
    assert summary.steps == STEPS and summary.trained_groups == STEPS * GROUPS_PER_STEP
    ids = [gid for gid, _, _ in run.trainer.seen]
    assert len(ids) == len(set(ids)) == STEPS * GROUPS_PER_STEP
    assert all(0 <= version - made_by <= STALENESS for _, version, made_by in run.trainer.seen)
    # Groups trained from step 3 on are fresh enough only if the actor generated them with published weights.
    assert all(made_by >= 1 for _, version, made_by in run.trainer.seen if version >= 2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert (tmp_path / "checkpoint" / "state.json").exists()
    assert ray.is_initialized(), "the run shut down a Ray it did not start"


def test_interrupted_run_resumes_without_losing_or_repeating_groups(tmp_path, rl_tasks):
    first = _run(tmp_path, rl_tasks)
    assert first.run(stop_after=2).interrupted
    second = _run(tmp_path, rl_tasks)
    summary = second.run(resume=True)
    assert summary.steps == STEPS and not summary.interrupted
    trained = second.state.trained
    assert len(trained) == len(set(trained)) == STEPS * GROUPS_PER_STEP
    assert [gid for gid, _, _ in second.trainer.seen] == trained
    assert second.trainer.version == STEPS
