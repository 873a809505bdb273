"""The `toolgym train CONFIG.yaml` configuration: one typed file for model, tasks, runtime and every component."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from toolgym.agent.rollout import RolloutConfig
from toolgym.device import Device
from toolgym.policy.constrained import ConstraintMode
from toolgym.policy.precision import Precision
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.self_verify import SelfVerification
from toolgym.validation import problems


class TrainerConfig(BaseModel):
    """Policy-update settings (GSPO clip range e_l/e_h per the report; GRPO's symmetric eps)."""

    algorithm: str = "gspo"
    lr: float = 1e-5
    eps_low: float = 3e-4
    eps_high: float = 4e-4
    grpo_eps: float = 0.2
    micro_batch: int = 8
    """At most this many rows per forward/backward; gradients are accumulated into one step."""
    micro_batch_tokens: int = Field(4096, ge=1)
    """At most this many padded positions per forward/backward (rows grouped longest first): bounds activation
    memory, about 1 MB a position for SmolLM2-135M."""
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    device: Device = "cpu"
    """Torch device of the trained model, and of the transformers rollout policy `toolgym train` builds; published
    weights keep the device, a policy elsewhere copies them to its own."""
    precision: Precision = "auto"
    """bf16 autocast per forward where the device has bf16 arithmetic (auto), always (bf16) or never (fp32); the
    master weights and optimizer stay fp32 either way."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory for long episodes, about a third more time."""
    old_logprobs: Literal["auto", "rollout", "recompute"] = "auto"
    """pi_old of the clipped ratio: the sampler's own logprobs (rollout), or this model's, recomputed before the step
    in the trainer's numerics, with the sampler's drift corrected by a capped per-sequence weight (recompute; what
    verl and AReaL do). auto recomputes under bf16, where a sampler's cached decoding and a full forward give
    sequence-mean log ratios of 0.002-0.008 on SmolLM2 (fp32: below 1e-5), ten to twenty-five times GSPO's clip
    range, so "rollout" would clip most sequences."""
    behaviour_cap: float = Field(2.0, ge=1.0)
    """Upper bound of the behaviour correction exp(mean log(pi_prox / pi_behaviour)) per sequence (recompute)."""


class NoiseSettings(BaseModel):
    enabled: bool = False
    instruction: float = 0.0
    tool: float = 0.0
    step: float = 0.1
    gap_threshold: float = 0.05


class VLLMServerSettings(BaseModel):
    """How `engine: vllm-server` starts vLLM's OpenAI-compatible server (policy.vllm_server.VLLMServer)."""

    model_config = {"extra": "forbid"}

    python: str | None = None
    """The python of vLLM's own environment; default $TOOLGYM_VLLM_PYTHON, else .venv-vllm/bin/python."""
    memory_fraction: float = Field(0.05, gt=0, le=1)
    """vLLM's --gpu-memory-utilization: on the CPU build, the share of RAM reserved for the KV cache."""
    startup_timeout: float = Field(300.0, gt=0)


class RLConfig(BaseModel):
    """Everything a training run needs; unknown keys are errors so typos do not pass silently."""

    model_config = {"extra": "forbid"}

    model: str
    tasks: str
    out: str = "runs/rl"
    mode: Literal["async", "sync"] = "async"
    runtime: Literal["local", "ray"] = "local"
    controllers: int = Field(0, ge=0)
    """Rollout controllers in their own processes (Ray actors with `runtime: ray`), each running its share of the
    episodes while a light manager keeps budget, curriculum, staleness and queue; 0 runs rollouts in the manager."""
    engine: Literal["hf", "vllm", "vllm-server"] = "hf"
    """Rollout engine: transformers in process, vLLM in process (GPU), or a vLLM server in its own environment."""
    vllm_server: VLLMServerSettings = Field(default_factory=VLLMServerSettings)
    constrain: ConstraintMode = "schema"
    """Tool-call decoding of the transformers rollout policy (policy.constrained): schema, copy or none."""
    steps: int = 20
    groups_per_step: int = 4
    max_staleness: int = 2
    checkpoint_every: int = 5
    max_wait_seconds: float = 600.0
    oversample: dict[str, float] = Field(default_factory=dict)
    curriculum: bool = True
    noise: NoiseSettings = Field(default_factory=NoiseSettings)
    manager: ManagerConfig = Field(default_factory=ManagerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    self_verify: SelfVerification = Field(default_factory=SelfVerification)
    """Self-verification as an auxiliary task (rl.self_verify): the share of task groups the policy also judges."""
    seed: int = 0

    @model_validator(mode="after")
    def _one_server_client(self) -> RLConfig:
        """A vLLM server gets one client, the manager's, so that every weight swap is seen by every request."""
        if self.engine == "vllm-server" and (self.controllers or self.runtime != "local"):
            raise ValueError("engine vllm-server runs with runtime local and controllers 0 (one client publishes "
                             "weights to the server)")
        return self

    @model_validator(mode="after")
    def _self_verify_local(self) -> RLConfig:
        """Judgments are played by the manager's group player, which only the in-process runtime runs."""
        if self.self_verify.ratio > 0 and (self.controllers or self.runtime != "local"):
            raise ValueError("self_verify runs with runtime local and controllers 0")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> RLConfig:
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except ValidationError as exc:
            listed = "\n".join(f"  - {problem}" for problem in problems(exc))
            raise ValueError(f"{path}: invalid training config\n{listed}") from None
