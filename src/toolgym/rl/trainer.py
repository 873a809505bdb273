"""The policy trainer: turns sample groups into a GSPO (or GRPO) update and publishes versioned weights.

Each trajectory's token segments become rows; every row of a trajectory shares the trajectory's group-relative
advantage; the loss covers only tokens the policy sampled (loss mask), with the behaviour logprobs recorded at
sampling time as pi_old.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from toolgym.policy.hf import load_causal_lm, quiet_transformers
from toolgym.policy.logprobs import token_logprobs
from toolgym.policy.microbatch import token_budget_chunks
from toolgym.policy.precision import use_bf16
from toolgym.rl.config import TrainerConfig
from toolgym.rl.losses import LOSSES, group_advantages
from toolgym.rl.queue import SampleGroup


Batch = list[tuple[list[int], list[int], list[float], float]]


def rows_from_groups(groups: Sequence[SampleGroup]) -> Batch:
    """(token ids, loss mask, behaviour logprobs, advantage) per token segment of every trajectory."""
    rows: Batch = []
    for group in groups:
        adv = group_advantages(torch.tensor(group.rewards, dtype=torch.float32)).tolist()
        for traj, a in zip(group.trajectories, adv):
            for seg in traj.segments:
                if any(seg.loss_mask):
                    rows.append((seg.token_ids, seg.loss_mask, seg.logprobs, a))
    return rows


class Trainer:
    """Owns the trainable model and optimizer; `step(groups)` is one policy update and bumps `version`."""

    def __init__(self, model_dir: str | Path, cfg: TrainerConfig | None = None,
                 publish: Callable[[dict[str, torch.Tensor], int], None] | None = None, version: int = 0):
        self.cfg = cfg or TrainerConfig()
        if self.cfg.algorithm not in LOSSES:
            raise ValueError(f"unknown algorithm '{self.cfg.algorithm}'; choose from {sorted(LOSSES)}")
        self.model = load_causal_lm(model_dir).to(self.cfg.device)
        self.model.train()
        if self.cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.bf16 = use_bf16(self.cfg.precision, self.cfg.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.publish = publish
        self.version = version
        self.pad_id = self.model.config.pad_token_id or 0

    @property
    def recomputes_old(self) -> bool:
        """Whether pi_old is recomputed by this model (`TrainerConfig.old_logprobs`; auto: under bf16, whose
        rounding differs between a sampler's cached decoding and a full forward by more than GSPO's clip range)."""
        return self.cfg.old_logprobs == "recompute" or (self.cfg.old_logprobs == "auto" and self.bf16)

    def _tensors(self, rows: Batch) -> dict[str, torch.Tensor]:
        """Right-padded ids, attention, loss mask, behaviour logprobs and advantages of `rows` on the device."""
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width))
        old = torch.zeros((len(rows), width))
        for i, (tok, m, lp, _) in enumerate(rows):
            n = len(tok)
            ids[i, :n], attn[i, :n] = torch.tensor(tok), 1
            mask[i, :n], old[i, :n] = torch.tensor(m, dtype=torch.float32), torch.tensor(lp, dtype=torch.float32)
        adv = torch.tensor([r[3] for r in rows])
        return {k: t.to(self.cfg.device) for k, t in
                {"ids": ids, "attn": attn, "mask": mask[:, 1:], "behaviour": old[:, 1:], "adv": adv}.items()}

    def _logprobs(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_logprobs(self.model, t["ids"], t["attn"], where=t["mask"] > 0, bf16=self.bf16)

    def _loss(self, t: dict[str, torch.Tensor], proximal: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """The configured loss of one micro-batch. With `proximal` (this model's own logprobs before the step),
        ratios are taken against it and each sequence is weighted by its behaviour correction
        min(exp(mean log(proximal / behaviour)), behaviour_cap)."""
        kwargs = ({"eps_low": self.cfg.eps_low, "eps_high": self.cfg.eps_high} if self.cfg.algorithm == "gspo"
                  else {"eps": self.cfg.grpo_eps})
        old, stats = t["behaviour"], {}
        if proximal is not None:
            lengths = t["mask"].sum(1).clamp_min(1)
            drift = ((proximal - t["behaviour"]) * t["mask"]).sum(1) / lengths
            kwargs["weights"] = drift.exp().clamp(max=self.cfg.behaviour_cap)
            stats["behaviour_drift"] = drift.abs().mean().item()
            old = proximal
        loss, s = LOSSES[self.cfg.algorithm](self._logprobs(t), old, t["adv"], t["mask"], **kwargs)
        return loss, {**s, **stats}

    def step(self, groups: Sequence[SampleGroup]) -> dict[str, float]:
        """One optimizer step over `groups` (micro-batched by rows and tokens, gradients averaged by row count)."""
        start = time.perf_counter()
        rows = rows_from_groups(groups)
        self.opt.zero_grad()
        stats: dict[str, float] = {"loss": 0.0, "clip_fraction": 0.0}
        chunks = [self._tensors([rows[i] for i in chunk]) for chunk in token_budget_chunks(
            [len(r[0]) for r in rows], self.cfg.micro_batch_tokens, self.cfg.micro_batch)]
        proximal: list[torch.Tensor | None] = [None] * len(chunks)
        if self.recomputes_old:
            with torch.no_grad():
                proximal = [self._logprobs(t) for t in chunks]
            stats["behaviour_drift"] = 0.0
        for t, prox in zip(chunks, proximal):
            share = len(t["ids"]) / len(rows)
            loss, s = self._loss(t, prox)
            (loss * share).backward()
            stats["loss"] += loss.item() * share
            for key in ("clip_fraction", "behaviour_drift"):
                if key in stats:
                    stats[key] += s.get(key, 0.0) * share
        if rows:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.opt.step()
        self.version += 1
        if self.publish is not None:
            self.publish({k: v.detach().clone() for k, v in self.model.state_dict().items()}, self.version)
        tokens = sum(len(r[0]) for r in rows)
        elapsed = time.perf_counter() - start
        stats.update(rows=len(rows), tokens=tokens, train_seconds=elapsed, tokens_per_s=tokens / max(elapsed, 1e-9))
        return stats

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.model.save_pretrained(path)
        torch.save({"opt": self.opt.state_dict(), "version": self.version}, path / "trainer.pt")

    def load(self, path: Path) -> None:
        state = torch.load(path / "trainer.pt", weights_only=False, map_location=self.cfg.device)
        self.model.load_state_dict(load_causal_lm(path).state_dict())
        self.opt.load_state_dict(state["opt"])
        self.version = state["version"]
