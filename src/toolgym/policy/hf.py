"""The transformers backend: batched sampling from any local causal LM directory that has a chat template.

The sampling loop is written here (left-padded batch, KV cache via `cache`) rather than using
`model.generate`, so the returned ids are exactly the sampled ones and each logprob is the log-softmax of the raw
logits (temperature 1, no top-p filtering) at the sampled token: the pi_old that RL needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from toolgym.device import checked_device
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.microbatch import token_budget_chunks
from toolgym.policy.precision import Precision, autocast, use_bf16
from toolgym.policy.constrained import (
    CALL_CLOSE,
    CALL_OPEN,
    CallGrammar,
    ConstraintMode,
    Done,
    Prose,
    State,
    VocabTrie,
    walk,
)


_LENGTH_WARNING = "sequence-length-is-longer-than-the-specified-maximum"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Within the block, transformers logs errors only and draws no tqdm bars ("Loading weights", "Writing model
    shards"): toolgym shows its own progress. The caller's verbosity and bar setting come back afterwards."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer that does not warn that a sequence is longer than its `model_max_length`: toolgym bounds lengths
    itself (RolloutConfig.max_total_tokens, SFTConfig.max_len). Transformers gives that warning once per tokenizer;
    this marks it given, for this tokenizer only."""
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.deprecation_warnings[_LENGTH_WARNING] = True
    return tokenizer


def load_causal_lm(path: str | Path, **kwargs: Any) -> Any:
    """`AutoModelForCausalLM.from_pretrained(path, **kwargs)` without transformers' loading bar and notices, in fp32
    unless `dtype` says otherwise: weights saved in bf16 (a pulled model) still train with fp32 master weights, and
    speed comes from autocast (policy.precision), not from the stored dtype."""
    kwargs.setdefault("dtype", torch.float32)
    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def stop_ids(tokenizer: Any, generation_config: Any) -> set[int]:
    """Token ids that end a turn: the tokenizer's eos plus the generation config's eos ids (one or a list)."""
    ids = {tokenizer.eos_token_id}
    configured = generation_config.eos_token_id
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


def _single_token_ids(tokenizer: Any, *texts: str) -> tuple[int, ...] | None:
    """The ids of `texts` when each is one token of the vocabulary, else None."""
    ids = tuple(tokenizer.encode(t, add_special_tokens=False) for t in texts)
    return tuple(i[0] for i in ids) if all(len(i) == 1 for i in ids) else None


class HFPolicy:
    """A token-level Policy over a transformers causal LM; weights can be swapped in place by the trainer.

    `stop_ids` (the tokenizer's and generation config's eos ids) are the tokens that end a completion. `constrain`
    masks the sampler inside `<tool_call>...</tool_call>` (policy.constrained); it needs both tags as single tokens
    and is a no-op for a tokenizer without them. `precision` runs each forward under bf16 autocast where the device
    has bf16 arithmetic (policy.precision); logprobs are taken in fp32 from those logits."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str = "float32", version: int = 0,
                 constrain: ConstraintMode = "schema", precision: Precision = "auto", max_batch_tokens: int = 32768):
        device = checked_device(device)
        self.tokenizer = load_tokenizer(path)
        self.model = load_causal_lm(path, dtype=getattr(torch, dtype)).to(device).eval()
        self.device = torch.device(device)
        self.bf16 = use_bf16(precision, device)
        self.max_batch_tokens = max_batch_tokens
        self.version = version
        self.stop_ids = stop_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.stop_ids)
        self.constrain = constrain
        self._call_ids = _single_token_ids(self.tokenizer, CALL_OPEN, CALL_CLOSE)
        self._trie: VocabTrie | None = None

    def _grammars(self, requests: list[GenerationRequest]) -> list[CallGrammar | None]:
        """Each request's tool-call grammar (None where nothing is constrained)."""
        if self.constrain == "none" or self._call_ids is None:
            return [None] * len(requests)
        if self._trie is None:
            self._trie = VocabTrie(self.tokenizer)
        return [CallGrammar.for_request(r.tools, r.messages, self.constrain) for r in requests]

    def _options(self, state: State, grammar: CallGrammar) -> tuple[dict[int, State | None], bool]:
        """(tokens with the state after each, whether every other token is allowed and keeps `state`).

        In prose every token is allowed except a quoting one whose state is None; elsewhere only the listed tokens
        are, and None after one means free text."""
        if isinstance(state, Done):
            return {self._call_ids[1]: grammar.prose()}, False
        if isinstance(state, Prose):
            options: dict[int, State | None] = {
                tid: walk(state, text) for tid, text in self._trie.quoting.items()}
            options[self._call_ids[0]] = grammar.start()
            return options, True
        return dict(self._trie.allowed(state)), False

    def _mask(self, logits: torch.Tensor, states: list[State | None], grammars: list[CallGrammar | None],
              prose: dict[int, tuple[dict[int, State | None], bool]]
              ) -> tuple[torch.Tensor, dict[int, tuple[dict[int, State | None], bool]]]:
        """Logits with every token the grammar forbids at -inf, and per constrained row its options (`_options`).

        `prose` caches each row's prose options: they depend only on the request, not on the step."""
        follow: dict[int, tuple[dict[int, State | None], bool]] = {}
        masked = logits
        for row, state in enumerate(states):
            if state is None:
                continue
            if isinstance(state, Prose):
                if row not in prose:
                    prose[row] = self._options(state, grammars[row])
                options, others = prose[row]
            else:
                options, others = self._options(state, grammars[row])
            if not options and not others:  # this vocabulary cannot continue the grammar: leave the row free
                states[row] = None
                continue
            if masked is logits:
                masked = logits.clone()
            if others:
                banned = [tid for tid, nxt in options.items() if nxt is None]
                masked[row, banned] = float("-inf")
            else:
                keep = torch.full_like(logits[row], float("-inf"))
                keep[list(options)] = 0.0
                masked[row] += keep
            follow[row] = (options, others)
        return masked, follow

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The request's exact prompt ids, or its messages + tools rendered with the chat template."""
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        return self.tokenizer.apply_chat_template(request.messages, tools=request.tools or None,
                                                  add_generation_prompt=True, tokenize=True, return_dict=False)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Sample a continuation for every request, stopping each at its first eos, in left-padded batches of at most
        `max_batch_tokens` prompt positions (one batch in the caller's order when it fits, else longest first; one
        seeded generator across them). The prefill's attention scores grow with rows x length^2: 64 SmolLM2 episodes
        of ~1,500 tokens in one batch took a demo past 20 GB; 32K positions (about 21 such episodes) hold about 2 GB
        of scores."""
        if not requests:
            return []
        prompts = [self.prompt_ids(r) for r in requests]
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(self.device).manual_seed(sampling.seed)
        done: dict[int, Completion] = {}
        for chunk in token_budget_chunks([len(p) for p in prompts], self.max_batch_tokens):
            batch = self._generate([prompts[i] for i in chunk], [requests[i] for i in chunk], sampling, generator)
            done.update(zip(chunk, batch))
        return [done[i] for i in range(len(requests))]

    def _generate(self, prompts: list[list[int]], requests: list[GenerationRequest], sampling: SamplingParams,
                  generator: torch.Generator | None) -> list[Completion]:
        """One left-padded batch of `generate`."""
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        tokens: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        grammars = self._grammars(requests)
        states: list[State | None] = [g.prose() if g is not None else None for g in grammars]
        prose: dict[int, tuple[dict[int, State | None], bool]] = {}
        cache = None
        for _ in range(sampling.max_new_tokens):
            with autocast(self.device, self.bf16):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                                 use_cache=True)
            cache = out.cache
            logits = out.logits[:, -1].float()
            masked, follow = self._mask(logits, states, grammars, prose)
            token = sample_next(masked, sampling, generator)
            tokens.append(token)
            logprobs.append(logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1))
            for row, tid in enumerate(token.tolist()):
                if row in follow:
                    options, others = follow[row]
                    states[row] = options[tid] if tid in options else states[row] if others else None
                elif grammars[row] is not None and tid == self._call_ids[0]:
                    states[row] = grammars[row].start()
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
