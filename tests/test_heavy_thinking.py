"""Heavy Thinking for chat: one batch of K candidates, a summary that sees only their stripped answers, rounds
that feed the summary back, a history of summaries only, config validation, and a token-level policy."""

from __future__ import annotations

import json
import re

import pytest
import torch
from pydantic import ValidationError

from toolgym.heavy.thinking import (
    SUMMARY_TEMPLATE,
    HeavyConfig,
    HeavyConversation,
    HeavyThinker,
    strip_thinking,
    summary_messages,
)
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.policy.scripted import ScriptedPolicy
from toolgym.policy.tiny import build_tiny_model

BLOCK = re.compile(r"<candidate (\d+)>\n(.*?)\n</candidate \1>", re.DOTALL)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 x 7?"}]


class Recorder:
    """A candidate policy that records every generate call; request i of a call seeded s answers with s + i."""

    tokenizer = None
    version = 3

    def __init__(self, tool_calls: list[dict] | None = None):
        self.calls: list[tuple[list[GenerationRequest], SamplingParams]] = []
        self.tool_calls = tool_calls

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        self.calls.append((requests, sampling))
        base = len(self.calls) * 100 if sampling.seed is None else sampling.seed
        return [Completion(text=f"<think>secret {base + i}</think>answer {base + i}", version=self.version,
                           tool_calls=self.tool_calls) for i in range(len(requests))]


class Summarizer(ScriptedPolicy):
    """A summary policy that records its prompts and writes `<think>..</think>summary N` (N counts its answers)."""

    def __init__(self):
        self.prompts: list[list[dict]] = []
        super().__init__(self._reply)

    def _reply(self, messages: list[dict]) -> str:
        self.prompts.append(messages)
        return f"<think>weighing</think>summary {len(self.prompts)}"


def shown(prompt: list[dict]) -> list[str]:
    """The candidate answers a summary prompt shows, in order (checking their numbering is 1..n)."""
    blocks = BLOCK.findall(prompt[-1]["content"])
    assert [int(i) for i, _ in blocks] == list(range(1, len(blocks) + 1))
    return [text for _, text in blocks]


def test_strip_thinking_removes_closed_and_trailing_unclosed_blocks():
    assert strip_thinking("<think>a\nb</think> x <think>c</think>y") == "x y"
    assert strip_thinking("done <think>still going") == "done"


def test_summary_sees_exactly_the_k_stripped_answers_in_order_and_nothing_else():
    cand, summ = Recorder(), Summarizer()
    cfg = HeavyConfig(k=3, temperature=0.7, seed=10, max_new_tokens=64)
    result = HeavyThinker(cand, summ, cfg).answer(CHAT)

    assert len(cand.calls) == 1  # K copies in one batch
    requests, sampling = cand.calls[0]
    assert [r.messages for r in requests] == [CHAT] * 3
    assert (sampling.temperature, sampling.seed, sampling.max_new_tokens) == (0.7, 10, 64)

    assert len(summ.prompts) == 1
    prompt = summ.prompts[0]
    assert prompt[:-1] == CHAT and prompt[-1]["role"] == "user"
    assert shown(prompt) == ["answer 10", "answer 11", "answer 12"]
    assert "secret" not in prompt[-1]["content"]
    assert BLOCK.sub("", prompt[-1]["content"]).strip() == SUMMARY_TEMPLATE.format(k=3, candidates="").strip()

    assert result.answer.text == "<think>weighing</think>summary 1"
    assert [c.text for c in result.candidates] == [f"<think>secret {s}</think>answer {s}" for s in (10, 11, 12)]
    assert result.summary_prompts == summ.prompts and result.summaries == [result.answer]


def test_summary_messages_number_candidates_from_one():
    prompt = summary_messages(CHAT, ["b", "a"])
    assert prompt[:2] == CHAT and len(prompt) == 3 and shown(prompt) == ["b", "a"]


def test_native_tool_calls_are_shown_as_text_and_the_summary_gets_the_tools():
    call = {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 7}'}}
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
    cand, summ = Recorder(tool_calls=[call]), Recorder()
    HeavyThinker(cand, summ, HeavyConfig(k=2, seed=0)).answer(CHAT, tools)
    requests, _ = summ.calls[0]
    assert requests[0].tools == tools and cand.calls[0][0][0].tools == tools
    texts = shown(requests[0].messages)
    assert len(texts) == 2
    first, tool_line = texts[0].split("\n")
    assert first == "answer 0"
    assert json.loads(tool_line.removeprefix("<tool_call>").removesuffix("</tool_call>")) == {
        "name": "get_order", "arguments": {"order_id": 7}}


def test_second_round_draws_fresh_candidates_and_feeds_the_summary_back():
    cand, summ = Recorder(), Summarizer()
    result = HeavyThinker(cand, summ, HeavyConfig(k=2, rounds=2, seed=0)).answer(CHAT)
    assert len(cand.calls) == 2 and all(len(reqs) == 2 for reqs, _ in cand.calls)
    first, second = summ.prompts
    assert shown(first) == ["answer 0", "answer 1"]
    assert len(shown(second)) == 3 and shown(second)[2] == "summary 1"
    assert set(shown(second)[:2]).isdisjoint(shown(first))  # fresh seeds, fresh candidates
    assert result.answer.text.endswith("summary 2") and len(result.candidates) == 4
    assert [s.text for s in result.summaries] == [f"<think>weighing</think>summary {i}" for i in (1, 2)]


def test_answer_many_batches_all_conversations_and_never_reuses_a_seed():
    cand, summ = Recorder(), Recorder()
    other = [{"role": "user", "content": "And 5 x 5?"}]
    results = HeavyThinker(cand, summ, HeavyConfig(k=2, rounds=2, seed=5)).answer_many([CHAT, other])
    assert [len(reqs) for reqs, _ in cand.calls] == [4, 4] and [len(reqs) for reqs, _ in summ.calls] == [2, 2]
    assert [r.messages for r in cand.calls[0][0]] == [CHAT, CHAT, other, other]
    assert [r.messages[:-1] for r in summ.calls[0][0]] == [CHAT, other]
    seeds = [s.seed + i for reqs, s in cand.calls + summ.calls for i in range(len(reqs))]
    assert len(seeds) == len(set(seeds)) == 12
    assert [len(r.candidates) for r in results] == [4, 4]
    assert shown(results[1].summary_prompts[0]) == [c.text.split("</think>")[1] for c in results[1].candidates[:2]]


def test_conversation_history_keeps_only_summaries():
    cand, summ = Recorder(), Summarizer()
    chat = HeavyConversation(HeavyThinker(cand, summ, HeavyConfig(k=2)), system="Be brief.")
    chat.ask("What is 6 x 7?")
    chat.ask("And 5 x 5?")
    assert chat.messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": "summary 1"}, {"role": "user", "content": "And 5 x 5?"},
        {"role": "assistant", "content": "summary 2"}]
    second_turn = cand.calls[1][0][0].messages
    assert second_turn == chat.messages[:4]
    assert not any("answer" in m["content"] or "secret" in m["content"] for m in second_turn)


@pytest.mark.parametrize("bad", [{"k": 0}, {"rounds": 0}, {"temperature": -1.0}, {"max_new_tokens": 0},
                                 {"kk": 3}])
def test_bad_config_is_rejected_naming_the_field(bad):
    with pytest.raises(ValidationError) as err:
        HeavyConfig(**bad)
    assert next(iter(bad)) in str(err.value)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = [f"<|im_start|>user\nWhat is {a} x {b}?<|im_end|>\n<|im_start|>assistant\n{a * b}<|im_end|>\n"
              for a in range(12) for b in range(12)]
    path = build_tiny_model(corpus, tmp_path_factory.mktemp("tiny"), vocab_size=300, hidden_size=32, num_layers=1,
                            num_heads=2, max_position_embeddings=1024)
    yield HFPolicy(path)
    torch.set_num_threads(threads)


def test_token_level_policy_renders_messages_itself_and_is_deterministic(tiny_policy):
    cfg = HeavyConfig(k=3, max_new_tokens=6, seed=1)
    first = HeavyThinker(tiny_policy, config=cfg).answer(CHAT)
    again = HeavyThinker(tiny_policy, config=cfg).answer(CHAT)
    assert first == again
    assert len(first.candidates) == 3 and all(0 < len(c.token_ids) <= 6 for c in first.candidates)
    assert len({tuple(c.token_ids) for c in first.candidates}) > 1  # one seeded batch, distinct rows
    assert first.answer.token_ids and shown(first.summary_prompts[0]) == [
        strip_thinking(c.text) for c in first.candidates]
