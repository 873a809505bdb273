"""Log-probabilities of a sequence's own next tokens under a causal LM, as SFT and RL losses need them.

With `where` given, the LM head and the log-softmax run only at those positions (TRL's selective log-softmax idea):
at a 49K vocabulary, [batch x length x vocab] fp32 logits of every position dominate memory, while a loss needs
only the trained tokens. The forward runs under bf16 autocast when `bf16` is set (policy.precision); log-softmax is
always taken in fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from toolgym.policy.precision import autocast


def _head_only_where(model: Any) -> bool:
    """Whether the model's logits are exactly `lm_head(decoder(ids))`, so the head can run on chosen positions.
    Models that scale or soft-cap their logits take the full path."""
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    return isinstance(model.get_output_embeddings(), torch.nn.Linear) and hasattr(model, "model")


def token_logprobs(model: Any, ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor | None = None,
                   bf16: bool = False) -> torch.Tensor:
    """log pi(token_t | tokens_<t) for t >= 1, as [B, T-1] fp32; with `where` ([B, T-1] bool or 0/1), positions
    outside it are 0 and cost no LM head. Values at padding positions are meaningless: mask them."""
    targets = ids[:, 1:]
    with autocast(ids.device, bf16):
        if where is None or not _head_only_where(model):
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
            out = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
            return out if where is None else out * where.to(out.dtype)
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
        chosen = where.bool()
        logits = model.get_output_embeddings()(hidden[chosen])
    picked = logits.float().log_softmax(-1).gather(-1, targets[chosen][:, None]).squeeze(-1)
    out = torch.zeros(targets.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(chosen, picked)
