"""bf16 autocast per forward, the LM head only where a loss needs it, and pi_old recomputed under bf16."""

from __future__ import annotations

import pytest
import torch

from toolgym.agent.trajectory import TokenSegment, Trajectory
from toolgym.policy.hf import load_causal_lm, load_tokenizer
from toolgym.policy.logprobs import token_logprobs
from toolgym.policy.microbatch import token_budget_chunks
from toolgym.policy.precision import use_bf16
from toolgym.rl.config import TrainerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.rl.trainer import Trainer
from toolgym.sft.data import sft_examples
from toolgym.sft.trainer import SFTConfig, collate, sft_loss, tokenize_example, train_sft


def _batch(tiny_dir, tasks, n=4):
    tokenizer = load_tokenizer(tiny_dir)
    examples = list(sft_examples([t for name in sorted(tasks) for t in tasks[name][:2]], seed=0))[:n]
    return examples, collate([tokenize_example(tokenizer, e) for e in examples], tokenizer.pad_token_id)


def test_selective_logprobs_equal_the_full_ones_where_asked_with_the_same_gradient(tiny_dir, tasks, one_thread):
    model = load_causal_lm(tiny_dir)
    _, batch = _batch(tiny_dir, tasks)
    where = batch["loss_mask"][:, 1:] > 0
    full = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    (full * where).sum().backward()
    expected = model.get_input_embeddings().weight.grad.clone()
    model.zero_grad()
    chosen = token_logprobs(model, batch["input_ids"], batch["attention_mask"], where=where)
    chosen.sum().backward()
    assert torch.allclose(chosen[where], full[where], atol=1e-5)
    assert bool((chosen[~where] == 0).all())
    assert torch.allclose(model.get_input_embeddings().weight.grad, expected, atol=1e-5)


def test_fp32_precision_never_autocasts_and_auto_follows_the_hardware():
    assert use_bf16("fp32", "cpu") is False
    assert use_bf16("bf16", "cpu") is True
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert use_bf16("auto", "cpu") is native


def test_bf16_sft_improves_the_saved_model_on_its_own_data(tiny_dir, tasks, tmp_path, one_thread):
    """The autocast trap: one context around the whole loop keeps serving the first step's bf16 weights, and the
    saved model gets worse on its training data while the logged loss falls. Per-forward autocast must improve it."""
    examples, batch = _batch(tiny_dir, tasks)
    with torch.no_grad():
        before = sft_loss(load_causal_lm(tiny_dir), batch, 0.0)[1].item()
    train_sft(tiny_dir, examples, tmp_path / "sft", SFTConfig(max_steps=12, lr=3e-3, batch_size=4, warmup_steps=1,
                                                              precision="bf16"), show_progress=False)
    with torch.no_grad():
        after = sft_loss(load_causal_lm(tmp_path / "sft"), batch, 0.0)[1].item()
    assert after < before - 0.5


def _groups(tiny_dir, tasks, noise: float) -> list[SampleGroup]:
    """Two groups of real SFT sequences whose behaviour logprobs are the model's fp32 ones plus `noise`-sized
    rounding error (what a bf16 sampler gives), rewards 1 and 0."""
    _, batch = _batch(tiny_dir, tasks)
    model = load_causal_lm(tiny_dir)
    with torch.no_grad():
        exact = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    gen = torch.Generator().manual_seed(0)
    trajectories = []
    for row in range(len(batch["input_ids"])):
        n = int(batch["attention_mask"][row].sum())
        mask = batch["loss_mask"][row, :n].tolist()
        logprobs = [0.0] + (exact[row, :n - 1] + noise * torch.randn(n - 1, generator=gen)).tolist()
        segment = TokenSegment(token_ids=batch["input_ids"][row, :n].tolist(), loss_mask=mask,
                               logprobs=[lp if m else 0.0 for lp, m in zip(logprobs, mask)], versions=[0] * n)
        trajectories.append(Trajectory(task_id=f"t{row // 2}", domain="d", segments=[segment],
                                       reward=float(row % 2)))
    return [SampleGroup(group_id=f"g{i}", task_id=f"t{i}", domain="d", trajectories=trajectories[2 * i:2 * i + 2])
            for i in range(len(trajectories) // 2)]


@pytest.mark.parametrize("old, clipped", [("rollout", True), ("recompute", False)])
def test_recomputed_pi_old_keeps_bf16_rounding_out_of_the_clip(tiny_dir, tasks, one_thread, old, clipped):
    groups = _groups(tiny_dir, tasks, noise=0.05)
    trainer = Trainer(tiny_dir, TrainerConfig(precision="bf16", old_logprobs=old, lr=1e-3))
    stats = trainer.step(groups)
    assert (stats["clip_fraction"] > 0.2) is clipped
    if old == "recompute":
        assert stats["behaviour_drift"] > 1e-3


def test_auto_recomputes_only_under_bf16(tiny_dir):
    assert Trainer(tiny_dir, TrainerConfig(precision="bf16")).recomputes_old
    assert not Trainer(tiny_dir, TrainerConfig(precision="fp32")).recomputes_old


def test_a_right_padded_batch_gives_each_row_its_unpadded_logprobs(tiny_dir, tasks, one_thread):
    model = load_causal_lm(tiny_dir)
    _, batch = _batch(tiny_dir, tasks)
    together = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    for row in range(len(batch["input_ids"])):
        n = int(batch["attention_mask"][row].sum())
        alone = token_logprobs(model, batch["input_ids"][row:row + 1, :n], torch.ones(1, n, dtype=torch.long))
        assert torch.allclose(together[row, :n - 1], alone[0], atol=1e-5)


@pytest.mark.parametrize("lengths, budget, rows", [([5, 300, 40, 41, 7, 299], 600, None), ([9] * 10, 100, 3),
                                                    ([1000, 10], 500, None)])
def test_token_budget_chunks_cover_every_row_once_within_the_budget(lengths, budget, rows):
    chunks = token_budget_chunks(lengths, budget, rows)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for chunk in chunks:
        assert len(chunk) == 1 or len(chunk) * max(lengths[i] for i in chunk) <= budget
        assert rows is None or len(chunk) <= rows


def test_sft_micro_batches_give_the_gradient_of_the_whole_batch(tiny_dir, tasks, one_thread):
    from toolgym.sft.trainer import _accumulate

    examples, _ = _batch(tiny_dir, tasks, n=6)
    tokenizer = load_tokenizer(tiny_dir)
    rows = [tokenize_example(tokenizer, e) for e in examples]
    grads = []
    for budget in (10**6, max(len(r[0]) for r in rows)):
        model = load_causal_lm(tiny_dir)
        loss, _ = _accumulate(model, rows, tokenizer.pad_token_id,
                              SFTConfig(micro_batch_tokens=budget, context_loss_weight=0.25, precision="fp32"), False)
        grads.append((loss, model.get_input_embeddings().weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
