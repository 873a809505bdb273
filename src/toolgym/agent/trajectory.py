"""Trajectory records: everything one episode produced, ready for training (token segments) and for reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from toolgym.envs.environment import ToolCall


class TokenSegment(BaseModel):
    """One contiguous token sequence the model saw. `loss_mask` is 1 exactly on tokens the policy sampled;
    `logprobs` and `versions` are per token (0.0 and -1 on tokens the policy did not sample)."""

    token_ids: list[int] = Field(default_factory=list)
    loss_mask: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    versions: list[int] = Field(default_factory=list)

    def extend(self, ids: list[int], trainable: bool, logprobs: list[float] | None = None, version: int = -1) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([1 if trainable else 0] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        self.versions.extend([version if trainable else -1] * len(ids))

    @property
    def sampled_ids(self) -> list[int]:
        return [t for t, m in zip(self.token_ids, self.loss_mask) if m]


class ContextEvent(BaseModel):
    """A context-management event: older tool results summarized, or a discard-all reset."""

    kind: Literal["summary", "reset"]
    turn: int
    tokens_before: int
    tokens_after: int


class TurnRecord(BaseModel):
    """One model turn: which weights produced it, how long, and what it did."""

    index: int
    version: int
    n_tokens: int
    finish_reason: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    parse_error: str | None = None


class Trajectory(BaseModel):
    """One episode of one task."""

    task_id: str
    domain: str
    trial: int = 0
    messages: list[dict[str, Any]] = Field(default_factory=list)
    segments: list[TokenSegment] = Field(default_factory=list)
    turns: list[TurnRecord] = Field(default_factory=list)
    events: list[ContextEvent] = Field(default_factory=list)
    final_answer: str = ""
    reward: float = 0.0
    passed: bool = False
    progress: float = 0.0
    """Share of the task's gold chain this episode's calls reproduced (tasks.progress), 1.0 for the gold path."""
    verdict: str = ""
    n_tool_calls: int = 0
    noise: dict[str, float] = Field(default_factory=dict)
    termination: Literal["answer", "max_turns", "max_tokens", "error"] = "answer"
    error: str | None = None

    @property
    def n_turns(self) -> int:
        return len(self.turns)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments)

    @property
    def min_version(self) -> int:
        """Oldest policy version that produced any token of this trajectory (for staleness)."""
        return min((t.version for t in self.turns), default=0)
