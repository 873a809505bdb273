"""Recovery fine-tune of a Zig-Zag model: a short training run that lets the sparse layers adapt, either by
distillation from the original full-attention model (token-level KL on logits) or with the plain LM loss.

Documents are packed into long windows (longer than sink + local tokens, where sparse and full attention differ)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from torch import nn

from toolgym.sft.trainer import collate, sft_loss


class RecoveryConfig(BaseModel):
    """Settings of one recovery run."""

    objective: Literal["distill", "lm"] = Field("distill", description="distill: KL to the full-attention teacher.")
    steps: int = Field(200, ge=1)
    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(1, ge=1)
    max_len: int = Field(4096, ge=2, description="Tokens per packed training window.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the distillation KL.")
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0


def pack_sequences(docs: Iterable[Sequence[int]], max_len: int, sep_id: int | None = None) -> list[list[int]]:
    """Concatenate token-id documents (with `sep_id` after each, if given) and cut the stream into max_len windows;
    a last window shorter than 2 tokens is dropped."""
    stream: list[int] = []
    for doc in docs:
        stream.extend(doc)
        if sep_id is not None:
            stream.append(sep_id)
    windows = [stream[i:i + max_len] for i in range(0, len(stream), max_len)]
    return [w for w in windows if len(w) >= 2]


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Mean over the masked-in tokens of KL(teacher || student) at `temperature`, scaled by temperature**2."""
    t = torch.log_softmax(teacher_logits.float() / temperature, -1)
    s = torch.log_softmax(student_logits.float() / temperature, -1)
    per_token = (t.exp() * (t - s)).sum(-1)
    mask = mask.float()
    return (per_token * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def recovery_loss(student: nn.Module, batch: dict[str, torch.Tensor], cfg: RecoveryConfig,
                  teacher: nn.Module | None = None) -> torch.Tensor:
    """The configured objective on one collated batch (see toolgym.sft.trainer.collate)."""
    if cfg.objective == "lm":  # next-token loss on every real (non-padding) token
        return sft_loss(student, batch, 0.0)[0]
    if teacher is None:
        raise ValueError("objective='distill' needs a teacher model")
    with torch.no_grad():
        target = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return distill_kl(logits, target, batch["attention_mask"], cfg.temperature)


def _batches(sequences: Sequence[list[int]], cfg: RecoveryConfig, pad_id: int):
    rng = random.Random(cfg.seed)
    order: list[int] = []
    for _ in range(cfg.steps):
        picked = []
        for _ in range(cfg.batch_size):
            if not order:
                order = list(range(len(sequences)))
                rng.shuffle(order)
            picked.append(sequences[order.pop()])
        yield collate([(ids, [1] * len(ids)) for ids in picked], pad_id)


def recover(student: nn.Module, sequences: Sequence[list[int]], cfg: RecoveryConfig | None = None,
            teacher: nn.Module | None = None, pad_id: int = 0, show_progress: bool = True) -> list[dict[str, float]]:
    """Train `student` in place for cfg.steps steps on token-id `sequences` (cycled, shuffled with cfg.seed);
    returns per-step metrics (step, loss, lr, tokens)."""
    cfg = cfg or RecoveryConfig()
    if not sequences:
        raise ValueError("no training sequences")
    torch.manual_seed(cfg.seed)
    if teacher is not None:
        teacher.eval()
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    device = next(student.parameters()).device
    metrics: list[dict[str, float]] = []
    with Progress(TextColumn(f"recovery ({cfg.objective})"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), disable=not show_progress,
                  transient=True) as progress:
        job = progress.add_task("recovery", total=cfg.steps, loss="")
        for step, batch in enumerate(_batches(sequences, cfg, pad_id), 1):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = recovery_loss(student, batch, cfg, teacher)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
            metrics.append({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
                            "tokens": int(batch["attention_mask"].sum())})
            progress.update(job, advance=1, loss=f"loss {metrics[-1]['loss']:.4f}")
    student.eval()
    return metrics


def read_documents(path: str | Path) -> list[str]:
    """Training text: a .jsonl file (one object a line with a "text" field) or any other file read as one document."""
    path = Path(path)
    if path.suffix != ".jsonl":
        return [path.read_text()]
    docs = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                record: Any = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{lineno}: expected an object with a string 'text' field")
                docs.append(record["text"])
    return docs


def packed_windows(tokenizer: Any, path: str | Path, max_len: int) -> list[list[int]]:
    """The documents in `path` (see read_documents), tokenized, each followed by EOS, packed into max_len windows."""
    docs = [tokenizer.encode(text, add_special_tokens=False) for text in read_documents(path)]
    return pack_sequences(docs, max_len, tokenizer.eos_token_id)


def recover_checkpoint(model_dir: str | Path, data: str | Path, out_dir: str | Path, cfg: RecoveryConfig | None = None,
                       teacher_dir: str | Path | None = None, device: str = "cpu", show_progress: bool = True
                       ) -> list[dict[str, float]]:
    """Load the Zig-Zag checkpoint in `model_dir`, run `recover` on the documents in `data`, and save the model (still
    Zig-Zag), its tokenizer and recovery_metrics.jsonl to `out_dir`. The distillation teacher defaults to
    `model_dir` itself loaded with full attention (the weights before any recovery)."""
    from toolgym.policy.hf import load_causal_lm, load_tokenizer, quiet_transformers

    from toolgym.device import checked_device
    from toolgym.models.zigzag import load_zigzag

    device = checked_device(device)
    cfg = cfg or RecoveryConfig()
    tokenizer = load_tokenizer(model_dir)
    student = load_zigzag(model_dir).to(device)
    teacher = None
    if cfg.objective == "distill":
        teacher = load_causal_lm(teacher_dir or model_dir).to(device)
    sequences = packed_windows(tokenizer, data, cfg.max_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    metrics = recover(student, sequences, cfg, teacher, pad_id, show_progress)
    out = Path(out_dir)
    with quiet_transformers():
        student.save_pretrained(out)
        tokenizer.save_pretrained(out)
    (out / "recovery_metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    return metrics
