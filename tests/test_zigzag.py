"""Zig-Zag attention on tiny random Qwen2 and Llama models: equivalence below the window, a dense-mask reference
above it, the bounded KV cache during long decoding, persistence, calibration, recovery fine-tune and the CLI."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, Qwen2Config
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.models.recovery import (
    RecoveryConfig,
    pack_sequences,
    recover,
    recovery_loss,
)
from toolgym.models.zigzag import (
    ZigZagConfig,
    layer_importance,
    load_zigzag,
    sparse_layers,
    to_zigzag,
)
from toolgym.models.zigzag_attention import SinkWindow, sink_window_attention
from toolgym.sft.trainer import collate

B, W = 4, 12  # sink and local tokens: full attention up to 16 tokens
ZZ = ZigZagConfig(sink_tokens=B, local_tokens=W, block_size=8)
VOCAB = 300

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    cfg = cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=None, eos_token_id=None,
              pad_token_id=0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, so attention patterns are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model


def converted(model: torch.nn.Module, cfg: ZigZagConfig = ZZ) -> torch.nn.Module:
    return to_zigzag(copy.deepcopy(model), cfg)


def ids(n: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def allowed(n: int, sink: int = B, window: int = W) -> torch.Tensor:
    """The sink + window rule as a dense (n, n) mask: the reference everything is checked against."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    return (j <= i) & ((j < sink) | (i - j < window))


def dense_reference_attention(q, k, v, mask):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v


def dense_reference_model(model: torch.nn.Module, layers: list[int]) -> torch.nn.Module:
    """A copy of the full-attention model whose `layers` attend through an explicit dense sink + window mask."""
    ref = copy.deepcopy(model)
    for i in layers:
        attn = ref.model.layers[i].self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb

        def forward(hidden_states, position_embeddings, attention_mask=None, cache=None, attn=attn,
                    rope=rope, **kwargs):
            b, n, _ = hidden_states.shape
            shape = (b, n, -1, attn.head_dim)
            q = attn.q_proj(hidden_states).view(shape).transpose(1, 2)
            k = attn.k_proj(hidden_states).view(shape).transpose(1, 2)
            v = attn.v_proj(hidden_states).view(shape).transpose(1, 2)
            q, k = rope(q, k, *position_embeddings)
            out = dense_reference_attention(q, k, v, allowed(n))
            return attn.o_proj(out.transpose(1, 2).reshape(b, n, -1)), None

        attn.forward = forward
    return ref


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    return tiny(request.param)


@torch.no_grad()
def test_identical_to_full_attention_below_the_window(model):
    zz = converted(model)
    assert sparse_layers(zz) == [1, 3]
    x = ids(B + W - 1)
    torch.testing.assert_close(zz(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
    prompt = x[:, :5]
    kw = dict(max_new_tokens=B + W - 5, do_sample=False, output_logits=True, return_dict_in_generate=True)
    ref, out = model.generate(prompt, **kw), zz.generate(prompt, **kw)
    assert torch.equal(out.sequences, ref.sequences)
    torch.testing.assert_close(torch.stack(out.logits), torch.stack(ref.logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 16, 17, 50])
@pytest.mark.parametrize("block,chunk", [(1, 8192), (5, 8192), (8, 16), (128, 8192)])
def test_tiled_kernel_matches_dense_reference(n, block, chunk):
    g = torch.Generator().manual_seed(n)
    q, k, v = torch.randn(2, 4, n, 8, generator=g), torch.randn(2, 2, n, 8, generator=g), torch.randn(2, 2, n, 8,
                                                                                                        generator=g)
    out = sink_window_attention(q, k, v, SinkWindow(B, W, block), n, max_chunk_tokens=chunk)
    torch.testing.assert_close(out, dense_reference_attention(q, k, v, allowed(n)).transpose(1, 2),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("total,new", [(40, 1), (40, 3), (40, 9), (40, 24), (17, 1), (20, 2)])
@pytest.mark.parametrize("block", [1, 4, 8])
def test_tiled_kernel_on_an_evicted_cache_layout(total, new, block):
    """The newest `new` queries against what a SinkWindowLayer hands over: sinks + last window - 1 + new keys."""
    g = torch.Generator().manual_seed(total * 100 + new)
    q, k, v = torch.randn(1, 4, total, 8, generator=g), torch.randn(1, 2, total, 8, generator=g), torch.randn(
        1, 2, total, 8, generator=g)
    seen = total - new
    keep = torch.cat([torch.arange(B), torch.arange(max(B, seen - W + 1), total)]) if seen > B + W - 1 else \
        torch.arange(total)
    out = sink_window_attention(q[..., seen:, :], k[..., keep, :], v[..., keep, :], SinkWindow(B, W, block), total)
    ref = dense_reference_attention(q, k, v, allowed(total)).transpose(1, 2)[:, seen:]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_above_the_window_sparse_layers_differ_and_match_the_dense_reference(model):
    zz = converted(model)
    x = ids(50)
    full, sparse = model(x).logits, zz(x).logits
    torch.testing.assert_close(sparse[:, :B + W], full[:, :B + W], rtol=1e-5, atol=1e-5)
    assert (sparse[:, B + W:] - full[:, B + W:]).abs().amax(-1).min() > 1e-3  # every later position changes
    torch.testing.assert_close(sparse, dense_reference_model(model, [1, 3])(x).logits, rtol=1e-4, atol=1e-4)


def _cached_lengths(cache: DynamicCache) -> list[int]:
    return [layer.keys.shape[-2] for layer in cache.layers]


@pytest.mark.parametrize("layers", [[1, 3], [0, 2]])
@torch.no_grad()
def test_bounded_cache_and_incremental_decoding_match_prefill(model, layers):
    zz = converted(model, ZZ.model_copy(update={"sparse_layers": layers}))
    prompt = ids(10, batch=1)
    cache = DynamicCache(config=zz.config)
    logits = [zz(prompt, cache=cache, use_cache=True).logits]
    seq = prompt
    for _ in range(200):
        nxt = logits[-1][:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], 1)
        logits.append(zz(nxt, cache=cache, use_cache=True).logits)
        lengths = _cached_lengths(cache)
        assert all(lengths[i] <= B + W for i in layers)
        assert all(lengths[i] == seq.shape[1] for i in range(4) if i not in layers)
    assert cache.get_seq_length() == seq.shape[1]
    incremental = torch.cat(logits, 1)
    prefill = zz(seq).logits
    torch.testing.assert_close(incremental, prefill, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(prefill, dense_reference_model(model, layers)(seq).logits, rtol=1e-4, atol=1e-4)
    chunked, cache = [], DynamicCache(config=zz.config)
    for c0 in range(0, seq.shape[1], 7):  # multi-token queries against an already-evicted cache
        chunked.append(zz(seq[:, c0:c0 + 7], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(chunked, 1), prefill, rtol=1e-4, atol=1e-4)
    out = zz.generate(prompt, max_new_tokens=200, do_sample=False, return_dict_in_generate=True)
    assert torch.equal(out.sequences, seq)
    lengths = _cached_lengths(out.cache)
    assert [lengths[i] for i in layers] == [B + W - 1] * len(layers)
    assert all(lengths[i] == out.sequences.shape[1] - 1 for i in range(4) if i not in layers)


@torch.no_grad()
def test_save_load_round_trip_keeps_the_zigzag_layers(tmp_path):
    base = tiny("qwen2")
    zz = converted(base, ZZ.model_copy(update={"sparse_layers": [0, 2]}))
    zz.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["zigzag"]["sparse_layers"] == [0, 2]
    loaded = load_zigzag(tmp_path).eval()
    assert sparse_layers(loaded) == [0, 2]
    assert ZigZagConfig.model_validate(loaded.config.zigzag).rule() == SinkWindow(B, W, 8)
    x = ids(40)
    torch.testing.assert_close(loaded(x).logits, zz(x).logits)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # without load_zigzag: full attention
    torch.testing.assert_close(plain(x).logits, base(x).logits)
    with pytest.raises(ValueError, match="no zigzag settings"):
        base.save_pretrained(tmp_path / "full")
        load_zigzag(tmp_path / "full")


@torch.no_grad()
def test_calibrated_selection_takes_the_least_important_half():
    model = tiny("llama")
    model.model.layers[2].self_attn.o_proj.weight.zero_()  # layer 2's attention contributes nothing
    x = ids(48, batch=1)
    scores = layer_importance(model, x, ZZ)
    assert len(scores) == 4 and all(s >= 0 for s in scores)
    assert scores[2] == pytest.approx(0.0, abs=1e-9) and min(scores[i] for i in (0, 1, 3)) > 1e-6
    assert sparse_layers(model) == []  # calibration leaves the model as it was
    expected = sorted(sorted(range(4), key=scores.__getitem__)[:2])
    zz = to_zigzag(model, ZZ.model_copy(update={"selection": "calibrated"}), calibration_ids=x)
    assert sparse_layers(zz) == expected and 2 in expected
    assert zz.config.zigzag["sparse_layers"] == expected
    with pytest.raises(ValueError, match="more than"):
        layer_importance(model, x[:, :B + W], ZZ)
    with pytest.raises(ValueError, match="calibration_ids"):
        to_zigzag(tiny("llama"), ZigZagConfig(selection="calibrated"))


def test_left_padding_is_rejected_right_padding_is_not():
    zz = converted(tiny("qwen2"))
    x = ids(20)
    mask = torch.ones_like(x)
    mask[0, :3] = 0
    with pytest.raises(ValueError, match="left padding"):
        zz(x, attention_mask=mask)
    zz(x, attention_mask=mask.flip(-1))


def test_recovery_distillation_lowers_the_kl():
    teacher = tiny("qwen2")
    student = converted(teacher)
    seqs = pack_sequences([ids(60, batch=1, seed=s)[0].tolist() for s in range(4)], 48, sep_id=0)
    cfg = RecoveryConfig(steps=12, lr=3e-4, batch_size=2, warmup_steps=0)
    batch = collate([(s, [1] * len(s)) for s in seqs], 0)
    with torch.no_grad():
        before = recovery_loss(student, batch, cfg, teacher).item()
    teacher_logits = teacher(batch["input_ids"]).logits.detach()
    metrics = recover(student, seqs, cfg, teacher, show_progress=False)
    with torch.no_grad():
        after = recovery_loss(student, batch, cfg, teacher).item()
    assert len(metrics) == 12 and before > 1e-3
    assert after < 0.5 * before
    torch.testing.assert_close(teacher(batch["input_ids"]).logits, teacher_logits)  # the teacher is not trained
    assert sparse_layers(student) == [1, 3]


def test_recovery_lm_objective_lowers_the_loss():
    student = converted(tiny("llama"))
    seqs = pack_sequences([ids(60, batch=1, seed=s)[0].tolist() for s in range(2)], 40)
    cfg = RecoveryConfig(objective="lm", steps=10, lr=3e-3, batch_size=3, warmup_steps=0)
    batch = collate([(s, [1] * len(s)) for s in seqs], 0)
    with torch.no_grad():
        before = recovery_loss(student, batch, cfg).item()
    recover(student, seqs, cfg, show_progress=False)
    with torch.no_grad():
        assert recovery_loss(student, batch, cfg).item() < before - 0.5
    with pytest.raises(ValueError, match="teacher"):
        recovery_loss(student, batch, RecoveryConfig())


@torch.no_grad()
def test_a_cache_filled_by_full_attention_is_refused():
    base = tiny("qwen2")
    cache = DynamicCache(config=base.config)
    base(ids(20), cache=cache, use_cache=True)
    with pytest.raises(TypeError, match="empty DynamicCache slot"):
        converted(base)(ids(1), cache=cache, use_cache=True)


def test_cli_convert_and_finetune(tmp_path):
    from toolgym.policy.tiny import train_tokenizer

    text = "the quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. " * 30
    tok = train_tokenizer([text], vocab_size=280, model_max_length=1024)
    src = tmp_path / "base"
    model = tiny("qwen2")
    model.save_pretrained(src)
    tok.save_pretrained(src)
    (tmp_path / "data.jsonl").write_text(json.dumps({"text": text}) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["zigzag", "convert", str(src), "--out", str(tmp_path / "zz"), "--sink", "4", "--local",
                              "12", "--select", "calibrated", "--calib", str(tmp_path / "data.jsonl")])
    assert res.exit_code == 0, res.output
    chosen = load_zigzag(tmp_path / "zz").config.zigzag["sparse_layers"]
    assert len(chosen) == 2 and "importance" in res.output
    res = runner.invoke(app, ["zigzag", "finetune", str(tmp_path / "zz"), "--data", str(tmp_path / "data.jsonl"),
                              "--out", str(tmp_path / "ft"), "--steps", "3", "--max-len", "64", "--lr", "1e-3"])
    assert res.exit_code == 0, res.output
    assert sparse_layers(load_zigzag(tmp_path / "ft")) == chosen
    assert len((tmp_path / "ft" / "recovery_metrics.jsonl").read_text().splitlines()) == 3
