"""Rollout controllers across processes: a light manager keeps the budget, curriculum, staleness and queue, and N
RolloutControllers in other processes (local processes, or Ray actors with `runtime: ray`) own the environments and
episodes and stream finished groups back.

- `ControllerManager` is a RolloutManager whose groups run elsewhere: it issues (group id, task) pairs from the
  budget plan exactly as the in-process manager does, assigns each to the least-loaded controller, and delivers the
  groups that come back to the SampleQueue. Checkpoint state, resume and stale-group regeneration are the base
  class's, so an interrupted run resumes with no group trained twice or lost.
- `RolloutController` (rl/controller.py) plays an assigned group with `play_group`; every seed of a group derives
  from its id, so any controller can play it. Its policy is built in its own process by a picklable factory. It is
  hosted in a local process (rl/controller_process.py, forked from a forkserver by default) or a Ray actor
  (rl/controller_ray.py).
- The trainer's weight publication (`set_weights`) goes to every controller, in order with the assignments on each
  link, so a group assigned after a publication is generated with the new weights; trajectories record the version
  of every token, which keeps staleness exact per token.
- A controller that dies (even by SIGKILL) loses nothing: groups it had delivered are kept, the ones it had in flight
  are re-issued under the same ids to the survivors (regenerated from the same seeds) and counted in `regenerated`.

The manager's loop is one code path for both backends: a link per controller turns its messages into events
(`ready`, `group`, `version`, `error`, `dead`) on one queue that the manager thread consumes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from toolgym.agent.rollout import RolloutConfig
from toolgym.noise.curriculum import NoiseCurriculum
from toolgym.policy.base import Policy
from toolgym.rl.budget import PassRateTracker
from toolgym.rl.config import RLConfig
from toolgym.rl.curriculum import TaskCurriculum
from toolgym.rl.manager import ManagerConfig, RolloutManager
from toolgym.rl.queue import SampleGroup, SampleQueue
from toolgym.rl.runtime_local import RunSummary, SyncedPolicy, TrainerLike, TrainingRun
from toolgym.tasks.model import Task

Event = tuple[int, str, Any]
"""(controller id, kind, payload) as a link reports it to the manager."""


class Link(Protocol):
    """The manager's handle on one controller; what the controller says arrives as events on the manager's queue."""

    cid: int

    def assign(self, gid: int, tid: str, noise_levels: dict[str, float] | None, step: int) -> None: ...

    def publish(self, state_dict: dict[str, Any], version: int) -> None: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class ControllerDied(RuntimeError):
    """Every rollout controller is gone, or one failed while starting."""


class ControllerManager(RolloutManager):
    """A RolloutManager whose groups run in RolloutControllers in other processes (see the module docstring)."""

    def __init__(self, tasks: Sequence[Task], policy: Policy | None, queue: SampleQueue | None, cfg: ManagerConfig,
                 rollout: RolloutConfig, tracker: PassRateTracker | None = None,
                 curriculum: TaskCurriculum | None = None, noise: NoiseCurriculum | None = None,
                 step: Callable[[], int] = lambda: 0, *, policy_factory: Callable[[], Policy], controllers: int = 2,
                 runtime: str = "local", start_method: str = "forkserver", start_timeout: float = 300.0):
        if controllers < 1:
            raise ValueError("a controller manager needs at least one controller")
        super().__init__(tasks, policy, queue, cfg, rollout, tracker, curriculum, noise, step)
        self.policy_factory = policy_factory
        self.n_controllers = controllers
        self.runtime = runtime
        self.start_method = start_method
        self.start_timeout = start_timeout
        self.events: queue_module.Queue[Event] = queue_module.Queue()
        self.links: dict[int, Link] = {}
        self.inflight: dict[int, dict[int, str]] = {}
        """Per live controller: group id -> task id of the groups it is playing."""
        self.delivered_by: dict[int, int] = {}
        """Group id -> the controller that delivered it."""
        self.regenerated: list[tuple[int, str]] = []
        """(group id, task id) of every group re-issued because its controller died."""
        self.controller_versions: dict[int, int] = {}
        """The weights version each controller last confirmed."""
        self.weights: tuple[dict[str, Any], int] | None = None
        self.owns_ray = False

    # ---- policy side: the trainer publishes here ------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The latest published weights version."""
        return self.weights[1] if self.weights else 0

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Publish weights to every live controller (and to controllers started later)."""
        self.weights = (state_dict, version)
        for link in list(self.links.values()):
            link.publish(state_dict, version)

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the controllers (once) and wait until each has warmed up."""
        if self.links:
            return
        args = (list(self.tasks.values()), self.policy_factory, self.cfg, self.rollout)
        if self.runtime == "ray":
            import ray

            from toolgym.rl.controller_ray import RayLink

            if not ray.is_initialized():
                ray.init(num_cpus=max(os.cpu_count() or 1, self.n_controllers), include_dashboard=False,
                         log_to_driver=False)
                self.owns_ray = True
            make: Callable[[int], Link] = lambda cid: RayLink(cid, args, self.events)
        else:
            from toolgym.rl import controller_process

            context = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":  # each controller forks with toolgym already imported
                context.set_forkserver_preload([controller_process.__name__])
            make = lambda cid: controller_process.ProcessLink(cid, context, args, self.events)
        for cid in range(self.n_controllers):
            self.links[cid] = make(cid)
            self.inflight[cid] = {}
        waiting = set(self.links)
        deadline = time.monotonic() + self.start_timeout
        while waiting:
            try:
                cid, kind, payload = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                self.close()
                raise ControllerDied(f"rollout controllers {sorted(waiting)} did not start within "
                                     f"{self.start_timeout:.0f}s") from None
            if kind != "ready":
                self.close()
                raise ControllerDied(f"rollout controller {cid} failed while starting: {payload}")
            waiting.discard(cid)
        if self.weights is not None:
            self.set_weights(*self.weights)

    def close(self) -> None:
        """Stop every controller (their groups in flight stay pending, as after an interruption)."""
        for link in self.links.values():
            link.close()
        self.links.clear()
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False

    def kill(self, cid: int) -> None:
        """Kill controller `cid` abruptly (SIGKILL for a process); the manager notices and regenerates its groups."""
        self.links[cid].kill()

    # ---- scheduling ------------------------------------------------------------------------------------------------

    def _assign(self, gid: int, tid: str) -> None:
        cid = min(self.links, key=lambda c: len(self.inflight[c]))
        self.inflight[cid][gid] = tid
        self.links[cid].assign(gid, tid, self.noise.levels if self.noise is not None else None, self.step())

    def _top_up(self) -> None:
        """Keep each live controller at its share of `inflight_groups` (the share of a dead one is not passed on)."""
        share = math.ceil(self.cfg.inflight_groups / self.n_controllers)
        while self.links and min(len(self.inflight[c]) for c in self.links) < share:
            self._assign(*self.issue())

    def _handle_events(self, timeout: float) -> None:
        """Wait up to `timeout` for an event, then handle it and every other one already queued."""
        try:
            events = [self.events.get(timeout=timeout)]
        except queue_module.Empty:
            return
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue_module.Empty:
                break
        for cid, kind, payload in events:
            if kind == "group":
                gid, group = payload
                if self.inflight.get(cid, {}).pop(gid, None) is not None:
                    self.delivered_by[gid] = cid
                    self.deliver(gid, group)
            elif kind == "version":
                self.controller_versions[cid] = payload[1]
            elif kind == "error":
                gid, text = payload
                self.error = RuntimeError(f"rollout controller {cid} failed on group g{gid}:\n{text}")
            elif kind == "dead" and cid in self.links:
                self._lost(cid)

    def _lost(self, cid: int) -> None:
        """Controller `cid` died: re-issue its groups in flight (same ids, so the same seeds) to the others."""
        self.links.pop(cid).close()
        orphans = sorted(self.inflight.pop(cid).items())
        with self.lock:
            for gid, _ in orphans:
                self.pending.pop(gid, None)
            self.redo.extendleft(reversed(orphans))
            self.regenerated.extend(orphans)
        if not self.links:
            self.error = ControllerDied("every rollout controller died")

    def run(self, stop: threading.Event) -> None:
        """Stream groups into the queue until `stop` is set (call from a dedicated thread)."""
        try:
            self.start()
        except ControllerDied as exc:
            self.error = exc
            return
        try:
            while not stop.is_set() and self.error is None:
                self._top_up()
                self._handle_events(0.05)
        except Exception as exc:  # reported to the trainer loop, which raises it, as RolloutManager.run does
            self.error = exc

    def generate(self, n_groups: int) -> list[SampleGroup]:
        """The synchronous baseline: `n_groups` groups across the controllers, waiting for all of them (they go to
        the queue; the returned list is empty, as with the Ray runtime)."""
        self.start()
        wanted = []
        for _ in range(n_groups):
            gid, tid = self.issue()
            self._assign(gid, tid)
            wanted.append(gid)
        while any(gid not in self.delivered_by for gid in wanted):
            if self.error is not None:
                raise self.error
            self._handle_events(0.05)
            while self.redo and self.links:
                self._assign(*self.issue())
        return []


class ControllerTrainingRun(TrainingRun):
    """TrainingRun with its rollouts in `cfg.controllers` RolloutControllers (Ray actors if `cfg.runtime` is ray);
    the trainer's weights reach them through `run.policy.set_weights`, as with the other runtimes."""

    def __init__(self, cfg: RLConfig, tasks: Sequence[Task], policy_factory: Callable[[], Policy],
                 trainer: TrainerLike, show_progress: bool = True, start_method: str = "forkserver"):
        if cfg.controllers < 1:
            raise ValueError("ControllerTrainingRun needs cfg.controllers >= 1")
        self.policy_factory = policy_factory
        self.start_method = start_method
        super().__init__(cfg, tasks, None, trainer, show_progress)  # type: ignore[arg-type]
        self.policy = SyncedPolicy(self.manager)  # publishing weights broadcasts them to the controllers

    def _make_manager(self, tasks: Sequence[Task]) -> ControllerManager:
        return ControllerManager(tasks, None, None, self.cfg.manager, self.cfg.rollout, self.tracker, self.curriculum,
                                 self.noise, step=lambda: self.state.step, policy_factory=self.policy_factory,
                                 controllers=self.cfg.controllers, runtime=self.cfg.runtime,
                                 start_method=self.start_method)

    def run(self, resume: bool = False, stop_after: int | None = None,
            on_step: Callable[[int], None] | None = None) -> RunSummary:
        """TrainingRun.run, counting the groups regenerated after a controller died; the controllers are stopped
        afterwards."""
        try:
            summary = super().run(resume=resume, stop_after=stop_after, on_step=on_step)
        finally:
            self.manager.close()
        return summary.model_copy(update={"regenerated_groups": len(self.manager.regenerated)})
