"""The demo's knobs, kept apart from the pipeline so `toolgym demo --help` shows them without importing torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolgym.device import Device
from toolgym.domains import builtin_names
from toolgym.policy.constrained import ConstraintMode
from toolgym.assets import TINY_BASE


class DemoConfig(BaseModel):
    """Every setting of `make demo`; a configuration the pipeline cannot run is rejected before any work starts."""

    model_config = ConfigDict(frozen=True)

    out: Path = Path("runs/demo")
    seed: int = 0
    envs_per_domain: int = 48
    train_domains: tuple[str, ...] = Field(("airline", "bank", "food_delivery"), min_length=1)
    heldout_envs: int = 12
    basic_per_env: int = Field(6, ge=1)
    """Basic-tier (single-call) training tasks per training environment."""
    multi_per_env: int = Field(2, ge=0)
    """Multi-tier (lookup then call) training tasks per training environment."""
    heldout_basic_per_env: int = Field(4, ge=1)
    heldout_multi_per_env: int = Field(1, ge=0)
    side_eval_tasks: int = Field(54, ge=1)
    """Held-out basic tasks evaluated noisy and with free decoding (every held-out basic task is evaluated clean)."""
    train_eval_tasks: int = Field(20, ge=1)
    """Training tasks evaluated beside the held-out ones (the gap says how much is memorised)."""
    multi_eval_tasks: int = Field(12, ge=1)
    """Held-out multi-tier tasks evaluated (reported whatever they score)."""
    base: Path | None = TINY_BASE
    """Checkpoint SFT starts from: the shipped `toolgym pretrain --recipe tiny` output; None pretrains from scratch
    (the same recipe, about 70 minutes on 2 cores) into out/base first."""
    sft_steps: int = Field(90, ge=1)
    sft_batch: int = Field(8, ge=1)
    sft_lr: float = 1e-3
    sft_context_weight: float = 0.25
    sft_variants: int = Field(2, ge=1)
    constrain: ConstraintMode = "copy"
    """Tool-call decoding for rollouts and evaluation (policy.constrained); held-out basic tasks are also evaluated
    with free decoding ("none") so both are reported."""
    rl_steps: int = Field(6, ge=1)
    rl_lr: float = 5e-4
    rl_progress_reward: float = Field(0.2, ge=0.0, lt=0.5)
    """Reward per unit of gold-chain progress for a failed RL episode (0: pass/fail only)."""
    rl_max_wait: float = 120.0
    groups_per_step: int = Field(3, ge=1)
    group_size: int = Field(4, ge=2)
    """Rollouts per task: GSPO's advantage compares rollouts of one task, so a group needs at least two."""
    eval_k: int = Field(1, ge=1)
    heavy_k: int = Field(4, ge=1)
    heavy_tasks: int = Field(20, ge=1)
    """Held-out basic tasks of the single / self-consistency / heavy / best-of-K comparison (K+2 rollouts each)."""
    max_turns: int = Field(3, ge=1)
    max_new_tokens: int = Field(96, ge=1)
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
