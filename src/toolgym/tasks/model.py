"""Task records: what the user asks, who the user is, the gold chain, and what verifies success."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from toolgym.envs.environment import EnvironmentRecord, ToolCall
from toolgym.envs.state import RowChange


class UserProfile(BaseModel):
    """The simulated user: facts stated up front (`known`) and facts given only when asked (`on_request`)."""

    name: str | None = None
    persona: str | None = None
    known: dict[str, Any] = {}
    on_request: dict[str, Any] = {}


class Difficulty(BaseModel):
    chain_length: int
    n_writes: int
    n_env_tools: int
    n_targets: int


class Task(BaseModel):
    """A verifiable task, made backwards from an executed chain in one environment."""

    id: str
    domain: str
    seed: int
    env: EnvironmentRecord
    instruction: str
    user: UserProfile
    gold_chain: list[ToolCall]
    expected_changes: list[RowChange]
    expected_state_hash: str
    required_answers: list[str]
    difficulty: Difficulty

    @property
    def domain_source(self) -> str:
        """What `load_domain` takes to find this task's domain: a custom domain's spec path, else the built-in name."""
        return self.env.spec or self.env.domain
