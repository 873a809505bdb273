"""A bookkeeping trainer shared by the RL runtime tests: it records what it trains and bumps versions."""

from __future__ import annotations

import json
from pathlib import Path

from toolgym.rl.queue import SampleGroup


class BookkeepingTrainer:
    """Records (group id, trainer version, group min version) per trained group and publishes each new version."""

    def __init__(self) -> None:
        self.version = 0
        self.publish = None
        self.seen: list[tuple[str, int, int]] = []

    def step(self, groups: list[SampleGroup]) -> dict[str, float]:
        self.seen += [(g.group_id, self.version, g.min_version) for g in groups]
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
