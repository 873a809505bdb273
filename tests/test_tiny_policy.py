"""The embedded tiny model and the transformers backend: tokenizer and chat format, exact ids and logprobs,
batch independence, seeding, weight swaps and a deterministic build."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from toolgym.domains import load_domain
from toolgym.envs.environment import Environment
from toolgym.envs.sample import EnvironmentSampler
from toolgym.policy.base import GenerationRequest, Policy, SamplingParams
from toolgym.policy.chat_format import SPECIAL_TOKENS, render
from toolgym.policy.hf import HFPolicy, sample_next
from toolgym.policy.tiny import build_tiny_model, corpus_from_tasks, gold_conversation
from toolgym.tasks.synthesize import synthesize_task

BUILD = dict(vocab_size=800, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=4096)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tasks():
    return [synthesize_task(env, 100 + i) for name in ("airline", "retail")
            for i, env in enumerate(EnvironmentSampler(load_domain(name), seed=3).sample_many(10))]


@pytest.fixture(scope="module")
def corpus(tasks):
    return list(corpus_from_tasks(tasks))


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory):
    return build_tiny_model(corpus, tmp_path_factory.mktemp("tiny"), **BUILD)


@pytest.fixture(scope="module")
def policy(model_dir):
    """fp32, so the sampler's logprobs equal a fresh forward's to 1e-4 (under bf16 they differ by rounding, and the
    trainer recomputes pi_old: tests/test_precision.py)."""
    return HFPolicy(model_dir, precision="fp32")


@pytest.fixture(scope="module")
def conversation(tasks):
    """A multi-turn tool conversation (system prompt, tool calls, tool results, answer) and its tools."""
    env = Environment.from_record(tasks[0].env)
    messages = [{"role": "system", "content": "You are a helpful agent."}, *gold_conversation(tasks[0], env)]
    messages[2]["tool_calls"][0]["function"]["arguments"] = json.dumps(tasks[0].gold_chain[0].arguments)
    return messages, env.openai_tools()


def test_corpus_states_gold_calls_results_and_answers(tasks, corpus):
    assert len(corpus) == len(tasks)
    for task, text in zip(tasks, corpus):
        assert text.startswith("<|im_start|>system\n<tools>\n") and task.instruction in text
        assert text.count("<tool_call>") == text.count("<tool_response>") == len(task.gold_chain)
        assert '"error"' not in text  # every gold call succeeded on the rebuilt environment
        assert all(answer in text for answer in task.required_answers)


def test_special_tokens_are_single_ids(policy):
    tok = policy.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    for token, token_id in zip(SPECIAL_TOKENS, ids):
        assert tok.encode(f"a{token}b", add_special_tokens=False)[1:-1] == [token_id]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>"


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_checkpoint_loads_with_the_trained_tokenizer(arch, corpus, model_dir, tmp_path):
    path = model_dir if arch == "qwen2" else build_tiny_model(corpus, tmp_path / arch, **BUILD, arch=arch)
    trained, loaded = Tokenizer.from_file(str(path / "tokenizer.json")), AutoTokenizer.from_pretrained(path)
    for text in corpus[:5] + ["Flight AA-0193 on 2024-05-01 costs 12.50 for Zoë"]:
        assert loaded.encode(text) == trained.encode(text).ids
    policy = HFPolicy(path)
    assert policy.model.config.model_type == arch
    completion = policy.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}])],
                                 SamplingParams(max_new_tokens=4, seed=0))[0]
    assert len(completion.token_ids) == len(completion.logprobs) <= 4


def test_a_word_is_the_same_token_in_prose_keys_and_values(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    prose = tok.encode("Could you tell me the booking status of Paris?", add_special_tokens=False)
    key = tok.encode('{"booking_status": "Paris", "status":"open"}', add_special_tokens=False)

    def contains(ids: list[int], part: list[int]) -> bool:
        return any(ids[i:i + len(part)] == part for i in range(len(ids)))

    for word in ("booking", "status", "Paris"):
        pieces = tok.encode(word, add_special_tokens=False)
        assert contains(prose, pieces) and contains(key, pieces), (word, tok.convert_ids_to_tokens(prose + key))
    assert tok.decode(tok.encode("a  b_c\n\t\"d\": 1.50 Zoë", add_special_tokens=False)) == 'a  b_c\n\t"d": 1.50 Zoë'


def test_template_is_concatenative_in_text_and_ids(policy, conversation):
    messages, tools = conversation
    tok = policy.tokenizer
    for msgs in (messages, messages[1:]):  # with and without an explicit system message
        whole = render(msgs, tools)
        whole_ids = tok.apply_chat_template(msgs, tools=tools, tokenize=True, return_dict=False)
        for i in range(1, len(msgs)):
            assert render(msgs[:i], tools) + render(msgs[i:]) == whole
            head = tok.apply_chat_template(msgs[:i], tools=tools, tokenize=True, return_dict=False)
            tail = tok.apply_chat_template(msgs[i:], tokenize=True, return_dict=False)
            assert head + tail == whole_ids
    assert render(messages, tools, add_generation_prompt=True) == render(messages, tools) + "<|im_start|>assistant\n"


def test_chat_template_round_trips_and_marks_assistant_tokens(policy, conversation):
    messages, tools = conversation
    tok = policy.tokenizer
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert text == render(messages, tools)
    call = messages[2]["tool_calls"][0]["function"]
    assert f'<tool_call>{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>" in text
    enc = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    assert tok.decode(enc["input_ids"], skip_special_tokens=False) == text
    assistant = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    expected = "".join(render([m])[len("<|im_start|>assistant\n"):-1] for m in messages if m["role"] == "assistant")
    assert tok.decode(assistant, skip_special_tokens=False) == expected


def test_completions_end_at_eos_or_length(policy, conversation):
    assert isinstance(policy, Policy)
    requests = [GenerationRequest(messages=conversation[0][:k], tools=conversation[1]) for k in (2, 4, 6)] * 4
    for c in policy.generate(requests, SamplingParams(temperature=1.5, max_new_tokens=48, seed=0)):
        stopped = c.token_ids[-1] == policy.tokenizer.eos_token_id
        assert (c.finish_reason == "stop") == stopped
        assert stopped or len(c.token_ids) == 48
        assert policy.tokenizer.eos_token_id not in c.token_ids[:-1]
        assert len(c.logprobs) == len(c.token_ids) and c.version == policy.version
        assert c.text == policy.tokenizer.decode(c.token_ids[:-1] if stopped else c.token_ids,
                                                 skip_special_tokens=False)


def test_each_row_stops_at_its_first_stop_token(policy, conversation):
    request = GenerationRequest(messages=conversation[0][:2], tools=conversation[1])
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    free = policy.generate([request], greedy)[0].token_ids
    saved = policy.stop_ids
    policy.stop_ids = {free[3]}
    try:
        cut = policy.generate([request, request], greedy)
    finally:
        policy.stop_ids = saved
    first = free.index(free[3])
    assert all(c.token_ids == free[:first + 1] and c.finish_reason == "stop" for c in cut)
    assert cut[0].text == policy.tokenizer.decode(free[:first], skip_special_tokens=False)


def test_logprobs_match_a_fresh_forward_pass(policy, conversation):
    messages, tools = conversation
    requests = [GenerationRequest(messages=messages[:k], tools=tools) for k in (2, 4)]
    requests.append(GenerationRequest(prompt_ids=policy.prompt_ids(requests[0])[-7:]))
    completions = policy.generate(requests, SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=24, seed=3))
    for request, c in zip(requests, completions):
        prompt = policy.prompt_ids(request)
        with torch.no_grad():
            logits = policy.model(torch.tensor([prompt + c.token_ids])).logits[0].float()
        expected = logits[len(prompt) - 1:-1].log_softmax(-1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_batching_does_not_change_greedy_results(policy, conversation):
    messages, tools = conversation
    requests = [GenerationRequest(messages=messages[:k], tools=tools) for k in (2, 4, 6)]
    requests.append(GenerationRequest(prompt_ids=policy.prompt_ids(requests[0])[-5:]))
    assert len({len(policy.prompt_ids(r)) for r in requests}) == len(requests)
    greedy = SamplingParams(temperature=0, max_new_tokens=16)
    batched = policy.generate(requests, greedy)
    for request, together in zip(requests, batched):
        alone = policy.generate([request], greedy)[0]
        assert together.token_ids == alone.token_ids
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_same_seed_same_sample(policy, conversation):
    requests = [GenerationRequest(messages=conversation[0][:2], tools=conversation[1])] * 3
    sample = lambda seed: [c.token_ids for c in policy.generate(requests, SamplingParams(max_new_tokens=16, seed=seed))]
    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0]] * 64)
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, SamplingParams(top_p=0.5), gen).eq(0).all()
    picks = sample_next(logits, SamplingParams(top_p=0.99, temperature=3.0), gen)
    assert set(picks.tolist()) > {0}


def test_set_weights_changes_outputs_and_version(model_dir, conversation):
    policy = HFPolicy(model_dir, version=2)
    request = [GenerationRequest(messages=conversation[0][:2], tools=conversation[1])]
    greedy = SamplingParams(temperature=0, max_new_tokens=16)
    before = policy.generate(request, greedy)[0]
    gen = torch.Generator().manual_seed(1)
    noisy = {k: v + 0.2 * torch.randn(v.shape, generator=gen) for k, v in policy.state_dict().items()}
    policy.set_weights(noisy, version=3)
    after = policy.generate(request, greedy)[0]
    assert before.version == 2 and after.version == policy.version == 3
    assert after.token_ids != before.token_ids
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(policy.state_dict()[key], noisy[key])


def test_build_is_deterministic(corpus, model_dir, tmp_path):
    again = build_tiny_model(corpus, tmp_path / "again", **BUILD)
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    ours, theirs = load_file(model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    other = load_file(build_tiny_model(corpus, tmp_path / "other", **BUILD, seed=1) / "model.safetensors")
    assert not torch.equal(other["model.embed_tokens.weight"], ours["model.embed_tokens.weight"])
