"""The demo's knobs, kept apart from the pipeline so `toolgym demo --help` shows them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolgym.device import checked_device
from toolgym.domains import builtin_names


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    seed: int = 0
    envs_per_domain: int = 48
    train_domains: tuple[str, ...] = ("airline", "bank", "food_delivery")
    tasks_per_env: int = 6
    heldout_envs: int = 12
    max_chain: int = 2
    max_chars: int = 3000
    vocab_size: int = 4000
    hidden_size: int = 128
    layers: int = 4
    sft_epochs: int = 6
    sft_batch: int = 4
    sft_lr: float = 4e-3
    sft_context_weight: float = 0.25
    rl_steps: int = 16
    rl_lr: float = 5e-5
    rl_max_wait: float = 120.0
    groups_per_step: int = 4
    group_size: int = 4
    eval_k: int = 2
    heavy_k: int = 4
    max_turns: int = 4
    max_new_tokens: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        """Reject a configuration the pipeline cannot run before any minute is spent on it."""
        unknown = sorted(set(self.train_domains) - set(builtin_names()))
        if not self.train_domains or unknown:
            raise ValueError(f"train_domains must name built-in domains ({', '.join(builtin_names())}); "
                             f"got {', '.join(unknown) or 'none'}")
        if not 0 < self.heldout_envs < self.envs_per_domain:
            raise ValueError(f"heldout_envs must be at least 1 and below envs_per_domain ({self.envs_per_domain}) so "
                             f"both held-out and training environments exist; got {self.heldout_envs}")
        counts = ("tasks_per_env", "layers", "sft_epochs", "sft_batch", "rl_steps", "groups_per_step", "eval_k",
                  "heavy_k", "max_turns", "max_new_tokens")
        below = [f"{name}={getattr(self, name)}" for name in counts if getattr(self, name) < 1]
        if below:
            raise ValueError(f"must be at least 1: {', '.join(below)}")
        checked_device(self.device)
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (GSPO compares rollouts of one task); got {self.group_size}")
