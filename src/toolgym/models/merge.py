"""Fusing domain experts into one model by merging their weights: averaging, task arithmetic and TIES.

The report trains one expert per domain from a shared base and fuses them. Every expert here is a fine-tune of the
same base checkpoint, so each is the base plus a delta (its "task vector"); the methods differ in how the deltas
combine: averaging shrinks every delta by the number of experts, task arithmetic adds them (scaled), and TIES
(Yadav et al. 2023) keeps each delta's largest entries, elects one sign per weight and averages only the deltas that
agree with it, so experts that moved a weight in opposite directions do not cancel out into noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from toolgym.policy.hf import load_causal_lm, load_tokenizer, quiet_transformers

MergeMethod = Literal["average", "task_arithmetic", "ties"]
StateDict = dict[str, torch.Tensor]


class MergeConfig(BaseModel):
    """How to combine the experts' deltas from the base."""

    model_config = ConfigDict(frozen=True)

    method: MergeMethod = "ties"
    scale: float = Field(1.0, gt=0.0)
    """Multiplier of the combined delta (task arithmetic and TIES; averaging ignores it)."""
    density: float = Field(0.2, gt=0.0, le=1.0)
    """TIES: the fraction of each expert's delta entries kept, largest magnitudes first, per tensor."""


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """`delta` with all but its `density` largest-magnitude entries set to zero."""
    keep = max(1, round(density * delta.numel()))
    if keep >= delta.numel():
        return delta
    threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def _ties(deltas: list[torch.Tensor], density: float) -> torch.Tensor:
    """Trim each delta, elect the sign of the summed trimmed deltas, average the entries that agree with it."""
    trimmed = torch.stack([_trim(d, density) for d in deltas])
    sign = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    total = (trimmed * agree).sum(dim=0)
    return total / agree.sum(dim=0).clamp(min=1)


def merge_state_dicts(base: StateDict, experts: list[StateDict], cfg: MergeConfig) -> StateDict:
    """The fused weights: base plus the experts' deltas combined by `cfg.method`; tensors that are not floating
    point (buffers, indices) are the base's."""
    if not experts:
        raise ValueError("merging needs at least one expert")
    for i, expert in enumerate(experts):
        if expert.keys() != base.keys() or any(expert[k].shape != base[k].shape for k in base):
            raise ValueError(f"expert {i} does not have the base's parameter names and shapes: every expert must be "
                             "a fine-tune of the same base checkpoint")
    merged: StateDict = {}
    for name, weight in base.items():
        if not weight.is_floating_point():
            merged[name] = weight.clone()
            continue
        deltas = [e[name].to(torch.float32) - weight.to(torch.float32) for e in experts]
        if cfg.method == "average":
            combined = torch.stack(deltas).mean(dim=0)
        elif cfg.method == "task_arithmetic":
            combined = cfg.scale * torch.stack(deltas).sum(dim=0)
        else:
            combined = cfg.scale * _ties(deltas, cfg.density)
        merged[name] = (weight.to(torch.float32) + combined).to(weight.dtype)
    return merged


def merge_checkpoints(base_dir: str | Path, expert_dirs: list[str | Path], out_dir: str | Path,
                      cfg: MergeConfig | None = None) -> Path:
    """Fuse the expert checkpoints (fine-tunes of `base_dir`) into `out_dir`: an ordinary checkpoint with the
    base's config and tokenizer, plus merge.json saying how it was made."""
    cfg = cfg or MergeConfig()
    model = load_causal_lm(base_dir)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    experts = [load_causal_lm(d).state_dict() for d in expert_dirs]
    model.load_state_dict(merge_state_dicts(base, experts, cfg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        load_tokenizer(base_dir).save_pretrained(out)
    (out / "merge.json").write_text(json.dumps({"base": str(base_dir), "experts": [str(d) for d in expert_dirs],
                                                **cfg.model_dump()}, indent=1))
    return out
