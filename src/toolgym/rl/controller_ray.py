"""Rollout controllers as Ray actors (`runtime: ray`): the actor, and the manager's `RayLink` to it."""

from __future__ import annotations

import os
import queue as queue_module
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

from toolgym.agent.rollout import RolloutConfig
from toolgym.policy.base import Policy
from toolgym.rl.controller import RolloutController
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.tasks.model import Task


@ray.remote(num_cpus=1, max_concurrency=100_000)
class RayController:
    """A RolloutController in a Ray actor; `play` calls run concurrently on the actor's event loop."""

    def __init__(self, cid: int, tasks: Sequence[Task], policy_factory: Callable[[], Policy], cfg: ManagerConfig,
                 rollout: RolloutConfig):
        self.controller = RolloutController(cid, tasks, policy_factory, cfg, rollout)
        self.controller.warm()

    async def ready(self) -> int:
        """The actor's process id, once it has warmed up."""
        return os.getpid()

    async def play(self, gid: int, tid: str, noise_levels: dict[str, float] | None, step: int) -> SampleGroup:
        """RolloutController.play."""
        return await self.controller.play(gid, tid, noise_levels, step)

    async def set_weights(self, state_dict: dict[str, Any], version: int) -> int:
        """Load weights on the actor's loop without yielding, so plays submitted afterwards see them."""
        self.controller.set_weights(state_dict, version)
        return version


class RayLink:
    """A controller as a Ray actor; a poller thread waits on its calls and turns their results into events, and a
    call that fails because the actor died reports `dead`."""

    def __init__(self, cid: int, args: tuple, events: queue_module.Queue):
        self.cid = cid
        self.events = events
        self.actor = RayController.remote(cid, *args)
        self.calls: dict[Any, tuple[str, int | None]] = {self.actor.ready.remote(): ("ready", None)}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._poll, daemon=True, name=f"controller-{cid}-poller").start()

    def _poll(self) -> None:
        while not self.closed.is_set():
            with self.lock:
                refs = list(self.calls)
            if not refs:
                time.sleep(0.01)
                continue
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0.05)
            for ref in done:
                with self.lock:
                    kind, gid = self.calls.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self.events.put((self.cid, "dead", repr(exc)))
                    return
                except ray.exceptions.RayTaskError as exc:
                    self.events.put((self.cid, "error", (gid, str(exc))))
                    continue
                self.events.put((self.cid, kind, (gid, value)))

    def _call(self, kind: str, gid: int | None, ref: Any) -> None:
        with self.lock:
            self.calls[ref] = (kind, gid)

    def assign(self, gid: int, tid: str, noise_levels: dict[str, float] | None, step: int) -> None:
        """Have the actor play group `gid` of task `tid`."""
        self._call("group", gid, self.actor.play.remote(gid, tid, noise_levels, step))

    def publish(self, state_dict: dict[str, Any], version: int) -> None:
        """Send new weights through the object store."""
        self._call("version", None, self.actor.set_weights.remote(ray.put(state_dict), version))

    def kill(self) -> None:
        """Kill the actor."""
        ray.kill(self.actor)

    def close(self) -> None:
        """Stop polling and remove the actor."""
        self.closed.set()
        ray.kill(self.actor)
