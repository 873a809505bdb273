"""The transformers backend: batched sampling from any local causal LM directory that has a chat template.

The sampling loop is written here (left-padded batch, KV cache via `cache`) rather than using
`model.generate`, so the returned ids are exactly the sampled ones and each logprob is the log-softmax of the raw
logits (temperature 1, no top-p filtering) at the sampled token: the pi_old that RL needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolgym.device import checked_device
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """Token ids that end a turn: the tokenizer's eos plus the generation config's eos ids (one or a list)."""
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def sample_next(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from `logits` [batch, vocab]: greedy at temperature 0, else temperature + top-p sampling."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    scaled = logits / sampling.temperature
    if sampling.top_p < 1.0:
        sorted_logits, order = scaled.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > sampling.top_p  # keeps the smallest prefix whose mass reaches top_p
        scaled = scaled.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


class HFPolicy:
    """A token-level Policy over a transformers causal LM; weights can be swapped in place by the trainer.

    `stop_ids` (the tokenizer's and generation config's eos ids) are the tokens that end a completion."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str = "float32", version: int = 0):
        device = checked_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        self.device = torch.device(device)
        self.version = version
        self.stop_ids = _stop_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.stop_ids)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The request's exact prompt ids, or its messages + tools rendered with the chat template."""
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        return self.tokenizer.apply_chat_template(request.messages, tools=request.tools or None,
                                                  add_generation_prompt=True, tokenize=True, return_dict=False)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Sample a continuation for every request in one left-padded batch, stopping each at its first eos."""
        if not requests:
            return []
        prompts = [self.prompt_ids(r) for r in requests]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(self.device).manual_seed(sampling.seed)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        tokens: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        cache = None
        for _ in range(sampling.max_new_tokens):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True)
            cache = out.cache
            logits = out.logits[:, -1].float()
            token = sample_next(logits, sampling, generator)
            tokens.append(token)
            logprobs.append(logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1))
            done |= torch.isin(token, stop)
            if bool(done.all()):
                break
            ids = token[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=-1)
            positions = positions[:, -1:] + 1
        if not tokens:  # max_new_tokens == 0
            return [self._completion([], []) for _ in requests]
        return [self._completion(row, logp) for row, logp in
                zip(torch.stack(tokens, 1).tolist(), torch.stack(logprobs, 1).tolist())]

    def _completion(self, ids: list[int], logprobs: list[float]) -> Completion:
        """Cut one row at its first stop token (kept in token_ids, dropped from text)."""
        end = next((i for i, t in enumerate(ids) if t in self.stop_ids), None)
        if end is None:
            return Completion(text=self.tokenizer.decode(ids, skip_special_tokens=False), token_ids=ids,
                              logprobs=logprobs, version=self.version, finish_reason="length")
        return Completion(text=self.tokenizer.decode(ids[:end], skip_special_tokens=False), token_ids=ids[:end + 1],
                          logprobs=logprobs[:end + 1], version=self.version, finish_reason="stop")

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Load new weights in place (the trainer's update) and record their version."""
        self.model.load_state_dict(state_dict)
        self.version = version

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The current weights (shared with the model, not copied)."""
        return self.model.state_dict()
