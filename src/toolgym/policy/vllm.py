"""The vLLM backend: a token-level Policy over an in-process `vllm.LLM` engine (GPU), with in-place weight updates.

Targets vLLM 0.9 to 0.11 (the V1 engine): prompts go in as `{"prompt_token_ids": ids}`, each request gets its own
`SamplingParams(logprobs=0)` so the output carries the sampled token's logprob (V1 reports raw-logit logprobs by
default, temperature 1 and no top-p, the pi_old that RL needs, like HFPolicy), and new weights are pushed with the
public `LLM.apply_model(fn)`, which runs `fn(model)` on the model inside every worker. `model.load_weights` takes
transformers-named tensors (it fuses q/k/v and gate/up itself), so the trainer's `state_dict()` goes in as is. With
the default multiprocess engine core the function and its tensors are pickled to the workers: set
`VLLM_ALLOW_INSECURE_SERIALIZATION=1`, or `VLLM_ENABLE_V1_MULTIPROCESSING=0` to keep the engine in this process
(no copy). vLLM keeps the stop token in `token_ids` and leaves it out of `text`, as HFPolicy does;
`skip_special_tokens=False` keeps tool-call tags such as `<tool_call>` in the text the rollout parses.

vLLM is imported only when this module builds the engine itself; pass `engine=` to use any object with the same
surface (tests use a fake)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from functools import partial
from types import ModuleType
from typing import Any

from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.hf import HFPolicy

_FINISH_REASONS = {"stop": "stop", "length": "length"}  # anything else (an aborted request) is an error


def _import_vllm() -> ModuleType:
    """The vllm package, or an ImportError that says how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError("VLLMPolicy needs vLLM, which is not installed: pip install vllm on a GPU machine") from exc
    return vllm


def vllm_sampling_params(sampling: SamplingParams, params_cls: type, seed: int | None) -> Any:
    """toolgym sampling settings as an instance of `params_cls` (vLLM's SamplingParams, or a fake's)."""
    return params_cls(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
                      seed=seed, logprobs=0, skip_special_tokens=False)


def _sampling_params_class(engine: Any) -> type:
    """The SamplingParams class that the module defining the engine's class uses (vllm.entrypoints.llm for `LLM`)."""
    return sys.modules[type(engine).__module__].SamplingParams


def _load_into(weights: list[tuple[str, Any]], model: Any) -> None:
    """Runs inside a vLLM worker: load (name, tensor) pairs into its model in place."""
    model.load_weights(weights)


class VLLMPolicy:
    """A token-level Policy over a vLLM engine; the trainer swaps weights in place with `set_weights`."""

    prompt_ids = HFPolicy.prompt_ids  # the same prompt rendering as the transformers backend

    def __init__(self, path: str, version: int = 0, engine: Any | None = None, **engine_kwargs: Any):
        if engine is None:
            engine = _import_vllm().LLM(model=path, **engine_kwargs)
        self.engine = engine
        self.tokenizer = engine.get_tokenizer()
        self.version = version
        self.sampling_cls = _sampling_params_class(engine)

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Continue every request in one engine call; request i samples with seed `sampling.seed + i` when seeded,
        so identical prompts in a batch (a rollout group) still differ."""
        if not requests:
            return []
        prompts = [{"prompt_token_ids": self.prompt_ids(r)} for r in requests]
        seeds = [None if sampling.seed is None else sampling.seed + i for i in range(len(requests))]
        params = [vllm_sampling_params(sampling, self.sampling_cls, seed) for seed in seeds]
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        return [self._completion(out.outputs[0]) for out in outputs]

    def _completion(self, sample: Any) -> Completion:
        """One vLLM CompletionOutput as a Completion: its ids, the logprob of each sampled id, text and finish."""
        ids = list(sample.token_ids)
        logprobs = [step[token].logprob for token, step in zip(ids, sample.logprobs)]
        return Completion(text=sample.text, token_ids=ids, logprobs=logprobs, version=self.version,
                          finish_reason=_FINISH_REASONS.get(sample.finish_reason, "error"))

    def _load_weights(self, items: Iterable[tuple[str, Any]]) -> None:
        """Push (name, tensor) pairs into the model of every engine worker through `LLM.apply_model`."""
        self.engine.apply_model(partial(_load_into, list(items)))

    def set_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Load new weights into the running engine (the trainer's update) and record their version."""
        self._load_weights(state_dict.items())
        self.version = version
