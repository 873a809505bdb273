"""Noise curriculum: raise the instruction and tool noise levels once the policy is robust at the current ones,
i.e. once its noisy score has caught up with its clean score."""

from __future__ import annotations

from pydantic import BaseModel, Field


class NoiseCurriculum(BaseModel):
    """Noise levels that step up when clean - noisy < gap_threshold, after `min_episodes` evaluations at a level."""

    levels: dict[str, float] = Field(default_factory=lambda: {"instruction": 0.0, "tool": 0.0})
    step: float = Field(0.1, gt=0.0)
    gap_threshold: float = 0.05
    max_level: float = Field(1.0, ge=0.0, le=1.0)
    min_episodes: int = Field(1, ge=1)
    episodes_at_level: int = 0
    history: list[tuple[float, float, dict[str, float]]] = Field(default_factory=list)

    def update(self, clean_score: float, noisy_score: float) -> dict[str, float]:
        """Record one evaluation (scores at the current levels) and return the levels to use next."""
        self.history.append((clean_score, noisy_score, dict(self.levels)))
        self.episodes_at_level += 1
        if clean_score - noisy_score < self.gap_threshold and self.episodes_at_level >= self.min_episodes:
            raised = {k: round(min(self.max_level, v + self.step), 6) for k, v in self.levels.items()}
            if raised != self.levels:
                self.levels = raised
                self.episodes_at_level = 0
        return dict(self.levels)
