"""Policy-gradient losses over masked token sequences: GSPO (sequence-level ratio, the report's choice) and GRPO
(token-level ratio, the baseline), plus group-normalised advantages.

Shapes: `logprobs`, `old_logprobs` and `mask` are [B, T]; `mask` is 1 on the model's own tokens and 0 on tool, user,
system and padding tokens; `advantages` is [B]. `old_logprobs` and `advantages` are treated as constants (detached).
Rows whose mask is empty contribute nothing and are left out of the mean over sequences. `weights` ([B], optional,
detached) scales each sequence's objective: the behaviour-policy correction when `old_logprobs` are a recomputed
proximal policy rather than the sampler's own (decoupled PPO, as AReaL does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within one group of rollouts of the same task, with the population std
    (unbiased=False, so a group of one or of equal rewards is defined); all-equal rewards give exact zeros."""
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D tensor, got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.get_default_dtype()) if not rewards.is_floating_point() else rewards
    if bool(torch.all(rewards == rewards[0])):
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)


def _check_shapes(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor) -> None:
    """Fail loudly on mismatched inputs instead of letting broadcasting produce a wrong loss."""
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(f"logprobs, old_logprobs and mask must share one [B, T] shape, got "
                         f"{tuple(logprobs.shape)}, {tuple(old_logprobs.shape)}, {tuple(mask.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}")


def _log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(pi_theta / pi_old) per token, exactly 0 (and gradient-free) where masked, so -inf pads cannot leak NaNs."""
    diff = logprobs - old_logprobs.detach()
    return torch.where(mask, diff, torch.zeros_like(diff))


def _clipped_objective(ratio: torch.Tensor, advantages: torch.Tensor, low: float,
                       high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic min(ratio*A, clip(ratio)*A), and where the clipped term is the active, different one."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(low, high) * advantages
    return torch.minimum(unclipped, clipped), clipped < unclipped


def _stats(ratios: torch.Tensor, clipped: torch.Tensor) -> dict[str, float]:
    """Clip fraction and ratio range over the counted units (sequences or tokens); a neutral 1.0 ratio when none."""
    if ratios.numel() == 0:
        return {"clip_fraction": 0.0, "ratio_mean": 1.0, "ratio_max": 1.0, "ratio_min": 1.0}
    ratios = ratios.detach()
    return {"clip_fraction": clipped.float().mean().item(), "ratio_mean": ratios.mean().item(),
            "ratio_max": ratios.max().item(), "ratio_min": ratios.min().item()}


def _mean_over_sequences(per_sequence: torch.Tensor, valid: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over sequences with a non-empty mask, each scaled by its weight; 0 (still attached to the graph) when
    there are none."""
    if weights is not None:
        per_sequence = per_sequence * weights.detach()
    return (per_sequence * valid).sum() / valid.sum().clamp_min(1)


def gspo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps_low: float = 3e-4, eps_high: float = 4e-4,
              weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one length-normalised importance ratio s_i per sequence, clipped to [1-eps_low, 1+eps_high], so a
    whole trajectory is kept or dropped together (stable for long multi-turn rollouts and MoE routing drift)."""
    _check_shapes(logprobs, old_logprobs, advantages, mask)
    mask = mask.bool()
    lengths = mask.sum(dim=1)
    valid = lengths > 0
    ratio = torch.exp(_log_ratio(logprobs, old_logprobs, mask).sum(dim=1) / lengths.clamp_min(1))
    objective, clipped = _clipped_objective(ratio, advantages.detach(), 1 - eps_low, 1 + eps_high)
    return -_mean_over_sequences(objective, valid, weights), _stats(ratio[valid], clipped[valid])


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps: float = 0.2, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO: a clipped ratio per token, averaged over each sequence's own tokens then over sequences
    (1/G sum_i 1/|o_i| sum_t), the token-level baseline GSPO is compared against."""
    _check_shapes(logprobs, old_logprobs, advantages, mask)
    mask = mask.bool()
    lengths = mask.sum(dim=1)
    ratio = torch.exp(_log_ratio(logprobs, old_logprobs, mask))
    objective, clipped = _clipped_objective(ratio, advantages.detach()[:, None], 1 - eps, 1 + eps)
    per_sequence = (objective * mask).sum(dim=1) / lengths.clamp_min(1)
    return -_mean_over_sequences(per_sequence, lengths > 0, weights), _stats(ratio[mask], clipped[mask])


LOSSES: dict[str, LossFn] = {"gspo": gspo_loss, "grpo": grpo_loss}
