"""The demo's knobs, kept apart from the pipeline so `toolgym demo --help` shows them without importing torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolgym.device import Device
from toolgym.domains import builtin_names


class DemoConfig(BaseModel):
    """Every setting of `make demo`; a configuration the pipeline cannot run is rejected before any work starts."""

    model_config = ConfigDict(frozen=True)

    out: Path = Path("runs/demo")
    seed: int = 0
    envs_per_domain: int = 48
    train_domains: tuple[str, ...] = Field(("airline", "bank", "food_delivery"), min_length=1)
    tasks_per_env: int = Field(6, ge=1)
    heldout_envs: int = 12
    max_chain: int = Field(2, ge=1)
    max_chars: int = 3000
    vocab_size: int = 4000
    hidden_size: int = 128
    layers: int = Field(4, ge=1)
    sft_epochs: int = Field(3, ge=1)
    sft_batch: int = Field(4, ge=1)
    sft_lr: float = 4e-3
    sft_context_weight: float = 0.25
    rl_steps: int = Field(12, ge=1)
    rl_lr: float = 5e-5
    rl_progress_reward: float = Field(0.3, ge=0.0, lt=0.5)
    """Reward per unit of gold-chain progress for a failed RL episode: a freshly SFT-ed tiny model rarely passes, and
    groups of equal zero rewards teach nothing. Evaluation rewards stay pass/fail."""
    rl_max_wait: float = 120.0
    groups_per_step: int = Field(4, ge=1)
    group_size: int = Field(4, ge=2)
    """Rollouts per task: GSPO's advantage compares rollouts of one task, so a group needs at least two."""
    eval_k: int = Field(2, ge=1)
    heavy_k: int = Field(4, ge=1)
    max_turns: int = Field(4, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    device: Device = "cpu"

    @field_validator("train_domains")
    @classmethod
    def _builtin(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(builtin_names()))
        if unknown:
            raise ValueError(f"train_domains must name built-in domains ({', '.join(builtin_names())}); "
                             f"got {', '.join(unknown)}")
        return names

    @model_validator(mode="after")
    def _both_splits(self) -> DemoConfig:
        if not 0 < self.heldout_envs < self.envs_per_domain:
            raise ValueError(f"heldout_envs must be at least 1 and below envs_per_domain ({self.envs_per_domain}) so "
                             f"both held-out and training environments exist; got {self.heldout_envs}")
        return self
