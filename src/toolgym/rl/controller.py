"""A rollout controller: plays the groups a ControllerManager assigns it, with its own policy and environments, in
whatever process hosts it (toolgym.rl.controller_process, toolgym.rl.controller_ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from toolgym.agent.rollout import BatchedPolicy, RolloutConfig
from toolgym.envs.families import open_env
from toolgym.policy.base import Policy
from toolgym.rl.manager import ManagerConfig, play_group
from toolgym.rl.queue import SampleGroup
from toolgym.rl.runtime_local import SyncedPolicy
from toolgym.tasks.model import Task


class RolloutController:
    """One controller's share of the rollouts: its own policy, environments and event loop's episodes."""

    def __init__(self, cid: int, tasks: Sequence[Task], policy_factory: Callable[[], Policy], cfg: ManagerConfig,
                 rollout: RolloutConfig):
        self.cid = cid
        self.tasks = {t.id: t for t in tasks}
        self.cfg, self.rollout = cfg, rollout
        self.policy = SyncedPolicy(policy_factory())
        self.client = BatchedPolicy(self.policy, rollout.sampling, rollout.max_batch)

    def warm(self) -> None:
        """Open every task's environment once, so per-process caches (compiled domains, seeded databases) are built
        before the first assignment rather than inside it."""
        for record in {t.env.id: t.env for t in self.tasks.values()}.values():
            open_env(record).close()

    async def play(self, gid: int, tid: str, noise_levels: dict[str, float] | None, step: int) -> SampleGroup:
        """Run group `gid` of task `tid` to the end."""
        return await play_group(self.client, gid, self.tasks[tid], self.cfg, self.rollout, noise_levels, step)

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Load published weights between generation batches."""
        self.policy.set_weights(state_dict, version)
