"""The Ray runtime: the local runtime's DORA data flow with the SampleQueue and the RolloutManager as Ray actors.

- `QueueActor` owns the SampleQueue; its calls run on a thread pool (`max_concurrency`), so the trainer's
  blocking `get` (always with a timeout) never stalls the manager's puts.
- `ManagerActor` owns the RolloutManager and the policy (built inside the actor by `policy_factory`, wrapped in
  SyncedPolicy). The manager's queue is a `QueueClient` that forwards to the QueueActor, and `run(stop)` streams
  in a thread of the actor. A snapshot holds the manager lock while it reads the queue actor's state, so
  delivering pauses and the two halves agree (as in the local runtime).
- The Trainer stays in the driver: it owns the optimizer and writes the checkpoint; after each step its
  `publish` hook (which TrainingRun.run points at `run.policy.set_weights` when it is unset) sends the weights
  through the object store (`ray.put`) to the ManagerActor.

`RayTrainingRun` is a TrainingRun whose manager, queue and policy are clients of those actors, so the training
loop, metrics, checkpoint layout and resume semantics are TrainingRun's own, not a copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.actor import ActorHandle

from toolgym.agent.rollout import RolloutConfig
from toolgym.noise.curriculum import NoiseCurriculum
from toolgym.policy.base import Policy
from toolgym.rl.config import RLConfig
from toolgym.rl.curriculum import TaskCurriculum
from toolgym.rl.manager import ManagerConfig, RolloutManager
from toolgym.rl.metrics import MetricsLogger
from toolgym.rl.queue import QueueStats, SampleGroup, SampleQueue
from toolgym.rl.runtime_local import RunSummary, SyncedPolicy, TrainerLike, TrainingRun
from toolgym.tasks.model import Task

ACTOR_THREADS = 8


@ray.remote(num_cpus=0, max_concurrency=ACTOR_THREADS)
class QueueActor:
    """The SampleQueue as an actor; groups it drops as stale go back to the ManagerActor for regeneration."""

    def __init__(self, max_staleness: int, oversample: dict[str, float], seed: int) -> None:
        self.queue = SampleQueue(max_staleness, oversample=oversample, seed=seed, on_stale=self._on_stale)
        self.manager: ActorHandle | None = None
        self.regenerating: list[ray.ObjectRef] = []
        self.lock = threading.Lock()

    def bind(self, manager: ActorHandle) -> None:
        """Set the ManagerActor that regenerates stale groups (it is created after the queue)."""
        self.manager = manager

    def _on_stale(self, group: SampleGroup) -> None:
        """Send a stale group's task back to the manager; not awaited here because an eviction happens inside a
        put, while the manager holds its lock for that delivery (`get` awaits them instead)."""
        with self.lock:
            self.regenerating.append(self.manager.regenerate.remote(group))

    def put(self, group: SampleGroup) -> bool:
        """SampleQueue.put."""
        return self.queue.put(group)

    def get(self, trainer_version: int, n: int, timeout: float) -> list[SampleGroup]:
        """SampleQueue.get with a bounded wait; returns once the manager has taken back every stale group so far,
        so a checkpoint taken after it sees them in the manager's plan."""
        groups = self.queue.get(trainer_version, n, timeout=timeout)
        with self.lock:
            pending, self.regenerating = self.regenerating, []
        ray.get(pending)
        return groups

    def size(self) -> int:
        """Queued groups (len of the SampleQueue)."""
        return len(self.queue)

    def stats(self) -> QueueStats:
        """SampleQueue.stats."""
        return self.queue.stats()

    def close(self) -> None:
        """SampleQueue.close: wakes the getter; puts still queue."""
        self.queue.close()

    def state_dict(self) -> dict:
        """SampleQueue.state_dict."""
        return self.queue.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """SampleQueue.load_state_dict."""
        self.queue.load_state_dict(state)


class QueueClient:
    """A SampleQueue look-alike that forwards to a QueueActor: the manager actor's queue and the driver's."""

    def __init__(self, actor: ActorHandle) -> None:
        self.actor = actor

    def put(self, group: SampleGroup) -> bool:
        """Queue a group, waiting for the actor so a snapshot never misses a delivered group."""
        return ray.get(self.actor.put.remote(group))

    def get(self, trainer_version: int, n: int, timeout: float = 1.0) -> list[SampleGroup]:
        """Up to n usable groups within `timeout` seconds ([] when none came)."""
        return ray.get(self.actor.get.remote(trainer_version, n, timeout))

    def __len__(self) -> int:
        return ray.get(self.actor.size.remote())

    def stats(self) -> QueueStats:
        """The queue's counters."""
        return ray.get(self.actor.stats.remote())

    def close(self) -> None:
        """Wake and refuse getters."""
        ray.get(self.actor.close.remote())

    def state_dict(self) -> dict:
        """The queue's checkpoint state."""
        return ray.get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        """Restore the queue's checkpoint state."""
        ray.get(self.actor.load_state_dict.remote(state))


@ray.remote(num_cpus=1, max_concurrency=ACTOR_THREADS)
class ManagerActor:
    """The RolloutManager and its policy as an actor; streams into the QueueActor from a background thread."""

    def __init__(self, tasks: Sequence[Task], policy_factory: Callable[[], Policy], queue: ActorHandle,
                 manager: ManagerConfig, rollout: RolloutConfig) -> None:
        self.policy = SyncedPolicy(policy_factory())
        self.step = 0
        self.manager = RolloutManager(tasks, self.policy, QueueClient(queue), manager, rollout,
                                      step=lambda: self.step)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start streaming groups (RolloutManager.run) in a background thread of the actor."""
        self.stopping.clear()
        self.thread = threading.Thread(target=self.manager.run, args=(self.stopping,), daemon=True,
                                       name="rollout-manager")
        self.thread.start()

    def stop(self) -> None:
        """Stop streaming and wait for the thread (groups in flight stay pending, regenerated on resume)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=60)

    def generate(self, n_groups: int) -> None:
        """The sync baseline's barrier (RolloutManager.generate); the groups go to the queue, not back here."""
        self.manager.generate(n_groups)

    def regenerate(self, group: SampleGroup) -> None:
        """RolloutManager.regenerate (the queue's stale hook)."""
        self.manager.regenerate(group)

    def snapshot(self) -> tuple[dict, dict]:
        """(manager state, queue state), taken under the manager lock so no delivery falls between them."""
        return self.manager.snapshot()

    def load_state_dict(self, state: dict) -> None:
        """RolloutManager.load_state_dict."""
        self.manager.load_state_dict(state)

    def sync(self, step: int, curriculum: TaskCurriculum | None, noise: NoiseCurriculum | None) -> None:
        """Take the driver's step and curricula (the driver updates them after each step and owns their state)."""
        with self.manager.lock:
            self.step = step
            self.manager.curriculum, self.manager.noise = curriculum, noise

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Load published weights into the policy between generation batches."""
        self.policy.set_weights(state_dict, version)

    def version(self) -> int:
        """The policy's weights version."""
        return self.policy.version

    def take_recent_rewards(self) -> list[float]:
        """RolloutManager.take_recent_rewards."""
        return self.manager.take_recent_rewards()

    def take_recent_auxiliary(self) -> dict[str, list[float]]:
        """RolloutManager.take_recent_auxiliary."""
        return self.manager.take_recent_auxiliary()

    def error(self) -> BaseException | None:
        """The exception that stopped streaming, if any."""
        return self.manager.error


class ManagerClient:
    """The driver's handle on a ManagerActor: the RolloutManager interface TrainingRun uses, plus `set_weights`
    and `version` so that it also stands in for the policy (TrainingRun wraps it in SyncedPolicy)."""

    def __init__(self, actor: ActorHandle) -> None:
        self.actor = actor
        self.curriculum: TaskCurriculum | None = None
        self.noise: NoiseCurriculum | None = None

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the actor's streaming, if any."""
        return ray.get(self.actor.error.remote())

    @property
    def version(self) -> int:
        """The weights version the actor's policy generates with."""
        return ray.get(self.actor.version.remote())

    def run(self, stop: threading.Event) -> None:
        """Stream in the actor until `stop` is set (TrainingRun calls this from its producer thread)."""
        ray.get(self.actor.start.remote())
        stop.wait()
        ray.get(self.actor.stop.remote())

    def generate(self, n_groups: int) -> None:
        """Run `n_groups` groups in the actor and wait for all of them to reach the queue."""
        ray.get(self.actor.generate.remote(n_groups))

    def snapshot(self) -> tuple[dict, dict]:
        """(manager state, queue state) taken together."""
        return ray.get(self.actor.snapshot.remote())

    def load_state_dict(self, state: dict) -> None:
        """Restore the manager's checkpoint state."""
        ray.get(self.actor.load_state_dict.remote(state))

    def take_recent_rewards(self) -> list[float]:
        """Rewards of every rollout the actor delivered since the last call."""
        return ray.get(self.actor.take_recent_rewards.remote())

    def take_recent_auxiliary(self) -> dict[str, list[float]]:
        """Rewards of every auxiliary rollout the actor delivered since the last call, by group kind."""
        return ray.get(self.actor.take_recent_auxiliary.remote())

    def sync(self, step: int) -> None:
        """Push the driver's step and its curricula (`self.curriculum`, `self.noise`) to the actor."""
        ray.get(self.actor.sync.remote(step, self.curriculum, self.noise))

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Publish weights: one copy into the object store, then the actor loads it."""
        ray.get(self.actor.set_weights.remote(ray.put(state_dict), version))


class RayTrainingRun(TrainingRun):
    """TrainingRun on Ray actors (see the module docstring); one `run` per instance, which removes the actors."""

    def __init__(self, cfg: RLConfig, tasks: Sequence[Task], policy_factory: Callable[[], Policy],
                 trainer: TrainerLike, show_progress: bool = True):
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        queue = QueueActor.remote(cfg.max_staleness, cfg.oversample, cfg.seed)
        self.actors: list[ActorHandle] = [queue]
        try:
            manager = ManagerActor.remote(list(tasks), policy_factory, queue, cfg.manager, cfg.rollout)
            self.actors.append(manager)
            ray.get(queue.bind.remote(manager))
            client = ManagerClient(manager)
            # TrainingRun also builds a local manager and queue here; they are replaced by the actors' clients.
            super().__init__(cfg, tasks, client, trainer, show_progress)  # type: ignore[arg-type]
        except BaseException:
            self.close()
            raise
        client.curriculum, client.noise = self.curriculum, self.noise
        self.manager: ManagerClient = client  # type: ignore[assignment]
        self.queue: QueueClient = QueueClient(queue)  # type: ignore[assignment]

    def restore(self) -> None:
        """TrainingRun.restore, then hand the restored step and curricula to the manager actor."""
        super().restore()
        self.manager.sync(self.state.step)

    def _after_step(self, groups: list[SampleGroup], stats: dict[str, float], waited: float,
                    log: MetricsLogger) -> None:
        """TrainingRun's bookkeeping, then the new step and updated curricula go to the manager actor."""
        super()._after_step(groups, stats, waited, log)
        self.manager.sync(self.state.step)

    def run(self, resume: bool = False, stop_after: int | None = None,
            on_step: Callable[[int], None] | None = None) -> RunSummary:
        """TrainingRun.run on the actors, which are removed afterwards (Ray too, if this run started it)."""
        try:
            self.manager.sync(self.state.step)
            return super().run(resume=resume, stop_after=stop_after, on_step=on_step)
        finally:
            self.close()

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this run started it."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False
