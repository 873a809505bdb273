"""Cold-start SFT data selection as in the LongCat-Flash-Thinking report: K-Center-Greedy over trajectory embeddings
for diversity, steered by a sliding-window perplexity that favours examples exposing the current model's gaps.

Both signals come from the model SFT will start from, over exactly the tokens SFT trains on (`tokenize_example`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from toolgym.device import checked_device
from toolgym.policy.hf import load_causal_lm, load_tokenizer
from toolgym.policy.logprobs import token_logprobs
from toolgym.sft.data import SFTExample
from toolgym.sft.trainer import collate, tokenize_example

SelectMethod = Literal["kcenter", "random", "all"]


def _batches(model: Any, tokenizer: Any, examples: Sequence[SFTExample], batch_size: int, max_len: int
             ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(example indices, collated tensors on the model's device), batching examples of similar length together so
    little compute goes to padding."""
    data = [tokenize_example(tokenizer, ex) for ex in examples]
    data = [(ids[:max_len], mask[:max_len]) for ids, mask in data]
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        tensors = collate([data[i] for i in chunk], tokenizer.pad_token_id)
        yield chunk, {k: v.to(device) for k, v in tensors.items()}


@torch.no_grad()
def example_embeddings(model: Any, tokenizer: Any, examples: Sequence[SFTExample], batch_size: int = 8,
                       max_len: int = 2048) -> torch.Tensor:
    """[n, hidden] float32 on the CPU: the model's last hidden state averaged over each example's real tokens (as
    SFT tokenizes them), a trajectory embedding for diversity selection."""
    model.eval()
    out = torch.zeros(len(examples), model.config.hidden_size)
    for chunk, batch in _batches(model, tokenizer, examples, batch_size, max_len):
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       output_hidden_states=True).hidden_states[-1].float()
        real = batch["attention_mask"][..., None].float()
        out[chunk] = ((hidden * real).sum(1) / real.sum(1).clamp(min=1)).cpu()
    return out


@torch.no_grad()
def window_perplexity(model: Any, tokenizer: Any, examples: Sequence[SFTExample], window: int = 32,
                      batch_size: int = 8, max_len: int = 2048) -> torch.Tensor:
    """[n] float32: per example, the largest mean next-token NLL (nats; the log of the perplexity) over any
    `window` consecutive trainable tokens (all of them if fewer): the hardest stretch of what SFT would train on.

    The trainable tokens are taken in order, skipping the masked context between turns; an example with no
    trainable token within `max_len` (SFT skips it) scores 0."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    model.eval()
    out = torch.zeros(len(examples))
    for chunk, batch in _batches(model, tokenizer, examples, batch_size, max_len):
        nll = -token_logprobs(model, batch["input_ids"], batch["attention_mask"])
        trainable = batch["loss_mask"][:, 1:].bool()
        for row, index in enumerate(chunk):
            values = nll[row][trainable[row]].cpu()
            if len(values):
                out[index] = values.unfold(0, min(window, len(values)), 1).mean(1).max()
    return out


def k_center_greedy(embeddings: torch.Tensor, k: int, scores: torch.Tensor | None = None,
                    score_weight: float = 0.0, seed: int = 0) -> list[int]:
    """Indices of `k` points in the order K-Center-Greedy picks them: each step adds the point farthest (Euclidean,
    on L2-normalised embeddings) from its nearest chosen point, so the picks cover every region of the data.

    With `scores` (non-negative, higher = harder) the start is the highest-score point and a candidate's priority is
    its distance times (score / max score) ** `score_weight`; without them the start is a point drawn with `seed`.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [n, dim], got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    points = torch.nn.functional.normalize(embeddings.float(), dim=1)
    if scores is None:
        weight = torch.ones(n)
        first = random.Random(seed).randrange(n)
    else:
        scores = scores.float().cpu()
        if scores.shape != (n,):
            raise ValueError(f"scores must have shape ({n},), got {tuple(scores.shape)}")
        if (scores < 0).any() or score_weight < 0:
            raise ValueError(f"scores and score_weight must be non-negative, got score_weight {score_weight}")
        top = scores.max()
        weight = (scores / top) ** score_weight if top > 0 else torch.ones(n)
        first = int(scores.argmax())
    chosen = [first]
    nearest = (points - points[first]).norm(dim=1)
    for _ in range(k - 1):
        priority = nearest * weight
        priority[chosen] = -1.0
        pick = int(priority.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, (points - points[pick]).norm(dim=1))
    return chosen


def select_examples(model_dir: str | Path, examples: Sequence[SFTExample], fraction: float, method: SelectMethod,
                    seed: int, score_weight: float = 1.0, device: str = "cpu", max_len: int = 2048) -> list[int]:
    """Sorted indices of round(`fraction` * n) examples (at least 1) to fine-tune the model in `model_dir` on:
    "kcenter" (diverse, steered to the model's hardest windows), "random" (a seeded subset of that size) or "all".

    `max_len` should be SFT's, so that selection sees the same truncated sequences training will."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not examples:
        raise ValueError("no examples to select from")
    n = len(examples)
    if method == "all":
        return list(range(n))
    k = max(1, round(fraction * n))
    if method == "random":
        return sorted(random.Random(seed).sample(range(n), k))
    if method != "kcenter":
        raise ValueError(f"unknown selection method '{method}'; choose kcenter, random or all")
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).to(checked_device(device))
    embeddings = example_embeddings(model, tokenizer, examples, max_len=max_len)
    scores = window_perplexity(model, tokenizer, examples, max_len=max_len)
    return sorted(k_center_greedy(embeddings, k, scores, score_weight, seed))


def save_selection(path: str | Path, method: SelectMethod, fraction: float, seed: int, kept: Sequence[int],
                   examples: Sequence[SFTExample]) -> None:
    """Write which examples a selection kept (indices and their task ids) as JSON, so a run says what it trained on."""
    Path(path).write_text(json.dumps({"method": method, "fraction": fraction, "seed": seed, "indices": list(kept),
                                      "task_ids": [examples[i].task_id for i in kept]}, indent=1))
