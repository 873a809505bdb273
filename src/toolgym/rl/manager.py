"""RolloutManager: keeps groups of rollouts in flight and streams each finished group to the SampleQueue at once
(no batch barrier). Which task a new group gets comes from the dynamic budget (running pass rates, a greedy
heap over task value) filtered by the curriculum; groups can be noisy at the noise curriculum's levels.

What a group is comes from its player (`GroupPlayer`): by default `play_task`, the task's own rollouts; RL of Heavy
Thinking's summary stage (heavy.summary_rl) plays summaries instead, and self-verification (rl.self_verify) adds the
policy's judgments of each group as a second group.

Group ids are sequential; every group's task and seeds derive from its id, so a group that was in flight when a
run stopped is regenerated identically on resume (`pending` in the state)."""

from __future__ import annotations

import asyncio
import random
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel

from toolgym.agent.rollout import BatchedPolicy, Episode, RolloutConfig, run_episode
from toolgym.envs.families import open_env, takes_noise
from toolgym.noise.curriculum import NoiseCurriculum
from toolgym.noise.instruction import apply_instruction_noise
from toolgym.noise.tool import ToolNoise
from toolgym.policy.base import Policy
from toolgym.rl.budget import PassRateTracker, allocate
from toolgym.rl.curriculum import TaskCurriculum
from toolgym.rl.queue import SampleGroup, SampleQueue
from toolgym.tasks.model import Task


class ManagerConfig(BaseModel):
    group_size: int = 4
    inflight_groups: int = 8
    plan_groups: int = 32
    noisy_fraction: float = 0.5
    seed: int = 0


def _seed(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def group_episodes(gid: int, task: Task, cfg: ManagerConfig, noise_levels: dict[str, float] | None) -> list[Episode]:
    """Group `gid`'s episodes of `task`; with noise levels (a noise curriculum), a seeded share of groups is noisy at
    those levels. Everything random derives from the group id, so the same group can be replayed anywhere."""
    rng = random.Random(_seed(cfg.seed, "group", gid))
    noisy = noise_levels is not None and rng.random() < cfg.noisy_fraction and takes_noise(task)
    episodes = []
    for i in range(cfg.group_size):
        t, env, info = task, open_env(task.env), {}
        if noisy:
            t, _ = apply_instruction_noise(task, noise_levels["instruction"], _seed(gid, i, "instruction"))
            env = ToolNoise(noise_levels["tool"], _seed(gid, i, "tool")).wrap(env)
            info = dict(noise_levels)
        episodes.append(Episode(task=t, env=env, trial=i, noise=info))
    return episodes


async def play_group(client: BatchedPolicy, gid: int, task: Task, cfg: ManagerConfig, rollout: RolloutConfig,
                     noise_levels: dict[str, float] | None, step: int) -> SampleGroup:
    """Run group `gid` (all its episodes concurrently) and return it; delivering it is the caller's business."""
    episodes = group_episodes(gid, task, cfg, noise_levels)
    try:
        trajs = await asyncio.gather(*(run_episode(ep, client, rollout) for ep in episodes))
    finally:
        for ep in episodes:
            ep.env.close()
    return SampleGroup(group_id=f"g{gid}", task_id=task.id, domain=task.domain, trajectories=list(trajs),
                       created_step=step)


async def play_task(client: BatchedPolicy, gid: int, task: Task, cfg: ManagerConfig, rollout: RolloutConfig,
                    noise_levels: dict[str, float] | None, step: int) -> list[SampleGroup]:
    """The default player: the task's own group of rollouts."""
    return [await play_group(client, gid, task, cfg, rollout, noise_levels, step)]


class GroupPlayer(Protocol):
    """Plays group `gid` of `task`; returns the task's group first (its rewards feed the rollout budget), then any
    auxiliary groups trained beside it."""

    async def __call__(self, client: BatchedPolicy, gid: int, task: Task, cfg: ManagerConfig, rollout: RolloutConfig,
                       noise_levels: dict[str, float] | None, step: int) -> list[SampleGroup]: ...


class RolloutManager:
    """Produces SampleGroups from tasks with a Policy; `run` streams them, `generate` is the synchronous baseline."""

    def __init__(self, tasks: Sequence[Task], policy: Policy, queue: SampleQueue | None, cfg: ManagerConfig,
                 rollout: RolloutConfig, tracker: PassRateTracker | None = None,
                 curriculum: TaskCurriculum | None = None, noise: NoiseCurriculum | None = None,
                 step: Callable[[], int] = lambda: 0, max_queued: int | None = None, play: GroupPlayer = play_task):
        if not tasks:
            raise ValueError("the rollout manager needs at least one task")
        self.tasks = {t.id: t for t in tasks}
        self.policy = policy
        self.queue = queue
        self.cfg = cfg
        self.rollout = rollout
        self.tracker = tracker or PassRateTracker()
        self.curriculum = curriculum
        self.noise = noise
        self.step = step
        self.play = play
        self.next_group = 0
        self.plan: deque[str] = deque()
        self.pending: dict[int, str] = {}
        self.redo: deque[tuple[int, str]] = deque()
        self.finished = 0
        self.error: BaseException | None = None
        self.max_queued = max_queued
        """Issue no new group while this many wait in the queue: groups beyond what the trainer can take within the
        staleness bound would only go stale (rollouts on another engine, such as vLLM, can outrun the trainer)."""
        self.lock = threading.RLock()  # delivering into a full queue evicts a group, which regenerate re-plans
        self._recent: list[float] = []
        self._recent_aux: dict[str, list[float]] = {}

    def _refill_plan(self) -> None:
        tasks = list(self.tasks.values())
        if self.curriculum is not None:
            tasks = self.curriculum.eligible(tasks, self.tracker)
        rng = random.Random(_seed(self.cfg.seed, "plan", self.next_group))
        ids = [t.id for t in tasks]
        rng.shuffle(ids)
        counts = allocate(ids, self.tracker, self.cfg.plan_groups)
        plan = [tid for tid in ids for _ in range(counts.get(tid, 0))]
        rng.shuffle(plan)
        self.plan.extend(plan)

    def issue(self) -> tuple[int, str]:
        """The next group to run: a regenerated one first, else a fresh id with a task from the budget plan."""
        with self.lock:
            if self.redo:
                gid, tid = self.redo.popleft()
            else:
                if not self.plan:
                    self._refill_plan()
                gid, tid = self.next_group, self.plan.popleft()
                self.next_group += 1
            self.pending[gid] = tid
            return gid, tid

    async def run_group(self, client: BatchedPolicy, gid: int, tid: str) -> SampleGroup:
        levels = self.noise.levels if self.noise is not None else None
        group, *extra = await self.play(client, gid, self.tasks[tid], self.cfg, self.rollout, levels, self.step())
        self.deliver(gid, group, extra)
        return group

    def deliver(self, gid: int, group: SampleGroup, extra: Sequence[SampleGroup] = ()) -> None:
        """Hand a finished group (and its auxiliary groups) to the queue; atomic with respect to `snapshot`, so no
        group is lost or doubled. Only the task's group feeds the budget and the reward curve."""
        with self.lock:
            self.tracker.update(group.task_id, group.rewards)
            self._recent.extend(group.rewards)
            for g in extra:
                self._recent_aux.setdefault(g.kind, []).extend(g.rewards)
            for g in (group, *extra):
                self.queue.put(g)
            self.pending.pop(gid, None)
            self.finished += 1

    def _queue_full(self) -> bool:
        return self.max_queued is not None and self.queue is not None and len(self.queue) >= self.max_queued

    async def _stream(self, stop: threading.Event) -> None:
        client = BatchedPolicy(self.policy, self.rollout.sampling, self.rollout.max_batch)
        running: set[asyncio.Task] = set()
        while not stop.is_set() or running:
            while not stop.is_set() and len(running) < self.cfg.inflight_groups and not self._queue_full():
                running.add(asyncio.ensure_future(self.run_group(client, *self.issue())))
            if not running:
                await asyncio.sleep(0.05)
                continue
            done, running = await asyncio.wait(running, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                if fut.exception() is not None:
                    self.error = fut.exception()
                    stop.set()
            if stop.is_set():
                for fut in running:
                    fut.cancel()
                break

    def run(self, stop: threading.Event) -> None:
        """Stream groups into the queue until `stop` is set (call from a dedicated thread)."""
        asyncio.run(self._stream(stop))

    def generate(self, n_groups: int) -> list[SampleGroup]:
        """The synchronous baseline: run `n_groups` groups concurrently, wait for all (a batch barrier), queue them."""

        async def batch() -> list[SampleGroup]:
            client = BatchedPolicy(self.policy, self.rollout.sampling, self.rollout.max_batch)
            return list(await asyncio.gather(*(self.run_group(client, *self.issue()) for _ in range(n_groups))))

        return asyncio.run(batch())

    def take_recent_rewards(self) -> list[float]:
        """Rewards of every rollout delivered since the last call, trainable or not: the policy's own reward curve
        (the trained groups alone over-represent tasks that are neither solved nor hopeless)."""
        with self.lock:
            recent, self._recent = self._recent, []
            return recent

    def take_recent_auxiliary(self) -> dict[str, list[float]]:
        """Rewards of every auxiliary rollout (by group kind) delivered since the last call, trainable or not."""
        with self.lock:
            recent, self._recent_aux = self._recent_aux, {}
            return recent

    def regenerate(self, group: SampleGroup) -> None:
        """Queue a stale group's task again (the SampleQueue's on_stale hook)."""
        with self.lock:
            self.plan.appendleft(group.task_id)

    def snapshot(self) -> tuple[dict, dict]:
        """(manager state, queue state) taken together: every issued group is either queued or due for regeneration."""
        with self.lock:
            manager = {"next_group": self.next_group, "plan": list(self.plan), "finished": self.finished,
                       "redo": sorted([*self.pending.items(), *self.redo]), "tracker": self.tracker.state_dict()}
            return manager, self.queue.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            self.next_group = state["next_group"]
            self.plan = deque(state["plan"])
            self.finished = state["finished"]
            self.redo = deque((int(g), t) for g, t in state["redo"])
            self.pending = {}
            self.tracker.load_state_dict(state["tracker"])
