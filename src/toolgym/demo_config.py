"""The demo's knobs, kept apart from the pipeline so `toolgym demo --help` shows them without importing torch."""

from __future__ import annotations

from pathlib import Path

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolgym.device import Device
from toolgym.domains import builtin_names
from toolgym.policy.constrained import ConstraintMode
from toolgym.policy.precision import Precision


DemoModel = Literal["smollm2", "tiny"]
"""The demo's policy: SmolLM2-135M-Instruct pulled from the package index (policy.pretrained), or the tiny model
toolgym ships (fast, but it cannot learn to read a tool result on a CPU)."""

PRESETS: dict[str, dict[str, Any]] = {
    "smollm2": {},
    "tiny": {"sft_steps": 90, "sft_batch": 8, "sft_lr": 1e-3, "sft_context_weight": 0.25, "sft_variants": 2,
             "rl_steps": 6, "rl_lr": 5e-4, "max_new_tokens": 96, "side_eval_tasks": 54, "multi_eval_tasks": 12,
             "heavy_tasks": 20, "heldout_basic_per_env": 4, "heldout_multi_per_env": 1, "train_eval_tasks": 20,
             "max_turns": 3},
}
"""Per model, the settings that differ from the field defaults (which are SmolLM2's); a setting given explicitly
always wins."""


class DemoConfig(BaseModel):
    """Every setting of `make demo`; a configuration the pipeline cannot run is rejected before any work starts."""

    model_config = ConfigDict(frozen=True)

    out: Path = Path("runs/demo")
    model: DemoModel = "smollm2"
    """The policy, and with it the defaults of every setting in PRESETS."""
    seed: int = 0
    envs_per_domain: int = 48
    train_domains: tuple[str, ...] = Field(("airline", "bank", "food_delivery"), min_length=1)
    heldout_envs: int = 12
    basic_per_env: int = Field(6, ge=1)
    """Basic-tier (single-call) training tasks per training environment."""
    multi_per_env: int = Field(2, ge=0)
    """Multi-tier (lookup then call) training tasks per training environment."""
    heldout_basic_per_env: int = Field(2, ge=1)
    heldout_multi_per_env: int = Field(3, ge=0)
    side_eval_tasks: int = Field(24, ge=1)
    """Held-out basic tasks evaluated noisy and with free decoding (every held-out basic task is evaluated clean)."""
    train_eval_tasks: int = Field(16, ge=1)
    """Training tasks evaluated beside the held-out ones (the gap says how much is memorised)."""
    multi_eval_tasks: int = Field(100, ge=1)
    """Held-out multi-tier tasks evaluated (reported whatever they score)."""
    base: Path | None = None
    """Checkpoint SFT starts from; None: the model's own (SmolLM2 pulled into the cache by `toolgym models pull`, or
    the shipped `toolgym pretrain --recipe tiny` output). The demo records the one it used here."""
    from_scratch: bool = False
    """Pretrain the tiny model's base with its recipe (about 70 minutes on 2 cores) into out/base first."""
    precision: Precision = "auto"
    """bf16 autocast per forward for SFT, RL and generation where the CPU or GPU has bf16 arithmetic (auto), always
    (bf16), or never (fp32)."""
    sft_steps: int = Field(40, ge=1)
    sft_batch: int = Field(4, ge=1)
    sft_lr: float = 2e-4
    sft_context_weight: float = 0.0
    sft_variants: int = Field(1, ge=1)
    constrain: ConstraintMode = "copy"
    """Tool-call decoding for rollouts and evaluation (policy.constrained); held-out basic tasks are also evaluated
    with free decoding ("none") so both are reported."""
    rl_steps: int = Field(6, ge=1)
    rl_lr: float = 2e-5
    rl_progress_reward: float = Field(0.2, ge=0.0, lt=0.5)
    """Reward per unit of gold-chain progress for a failed RL episode (0: pass/fail only)."""
    rl_max_wait: float = 120.0
    groups_per_step: int = Field(3, ge=1)
    group_size: int = Field(4, ge=2)
    """Rollouts per task: GSPO's advantage compares rollouts of one task, so a group needs at least two."""
    eval_k: int = Field(1, ge=1)
    heavy_k: int = Field(4, ge=1)
    heavy_tasks: int = Field(12, ge=1)
    """Held-out basic tasks of the single / self-consistency / heavy / best-of-K comparison (K+2 rollouts each)."""
    max_turns: int = Field(4, ge=1)
    max_new_tokens: int = Field(112, ge=1)
    device: Device = "cpu"

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Fill every setting not given from the chosen model's preset."""
        if not isinstance(data, dict):
            return data
        model = data.get("model", "smollm2")
        return {**PRESETS.get(model, {}), **data}

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
        if self.from_scratch and (self.model != "tiny" or self.base is not None):
            raise ValueError("from_scratch pretrains the tiny model's base: it needs model tiny and no base")
        return self
