"""The sample queue between rollout producers and the trainer: drops groups without learning signal, never hands
out a group staler than the bound (trainer version minus the oldest policy version of any of its tokens), and
mixes domains by oversampling ratios.

Ordering: within a domain groups leave in arrival order. Without `oversample` the queue is strictly FIFO across
domains; with it, each pick draws one domain among the per-domain oldest groups (the heads), weighted by its ratio
(1.0 when unlisted), with a seeded rng, so the sequence is a function of seed and call order only.

Loss accounting: every put group ends up exactly once as dropped_no_signal, dropped_stale, handed_out, or still
queued (`depth`). A full queue evicts its oldest group on put ("stale by capacity"); it counts as dropped_stale and
goes to `on_stale` like any group that outlived the staleness bound, so a manager can regenerate it. `on_stale`
runs outside the lock, so it may call back into the queue. `close()` only affects getters: puts still queue, so
`state_dict()` after `close()` captures everything pending."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from toolgym.agent.trajectory import Trajectory


class SampleGroup(BaseModel):
    """All rollouts of one task under one prompt: the unit of group-relative advantage, so the unit of queueing."""

    group_id: str
    task_id: str
    domain: str
    trajectories: list[Trajectory]
    created_step: int = 0
    kind: Literal["task", "verify"] = "task"
    """"task": rollouts of the task itself; "verify": the policy's judgments of such rollouts (rl.self_verify)."""

    @property
    def rewards(self) -> list[float]:
        """Per-trajectory rewards, in order."""
        return [t.reward for t in self.trajectories]

    @property
    def min_version(self) -> int:
        """Oldest policy version behind any token of the group; the group's staleness is measured from it."""
        return min((t.min_version for t in self.trajectories), default=0)

    @property
    def has_signal(self) -> bool:
        """False when all rewards are equal: every advantage would be zero, so the group cannot teach anything."""
        return len(set(self.rewards)) > 1


class QueueStats(BaseModel):
    """Counters of a SampleQueue; put == accepted + dropped_no_signal, accepted == handed_out + dropped_stale + depth."""

    put: int = 0
    accepted: int = 0
    dropped_no_signal: int = 0
    dropped_stale: int = 0
    handed_out: int = 0
    depth: int = 0
    per_domain_handed_out: dict[str, int] = Field(default_factory=dict)
    staleness_histogram: dict[int, int] = Field(default_factory=dict)


class SampleQueue:
    """Thread-safe, staleness-bounded queue of SampleGroups with per-domain oversampling (see the module docstring)."""

    def __init__(self, max_staleness: int = 2, capacity: int = 1024, oversample: dict[str, float] | None = None,
                 seed: int = 0, on_stale: Callable[[SampleGroup], None] | None = None) -> None:
        if max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if oversample and any(w <= 0 for w in oversample.values()):
            raise ValueError("oversample ratios must be > 0")
        self.max_staleness = max_staleness
        self.capacity = capacity
        self.oversample = dict(oversample or {})
        self.on_stale = on_stale
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._closed = False
        self._domains: dict[str, deque[tuple[int, SampleGroup]]] = {}
        self._size = 0
        self._next_seq = 0
        self._stats = QueueStats()

    # ---- producers -------------------------------------------------------------------------------------------------

    def put(self, group: SampleGroup) -> bool:
        """Queue a group; False when it was dropped for having no signal. May evict the oldest group when full."""
        evicted: SampleGroup | None = None
        with self._cond:
            self._stats.put += 1
            if not group.has_signal:
                self._stats.dropped_no_signal += 1
                return False
            self._stats.accepted += 1
            if self._size >= self.capacity:
                evicted = self._pop(self._oldest_domain())
                self._stats.dropped_stale += 1
            self._domains.setdefault(group.domain, deque()).append((self._next_seq, group))
            self._next_seq += 1
            self._size += 1
            self._cond.notify_all()
        if evicted is not None:
            self._report_stale([evicted])
        return True

    # ---- trainer ---------------------------------------------------------------------------------------------------

    def get(self, trainer_version: int, n: int, timeout: float | None = None) -> list[SampleGroup]:
        """Up to n usable groups, waiting (up to `timeout`, None = forever) for at least one; [] on timeout or close.
        Groups beyond the staleness bound are removed on the way and reported to `on_stale`."""
        if n < 1:
            raise ValueError("n must be >= 1")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        stale: list[SampleGroup] = []
        out: list[SampleGroup] = []
        with self._cond:
            while not self._closed:
                stale += self._purge(trainer_version)
                if self._size:
                    out = [self._hand_out(trainer_version) for _ in range(min(n, self._size))]
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
        self._report_stale(stale)
        return out

    def drain_stale(self, trainer_version: int) -> int:
        """Remove (and report to `on_stale`) every queued group beyond the staleness bound; returns how many."""
        with self._cond:
            stale = self._purge(trainer_version)
        self._report_stale(stale)
        return len(stale)

    def close(self) -> None:
        """Wake every blocked getter; from now on get() returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return self._size

    def stats(self) -> QueueStats:
        """A snapshot of the counters."""
        with self._cond:
            return self._stats.model_copy(update={"depth": self._size}, deep=True)

    # ---- checkpointing ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-serializable pending groups (arrival order), counters and rng state, for exact resumption."""
        with self._cond:
            pending = sorted((item for q in self._domains.values() for item in q), key=lambda item: item[0])
            version, internal, gauss = self._rng.getstate()
            return {
                "pending": [g.model_dump(mode="json") for _, g in pending],
                "stats": self._stats.model_dump(mode="json"),
                "rng": [version, list(internal), gauss],
            }

    def load_state_dict(self, state: dict) -> None:
        """Replace contents, counters and rng state with those of `state_dict()` output."""
        groups = [SampleGroup.model_validate(g) for g in state["pending"]]
        version, internal, gauss = state["rng"]
        with self._cond:
            self._domains = {}
            for seq, group in enumerate(groups):
                self._domains.setdefault(group.domain, deque()).append((seq, group))
            self._size = self._next_seq = len(groups)
            self._stats = QueueStats.model_validate(state["stats"])
            self._rng.setstate((version, tuple(internal), gauss))
            self._cond.notify_all()

    # ---- internals (call with the lock held, except _report_stale) --------------------------------------------------

    def _is_stale(self, group: SampleGroup, trainer_version: int) -> bool:
        return trainer_version - group.min_version > self.max_staleness

    def _purge(self, trainer_version: int) -> list[SampleGroup]:
        stale: list[SampleGroup] = []
        for domain, q in list(self._domains.items()):
            fresh: deque[tuple[int, SampleGroup]] = deque()
            for item in q:
                if self._is_stale(item[1], trainer_version):
                    stale.append(item[1])
                else:
                    fresh.append(item)
            if fresh:
                self._domains[domain] = fresh
            else:
                del self._domains[domain]
        self._size -= len(stale)
        self._stats.dropped_stale += len(stale)
        return stale

    def _oldest_domain(self) -> str:
        return min(self._domains, key=lambda d: self._domains[d][0][0])

    def _next_domain(self) -> str:
        if not self.oversample:
            return self._oldest_domain()
        heads = sorted(self._domains, key=lambda d: self._domains[d][0][0])
        return self._rng.choices(heads, weights=[self.oversample.get(d, 1.0) for d in heads])[0]

    def _pop(self, domain: str) -> SampleGroup:
        q = self._domains[domain]
        _, group = q.popleft()
        if not q:
            del self._domains[domain]
        self._size -= 1
        return group

    def _hand_out(self, trainer_version: int) -> SampleGroup:
        group = self._pop(self._next_domain())
        s = self._stats
        s.handed_out += 1
        s.per_domain_handed_out[group.domain] = s.per_domain_handed_out.get(group.domain, 0) + 1
        staleness = trainer_version - group.min_version
        s.staleness_histogram[staleness] = s.staleness_histogram.get(staleness, 0) + 1
        return group

    def _report_stale(self, groups: list[SampleGroup]) -> None:
        if self.on_stale is not None:
            for group in groups:
                self.on_stale(group)
