"""Supervised fine-tuning of any transformers causal LM on SFT examples, trained only on the assistant's own
(trainable) tokens, tokenized exactly the way rollouts tokenize (so SFT and RL see the same sequences)."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolgym.agent.tokens import TokenTracker
from toolgym.device import Device
from toolgym.policy.hf import load_causal_lm, load_tokenizer, quiet_transformers
from toolgym.policy.logprobs import token_logprobs
from toolgym.policy.microbatch import token_budget_chunks
from toolgym.policy.precision import Precision, use_bf16
from toolgym.sft.copy_rows import CopyRowSpec, copy_batch, copy_loss
from toolgym.sft.data import SFTExample


class SFTConfig(BaseModel):
    epochs: int = 1
    max_steps: int | None = None
    """Train exactly this many optimizer steps, passing over the data as often as that takes (the schedule decays
    over them; `epochs` is then ignored); None trains `epochs` full passes."""
    lr: float = 1e-3
    batch_size: int = 8
    max_len: int = 2048
    weight_decay: float = 0.0
    warmup_steps: int = 10
    save_every: int = 0
    seed: int = 0
    device: Device = "cpu"
    """Torch device the model trains on (cpu, cuda, cuda:N, mps); the saved checkpoint is the same either way."""
    context_loss_weight: float = 0.0
    """Weight of a language-model loss on the context tokens (system, user, tool results): a model trained from
    scratch learns to read and copy from its context far sooner with it; 0 trains on assistant tokens only."""
    precision: Precision = "auto"
    """bf16 autocast per forward where the device has bf16 arithmetic (auto), always (bf16) or never (fp32); master
    weights stay fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory at long lengths for about a third more time."""
    micro_batch_tokens: int = Field(4096, ge=1)
    """A step's examples run in micro-batches of at most this many padded positions (longest first, gradients
    accumulated, the same loss as one batch): memory stays bounded and little compute goes to padding."""
    copy_rows: int = Field(0, ge=0)
    """Synthetic copy rows (sft.copy_rows) added to every step's loss: they keep a base's induction heads, which a
    short run at a high lr otherwise overwrites; 0 adds none."""


def tokenize_example(tokenizer: Any, ex: SFTExample) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on trainable assistant tokens) via the rollout's TokenTracker."""
    tracker = TokenTracker(tokenizer, ex.tools)
    tracker.start(ex.messages[:2])
    turn = 0
    for i, m in enumerate(ex.messages[2:], start=2):
        if m["role"] == "assistant":
            tracker.sync(ex.messages[:i])
            ids = tokenizer.encode(m["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
            tracker.add_sampled(ids, trainable=ex.train[turn])
            turn += 1
    seg = tracker.current
    return seg.token_ids, seg.loss_mask


def _batches(items: Sequence[tuple[list[int], list[int]]], size: int, rng: random.Random):
    order = list(range(len(items)))
    rng.shuffle(order)
    for i in range(0, len(order), size):
        yield [items[j] for j in order[i:i + size]]


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and loss mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    loss_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (tok, mask) in enumerate(batch):
        ids[row, :len(tok)] = torch.tensor(tok)
        attn[row, :len(tok)] = 1
        loss_mask[row, :len(mask)] = torch.tensor(mask)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def _loss_counts(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(assistant-token mask, other real-token mask) of the predicted positions."""
    own = batch["loss_mask"][:, 1:].float()
    return own, batch["attention_mask"][:, 1:].float() * (1 - own)


def sft_loss(model: Any, batch: dict[str, torch.Tensor], context_weight: float, bf16: bool = False,
             totals: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, assistant-token loss): mean next-token loss on assistant tokens plus `context_weight` times the
    mean loss on the other real (non-padding) tokens. The LM head runs only where a loss is taken. `totals` (the
    whole step's assistant and context token counts) makes a micro-batch's losses its share of the step's means."""
    own, context = _loss_counts(batch)
    where = own > 0 if context_weight == 0 else batch["attention_mask"][:, 1:] > 0
    nll = -token_logprobs(model, batch["input_ids"], batch["attention_mask"], where=where, bf16=bf16)
    own_total, context_total = totals or (own.sum().item(), context.sum().item())
    assistant = (nll * own).sum() / max(own_total, 1.0)
    if context_weight == 0:
        return assistant, assistant
    return assistant + context_weight * (nll * context).sum() / max(context_total, 1.0), assistant


def _accumulate(model: Any, batch: Sequence[tuple[list[int], list[int]]], pad_id: int, cfg: SFTConfig,
                bf16: bool) -> tuple[float, float]:
    """Backward of one step's loss over token-budget micro-batches; (total loss, assistant-token loss)."""
    own = sum(sum(mask[1:]) for _, mask in batch)
    totals = (float(own), float(sum(len(ids) - 1 for ids, _ in batch) - own))
    loss = own_loss = 0.0
    for chunk in token_budget_chunks([len(ids) for ids, _ in batch], cfg.micro_batch_tokens):
        tensors = {k: v.to(cfg.device) for k, v in collate([batch[i] for i in chunk], pad_id).items()}
        part, own = sft_loss(model, tensors, cfg.context_loss_weight, bf16, totals)
        part.backward()
        loss, own_loss = loss + part.item(), own_loss + own.item()
    return loss, own_loss


def train_sft(model_dir: str | Path, examples: Sequence[SFTExample], out_dir: str | Path,
              cfg: SFTConfig | None = None, show_progress: bool = True) -> list[dict[str, float]]:
    """Fine-tune the model in `model_dir` and save it (with its tokenizer) to `out_dir`; returns per-step metrics.

    Checkpoints go to out_dir/checkpoint-N every `save_every` steps; metrics to out_dir/sft_metrics.jsonl."""
    cfg = cfg or SFTConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).to(cfg.device)
    model.train()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    bf16 = use_bf16(cfg.precision, cfg.device)
    data = [tokenize_example(tokenizer, ex) for ex in examples]
    data = [(ids[:cfg.max_len], mask[:cfg.max_len]) for ids, mask in data if any(mask[:cfg.max_len])]
    if not data:
        raise ValueError("no SFT example has a trainable token within max_len")
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    epochs = cfg.epochs if cfg.max_steps is None else math.ceil(cfg.max_steps / per_epoch)
    steps = epochs * per_epoch if cfg.max_steps is None else cfg.max_steps
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * max(
        0.1, 1 - s / max(1, steps)))
    rng = random.Random(cfg.seed)
    copy_rng = random.Random(cfg.seed + 1)
    copy_spec = CopyRowSpec(model.config.vocab_size) if cfg.copy_rows else None
    metrics: list[dict[str, float]] = []
    step = 0
    with Progress(TextColumn("sft"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), disable=not show_progress, transient=True) as progress, \
            (out / "sft_metrics.jsonl").open("w") as log:
        job = progress.add_task("sft", total=steps, loss="")
        schedule = ((epoch, batch) for epoch in range(epochs) for batch in _batches(data, cfg.batch_size, rng))
        for epoch, batch in itertools.islice(schedule, steps):
            opt.zero_grad()
            loss, own_loss = _accumulate(model, batch, tokenizer.pad_token_id, cfg, bf16)
            copied: dict[str, float] = {}
            if copy_spec is not None:
                ids, mask = copy_batch(copy_spec, cfg.copy_rows, copy_rng)
                extra, accuracy = copy_loss(model, ids.to(cfg.device), mask.to(cfg.device))
                extra.backward()
                loss = loss + extra.item()
                copied = {"copy_loss": extra.item(), "copy_accuracy": accuracy}
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            row = {"step": step, "epoch": epoch, "loss": own_loss, "total_loss": loss,
                   "lr": sched.get_last_lr()[0], "tokens": sum(len(ids) for ids, _ in batch), **copied}
            metrics.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            progress.update(job, advance=1, loss=f"loss {row['loss']:.3f}")
            if cfg.save_every and step % cfg.save_every == 0:
                with quiet_transformers():
                    model.save_pretrained(out / f"checkpoint-{step}")
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return metrics
