"""Synthetic copy rows: a random span of tokens repeated later in the same row, trained on the repeat only.

Copying a value out of a tool result needs content-matching attention (induction heads: find where the current
tokens occurred before and continue from there). A tiny model trained from scratch on episodes alone does not form
it; rows whose only predictable tokens are repeats do, given a large enough batch (measured in the README). Mixed
into later training they keep it from being overwritten.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass(frozen=True)
class CopyRowSpec:
    """The shape of the rows: `length` tokens drawn from `symbols` ids per row (fresh per row, from
    [first_id, vocab_size)), with a span of min_span..length//2-1 tokens repeated right after itself."""

    vocab_size: int
    length: int = 64
    symbols: int = 64
    min_span: int = 8
    first_id: int = 20

    def __post_init__(self) -> None:
        if self.length < 2 * self.min_span + 2 or self.min_span < 1:
            raise ValueError(f"copy rows of {self.length} tokens cannot repeat spans of {self.min_span}+ tokens")
        if self.vocab_size - self.first_id < self.symbols:
            raise ValueError(f"vocabulary of {self.vocab_size} has fewer than {self.symbols} ids from {self.first_id}")


def copy_batch(spec: CopyRowSpec, rows: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids [rows, length], loss mask [rows, length]): the mask marks repeat tokens after the first, the
    ones a model can only predict by copying."""
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    ids = torch.empty((rows, spec.length), dtype=torch.long)
    mask = torch.zeros((rows, spec.length), dtype=torch.long)
    for r in range(rows):
        symbols = torch.randperm(spec.vocab_size - spec.first_id, generator=gen)[:spec.symbols] + spec.first_id
        row = symbols[torch.randint(0, spec.symbols, (spec.length,), generator=gen)]
        span = rng.randint(spec.min_span, spec.length // 2 - 1)
        start = rng.randint(0, spec.length - 2 * span)
        row[start + span:start + 2 * span] = row[start:start + span]
        ids[r] = row
        mask[r, start + span + 1:start + 2 * span] = 1
    return ids, mask


def copy_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(mean next-token loss on the masked repeat tokens, fraction of them the model predicts exactly)."""
    logits = model(input_ids=ids).logits[:, :-1]
    target, own = ids[:, 1:], mask[:, 1:].float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    loss = (nll.view_as(own) * own).sum() / own.sum().clamp(min=1)
    accuracy = ((logits.argmax(-1) == target).float() * own).sum() / own.sum().clamp(min=1)
    return loss, accuracy.item()


def train_copy_rows(model: torch.nn.Module, spec: CopyRowSpec, steps: int, rows: int, lr: float, seed: int,
                    show_progress: bool = True) -> list[dict[str, float]]:
    """Train `model` in place on copy rows alone (AdamW, constant lr after a short warmup); per-step metrics."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    device = next(model.parameters()).device
    model.train()
    metrics: list[dict[str, float]] = []
    with Progress(TextColumn("copy rows"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[acc]}"),
                  TimeElapsedColumn(), disable=not show_progress, transient=True) as progress:
        job = progress.add_task("copy", total=steps, acc="")
        for step in range(1, steps + 1):
            ids, mask = copy_batch(spec, rows, rng)
            loss, accuracy = copy_loss(model, ids.to(device), mask.to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            metrics.append({"step": step, "copy_loss": loss.item(), "copy_accuracy": accuracy})
            progress.update(job, advance=1, acc=f"copied {accuracy:.2f}")
    return metrics
