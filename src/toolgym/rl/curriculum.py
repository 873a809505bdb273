"""Task curriculum on two axes: capability (stages capping chain length and number of writes, advanced when the
policy masters the current stage) and difficulty (prefer tasks whose running pass rate sits inside a band, where
group advantages are non-zero). Serialisable with pydantic so a training run can resume it."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, model_validator

from toolgym.rl.budget import PassRateTracker
from toolgym.tasks.model import Task


class StageUpdate(BaseModel):
    """One `TaskCurriculum.update` call: the stage it was made in, the pass rate reported, and whether it advanced."""

    stage: int
    mean_pass_rate: float
    advanced: bool


class TaskCurriculum(BaseModel):
    """Which tasks to train on now; `stages` are (max chain_length, max n_writes), easiest first."""

    stages: list[tuple[int, int]] = [(3, 1), (5, 2), (8, 3), (99, 99)]
    band: tuple[float, float] = (0.1, 0.9)
    advance_threshold: float = 0.6
    stage: int = 0
    history: list[StageUpdate] = []

    @model_validator(mode="after")
    def _check(self) -> TaskCurriculum:
        """Reject configurations that would silently select nothing or index past the stage list."""
        if not self.stages:
            raise ValueError("stages must not be empty")
        if not 0 <= self.stage < len(self.stages):
            raise ValueError(f"stage {self.stage} outside 0..{len(self.stages) - 1}")
        if not 0.0 <= self.band[0] <= self.band[1] <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {self.band}")
        return self

    def in_stage(self, task: Task) -> bool:
        """Whether `task` is within the current capability stage (cumulative: easier stages stay included)."""
        max_chain, max_writes = self.stages[self.stage]
        return task.difficulty.chain_length <= max_chain and task.difficulty.n_writes <= max_writes

    def eligible(self, tasks: Sequence[Task], tracker: PassRateTracker) -> list[Task]:
        """Tasks of the current stage whose pass rate is in the band (tasks with fewer than `tracker.min_trials`
        trials always count as in band); falls back to the whole stage, then to all tasks, never empty."""
        low, high = self.band
        staged = [t for t in tasks if self.in_stage(t)]
        banded = [t for t in staged
                  if tracker.trials(t.id) < tracker.min_trials or low <= tracker.pass_rate(t.id) <= high]
        return banded or staged or list(tasks)

    def update(self, mean_pass_rate: float) -> bool:
        """Report the mean pass rate over the current stage; advance one stage if it reaches `advance_threshold`
        (never past the last). Returns whether it advanced."""
        advanced = mean_pass_rate >= self.advance_threshold and self.stage < len(self.stages) - 1
        self.history.append(StageUpdate(stage=self.stage, mean_pass_rate=mean_pass_rate, advanced=advanced))
        if advanced:
            self.stage += 1
        return advanced
