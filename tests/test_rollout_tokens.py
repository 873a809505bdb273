"""Token exactness with a real tokenizer and chat template: the ids a policy is prompted with are the ids it is
trained on, and the loss mask covers exactly the ids it sampled, over multi-turn tool conversations."""

from __future__ import annotations

import pytest
import torch

from toolgym.agent.context import ContextConfig
from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.envs.environment import Environment
from toolgym.policy.base import Completion, SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.policy.scripted import GoldPolicy


class TokenGold:
    """The gold policy speaking through a real tokenizer: it 'samples' the ids of the gold text plus eos,
    and records every prompt and completion it handled."""

    def __init__(self, tasks, tokenizer):
        self.gold = GoldPolicy.from_tasks(tasks)
        self.tokenizer = tokenizer
        self.version = 0
        self.prompts: list[list[int]] = []
        self.sampled: list[list[int]] = []

    def generate(self, requests, sampling):
        out = []
        for r, text in zip(requests, (c.text for c in self.gold.generate(requests, sampling))):
            ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            self.prompts.append(list(r.prompt_ids))
            self.sampled.append(ids)
            out.append(Completion(text=text, token_ids=ids, logprobs=[-0.5] * len(ids), version=self.version))
        return out


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def multi_turn(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:2] if len(t.gold_chain) >= 2]


def test_trained_tokens_are_exactly_the_sampled_tokens(multi_turn, tokenizer):
    policy = TokenGold(multi_turn, tokenizer)
    episodes = [Episode(task=t, env=Environment.from_record(t.env)) for t in multi_turn]
    trajs = run_episodes(episodes, policy, RolloutConfig(), concurrency=1)
    assert all(t.passed for t in trajs), [t.verdict for t in trajs]
    sampled_iter = iter(policy.sampled)
    prompt_iter = iter(policy.prompts)
    for traj in trajs:
        assert len(traj.segments) == 1, "a concatenative template must give one segment per episode"
        seg = traj.segments[0]
        assert len(seg.token_ids) == len(seg.loss_mask) == len(seg.logprobs) == len(seg.versions)
        expected = [i for _ in traj.turns for i in next(sampled_iter)]
        assert seg.sampled_ids == expected
        for _ in traj.turns:
            prompt = next(prompt_iter)
            assert seg.token_ids[:len(prompt)] == prompt, "the model was prompted with ids other than the trained ones"
            assert seg.loss_mask[:len(prompt)][-1] == 0
        assert all(lp == -0.5 for lp, m in zip(seg.logprobs, seg.loss_mask) if m)
        text = tokenizer.decode(seg.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        rendered = tokenizer.apply_chat_template(traj.messages[:-1], tools=Environment.from_record(
            next(t for t in multi_turn if t.id == traj.task_id).env).openai_tools(), tokenize=False)
        assert text.startswith(rendered.rstrip("\n")), "token text diverged from the chat template rendering"


def test_tool_and_user_tokens_are_masked(multi_turn, tokenizer):
    policy = TokenGold(multi_turn[:1], tokenizer)
    traj = run_episodes([Episode(task=multi_turn[0], env=Environment.from_record(multi_turn[0].env))], policy)[0]
    seg = traj.segments[0]
    trained_text = tokenizer.decode(seg.sampled_ids, skip_special_tokens=False)
    assert "<tool_response>" not in trained_text and "<|im_start|>" not in trained_text
    assert "<tool_call>" in trained_text


def test_real_model_rollout_records_its_own_ids_and_logprobs(multi_turn, tiny_dir):
    torch.manual_seed(0)
    policy = HFPolicy(tiny_dir)
    cfg = RolloutConfig(max_turns=2, sampling=SamplingParams(temperature=1.0, max_new_tokens=12, seed=1))
    trajs = run_episodes([Episode(task=t, env=Environment.from_record(t.env)) for t in multi_turn[:2]], policy, cfg)
    for traj in trajs:
        seg = traj.segments[0]
        per_turn = sum(t.n_tokens for t in traj.turns)
        assert sum(seg.loss_mask) == per_turn > 0
        assert all(lp <= 0 for lp, m in zip(seg.logprobs, seg.loss_mask) if m)
        assert all(v == 0 for v, m in zip(seg.versions, seg.loss_mask) if m)


def test_summary_starts_a_new_segment_with_a_full_render(multi_turn, tokenizer):
    task = max(multi_turn, key=lambda t: len(t.gold_chain))
    policy = TokenGold([task], tokenizer)
    cfg = RolloutConfig(context=ContextConfig(summary_threshold_tokens=200, keep_recent_tool_results=0))
    traj = run_episodes([Episode(task=task, env=Environment.from_record(task.env))], policy, cfg)[0]
    assert any(e.kind == "summary" for e in traj.events)
    assert len(traj.segments) >= 2
    assert sum(sum(s.loss_mask) for s in traj.segments) == sum(len(ids) for ids in policy.sampled)
