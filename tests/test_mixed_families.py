"""One RL run mixing the three environment families: tool-use, code and search groups all reach the trainer, each
verified by its own family (a pass only when the gold plan was followed), with noise on tool groups only and
per-domain oversampling over the families' domain labels."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from toolgym.agent.rollout import RolloutConfig
from toolgym.code.tasks import synthesize_code_tasks
from toolgym.domains import load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.runner import make_episodes
from toolgym.policy.scripted import ScriptedPolicy, next_step
from toolgym.rl.config import NoiseSettings, RLConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.simulated import SimulatedTrainer
from toolgym.search.synthesize import synthesize_search_tasks
from toolgym.tasks.model import Task
from toolgym.tasks.verify import gold_answer

GIVE_UP = "Sorry, I cannot do that."


class GoldOrGiveUp(ScriptedPolicy):
    """Follows the task's gold chain, or gives up on the first turn with probability 1/2 (so groups carry signal)."""

    def __init__(self, tasks: Sequence[Task], seed: int = 0):
        self.plans = {t.instruction: (list(t.gold_chain), gold_answer(t)) for t in tasks}
        self.rng = random.Random(seed)
        super().__init__(self._next)

    def _next(self, messages: list[dict]) -> str:
        opening = next(m["content"] for m in messages if m["role"] == "user")
        if opening not in self.plans or (len(messages) == 2 and self.rng.random() < 0.5):
            return GIVE_UP
        calls, answer = self.plans[opening]
        return next_step(messages, calls, answer, retries=3)


class RecordingTrainer(SimulatedTrainer):
    """A simulated trainer that keeps every group it trains."""

    def __init__(self):
        super().__init__()
        self.groups: list[SampleGroup] = []

    def step(self, groups: Sequence[SampleGroup]) -> dict[str, float]:
        self.groups += groups
        return super().step(groups)


@pytest.fixture(scope="module")
def mixed_tasks(tasks):
    code, _ = synthesize_code_tasks(2, seed=3, modules=("colorsys", "shlex"))
    env = next(EnvironmentSampler(load_domain("bank"), seed=5).sample_many(1))
    search, _ = synthesize_search_tasks(env, 2, seed=11)
    tool = [t for t in tasks["airline"] if t.expected_changes][:2]
    assert len(code) == len(search) == len(tool) == 2
    return tool + code + search


def test_one_run_trains_tool_code_and_search_groups(tmp_path, mixed_tasks):
    cfg = RLConfig(model="unused", tasks="unused", out=str(tmp_path), steps=6, groups_per_step=2, max_staleness=2,
                   checkpoint_every=0, curriculum=False, oversample={"code": 2.0},
                   noise=NoiseSettings(enabled=True, instruction=0.5, tool=0.5),
                   manager=ManagerConfig(group_size=4, inflight_groups=6, noisy_fraction=1.0),
                   rollout=RolloutConfig(max_turns=12))
    trainer = RecordingTrainer()
    run = TrainingRun(cfg, mixed_tasks, GoldOrGiveUp(mixed_tasks), trainer, show_progress=False)
    assert run.run().steps == 6
    families = {t.domain: t.env.family for t in mixed_tasks}
    trained = Counter(families[g.domain] for g in trainer.groups)
    assert set(trained) == {"tool", "code", "search"}, trained
    for group in trainer.groups:
        for traj in group.trajectories:
            gave_up = traj.messages[2]["content"] == GIVE_UP
            assert traj.passed != gave_up, (group.domain, traj.verdict)
            if families[group.domain] != "tool":
                assert not traj.noise, "noise applies to tool-use tasks only"
    assert any(traj.noise for g in trainer.groups if families[g.domain] == "tool" for traj in g.trajectories)


def test_evaluation_refuses_noise_on_families_without_it(mixed_tasks):
    with pytest.raises(ValueError, match="noise applies to tool-use tasks only.*code"):
        make_episodes(mixed_tasks, 1, noise="all")
