"""VLLMPolicy against a fake engine with vLLM's `LLM` surface (vLLM itself needs a GPU): prompts as exact token ids,
outputs mapped to Completions, chat-template prompting, in-place weight loading, a full rollout, and the clear
ImportError when vLLM is missing."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.envs.environment import Environment
from toolgym.policy.base import GenerationRequest
from toolgym.policy.base import SamplingParams as ToolgymSampling
from toolgym.policy.vllm import VLLMPolicy


@dataclass
class SamplingParams:
    """Stands in for vllm.SamplingParams; VLLMPolicy finds it in the module that defines FakeEngine."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    logprobs: int
    skip_special_tokens: bool


@dataclass
class Logprob:
    logprob: float


@dataclass
class FakeModel:
    """Records every load_weights call, like a vLLM model would receive them inside its worker."""

    loaded: list[list[tuple[str, Any]]] = field(default_factory=list)

    def load_weights(self, weights):
        self.loaded.append(list(weights))
        return {name for name, _ in weights}


class FakeEngine:
    """vllm.LLM's surface: get_tokenizer, generate (RequestOutput-shaped results) and apply_model.

    Request i of a call answers `replies[(calls so far + i) % len(replies)]` plus eos, cut at max_tokens;
    logprob k of a reply is -(k + 1) / 10, and each step's dict also holds a runner-up token, as vLLM's may."""

    def __init__(self, tokenizer, replies=("Your order is confirmed.",)):
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.model = FakeModel()
        self.calls: list[tuple[list[dict], list[SamplingParams]]] = []
        self.returned: list[tuple[list[int], list[int]]] = []  # (prompt ids, sampled ids) per request

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        first = sum(len(p) for p, _ in self.calls)
        self.calls.append((prompts, sampling_params))
        return [self._output(p["prompt_token_ids"], s, self.replies[(first + i) % len(self.replies)])
                for i, (p, s) in enumerate(zip(prompts, sampling_params))]

    def _output(self, prompt: list[int], params: SamplingParams, reply: str):
        eos = self.tokenizer.eos_token_id
        ids = (self.tokenizer.encode(reply, add_special_tokens=False) + [eos])[:params.max_tokens]
        stopped = ids[-1] == eos
        logprobs = [{t: Logprob(-(k + 1) / 10), t + 1: Logprob(-9.0)} for k, t in enumerate(ids)]
        text = self.tokenizer.decode(ids[:-1] if stopped else ids, skip_special_tokens=params.skip_special_tokens)
        self.returned.append((list(prompt), ids))
        sample = SimpleNamespace(index=0, text=text, token_ids=ids, logprobs=logprobs,
                                 finish_reason="stop" if stopped else "length")
        return SimpleNamespace(prompt_token_ids=prompt, outputs=[sample], finished=True)

    def apply_model(self, func):
        return [func(self.model)]


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def few_tasks(tasks):
    return [tasks[name][0] for name in sorted(tasks)[:2]]


def test_prompt_ids_and_sampling_reach_the_engine_exactly(tokenizer):
    engine = FakeEngine(tokenizer)
    policy = VLLMPolicy("unused", engine=engine)
    prompts = [[5, 6, 7], [8, 9]]
    policy.generate([GenerationRequest(prompt_ids=p) for p in prompts],
                    ToolgymSampling(temperature=0.7, top_p=0.9, max_new_tokens=32, seed=11))
    sent, params = engine.calls[0]
    assert sent == [{"prompt_token_ids": p} for p in prompts]
    assert params == [SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32, seed=seed, logprobs=0,
                                     skip_special_tokens=False) for seed in (11, 12)]


def test_outputs_map_to_completions(tokenizer):
    reply = "<tool_call>{\"name\": \"get_order\", \"arguments\": {\"order_id\": 3}}</tool_call>"
    engine = FakeEngine(tokenizer, replies=[reply, "Done."])
    policy = VLLMPolicy("unused", version=4, engine=engine)
    full, done = policy.generate([GenerationRequest(prompt_ids=[1, 2]), GenerationRequest(prompt_ids=[3])],
                                ToolgymSampling(max_new_tokens=64))
    eos = tokenizer.eos_token_id
    assert full.token_ids == engine.returned[0][1] and full.token_ids[-1] == eos
    assert full.logprobs == [-(k + 1) / 10 for k in range(len(full.token_ids))]
    assert full.text == reply and tokenizer.eos_token not in full.text
    assert full.finish_reason == "stop" and full.version == 4
    assert done.token_ids == engine.returned[1][1] and done.text == "Done." and done.finish_reason == "stop"

    (short,) = policy.generate([GenerationRequest(prompt_ids=[1, 2])], ToolgymSampling(max_new_tokens=3))
    assert len(short.token_ids) == 3 and eos not in short.token_ids
    assert short.finish_reason == "length"
    assert short.text == tokenizer.decode(short.token_ids, skip_special_tokens=False)


def test_messages_are_rendered_with_the_chat_template(tokenizer, few_tasks):
    engine = FakeEngine(tokenizer)
    policy = VLLMPolicy("unused", engine=engine)
    tools = Environment.from_record(few_tasks[0].env).openai_tools()
    messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": few_tasks[0].instruction}]
    policy.generate([GenerationRequest(messages=messages, tools=tools)], ToolgymSampling())
    expected = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                             return_dict=False)
    assert engine.calls[0][0] == [{"prompt_token_ids": expected}]


def test_set_weights_loads_into_the_engine_and_bumps_the_version(tokenizer):
    import torch

    engine = FakeEngine(tokenizer)
    policy = VLLMPolicy("unused", engine=engine)
    weights = {"model.embed_tokens.weight": torch.ones(2, 2), "lm_head.weight": torch.zeros(2, 2)}
    policy.set_weights(weights, version=3)
    assert policy.version == 3
    assert engine.model.loaded == [list(weights.items())]
    (completion,) = policy.generate([GenerationRequest(prompt_ids=[1])], ToolgymSampling())
    assert completion.version == 3


def test_rollout_trains_on_exactly_the_ids_the_engine_sampled(tokenizer, few_tasks):
    call = "<tool_call>{\"name\": \"no_such_tool\", \"arguments\": {}}</tool_call>"
    engine = FakeEngine(tokenizer, replies=[call, "Shall I proceed?", "Should I go ahead?"])  # none ends the talk
    policy = VLLMPolicy("unused", version=2, engine=engine)
    episodes = [Episode(task=t, env=Environment.from_record(t.env)) for t in few_tasks]
    trajs = run_episodes(episodes, policy, RolloutConfig(max_turns=3))
    assert len(engine.calls) == 3, "concurrent episodes should share one engine call per turn"
    for traj in trajs:
        (seg,) = traj.segments
        own = [ids for prompt, ids in engine.returned if seg.token_ids[:len(prompt)] == prompt]
        assert len(own) == traj.n_turns == 3
        assert seg.sampled_ids == [t for ids in own for t in ids]
        sampled = [(lp, v) for lp, v, m in zip(seg.logprobs, seg.versions, seg.loss_mask) if m]
        assert [lp for lp, _ in sampled] == [-(k + 1) / 10 for ids in own for k in range(len(ids))]
        assert {v for _, v in sampled} == {2}
        assert traj.termination == "max_turns" and traj.n_tool_calls >= 1


def test_missing_vllm_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="pip install vllm on a GPU machine"):
        VLLMPolicy("some/model")
