"""A stand-in trainer for benchmarks and tests of the RL plumbing: each step takes a fixed time (the GPU
update it simulates), records which groups it was given, bumps the version and publishes it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolgym.rl.queue import SampleGroup


class SimulatedTrainer:
    """Satisfies the runtime's trainer protocol without a model; `seen` holds (group id, version, group min version)."""

    def __init__(self, step_seconds: float = 0.0):
        self.step_seconds = step_seconds
        self.version = 0
        self.publish: Callable[[dict[str, Any], int], None] | None = None
        self.seen: list[tuple[str, int, int]] = []

    def step(self, groups: Sequence[SampleGroup]) -> dict[str, float]:
        self.seen += [(g.group_id, self.version, g.min_version) for g in groups]
        time.sleep(self.step_seconds)
        self.version += 1
        if self.publish is not None:
            self.publish({}, self.version)
        return {"loss": 0.0}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "state.json").write_text(json.dumps({"version": self.version, "seen": self.seen}))

    def load(self, path: Path) -> None:
        state = json.loads((path / "state.json").read_text())
        self.version, self.seen = state["version"], [tuple(x) for x in state["seen"]]
