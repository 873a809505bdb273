"""A warm pool of sandboxes: a background thread starts sandboxes ahead of demand, so `acquire()` hands out one that
is already running instead of paying bubblewrap's and the interpreter's start-up; released sandboxes are reset and
recycled (up to `max_uses` episodes each). `acquire(fresh=True)` only ever returns a never-used sandbox (what
verification asks for); an empty pool falls back to a cold start, never to running anything unsandboxed.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import deque
from dataclasses import dataclass

from toolgym.code.sandbox import Sandbox, SandboxError, SandboxLimits, SandboxUnavailable


@dataclass
class PoolStats:
    """How acquisitions were served: from the warm pool, or by a cold start."""

    warm: int = 0
    cold: int = 0
    recycled: int = 0
    failed_starts: int = 0


class SandboxPool:
    """Keeps `size` ready sandboxes, started asynchronously by a provisioning thread, and recycles released ones."""

    def __init__(self, size: int = 4, limits: SandboxLimits | None = None, max_uses: int = 16):
        self.size, self.limits, self.max_uses = size, limits or SandboxLimits(), max_uses
        self.stats = PoolStats()
        self._fresh: deque[Sandbox] = deque()
        self._recycled: deque[Sandbox] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._provision, name="toolgym-sandbox-pool", daemon=True)
        self._thread.start()

    def _provision(self) -> None:
        """Top the pool up whenever it runs short; stops when the pool closes or no sandbox can be made here."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._fresh) + len(self._recycled) < self.size)
                if self._closed:
                    return
                missing = self.size - len(self._fresh) - len(self._recycled)
            try:
                started = [Sandbox.launch(self.limits) for _ in range(missing)]
            except SandboxUnavailable:
                return
            for sandbox in started:
                try:
                    sandbox.wait_ready()
                except (SandboxError, SandboxUnavailable):
                    self.stats.failed_starts += 1
                    continue
                with self._cond:
                    if self._closed:
                        sandbox.close()
                    else:
                        self._fresh.append(sandbox)
                        self._cond.notify_all()

    def wait_warm(self, timeout: float = 60.0) -> bool:
        """Block until the pool holds `size` ready sandboxes (benchmarks and tests use it)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._fresh) + len(self._recycled) >= self.size, timeout)

    def acquire(self, fresh: bool = False) -> Sandbox:
        """A ready sandbox: a recycled or fresh one from the pool, else one started now (cold)."""
        with self._cond:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            source = self._fresh if fresh or not self._recycled else self._recycled
            sandbox = source.popleft() if source else None
            self._cond.notify_all()
        if sandbox is not None and sandbox.alive:
            self.stats.warm += 1
        else:
            self.stats.cold += 1
            sandbox = Sandbox.start(self.limits)
        sandbox.uses += 1
        return sandbox

    def release(self, sandbox: Sandbox) -> None:
        """Return a sandbox after an episode: reset and kept for reuse while it is healthy and not worn out."""
        if self._closed or not sandbox.alive or sandbox.uses >= self.max_uses:
            sandbox.close()
            return
        try:
            sandbox.reset()
        except SandboxError:
            sandbox.close()
            return
        with self._cond:
            if len(self._fresh) + len(self._recycled) >= self.size:
                sandbox.close()
                return
            self._recycled.append(sandbox)
            self.stats.recycled += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop provisioning and every idle sandbox (sandboxes in use are closed by their holders)."""
        with self._cond:
            self._closed = True
            idle = [*self._fresh, *self._recycled]
            self._fresh.clear()
            self._recycled.clear()
            self._cond.notify_all()
        for sandbox in idle:
            sandbox.close()


_DEFAULT: SandboxPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool code environments draw from (`TOOLGYM_SANDBOX_WARM` warm sandboxes, default 4)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = SandboxPool(size=int(os.environ.get("TOOLGYM_SANDBOX_WARM", "4")))
            atexit.register(_DEFAULT.close)
        return _DEFAULT
