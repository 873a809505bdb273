"""Copy rows: each row repeats a span of itself, the loss mask covers exactly the tokens only copying predicts, the
same seed gives the same rows, and mixing them into SFT adds their loss without changing the episode batches."""

from __future__ import annotations

import random

import pytest
import torch

from toolgym.sft.copy_rows import CopyRowSpec, copy_batch, copy_loss
from toolgym.sft.data import sft_example
from toolgym.sft.trainer import SFTConfig, train_sft


def _repeat(row: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """(start, span) of the masked repeat: masked positions are start+1 .. start+span-1."""
    masked = mask.nonzero().flatten().tolist()
    start = masked[0] - 1
    return start, masked[-1] - start + 1


def test_every_masked_token_repeats_the_token_one_span_earlier():
    spec = CopyRowSpec(vocab_size=500, length=48, symbols=24, min_span=5)
    ids, mask = copy_batch(spec, 40, random.Random(3))
    assert ids.shape == mask.shape == (40, 48)
    assert ((ids >= spec.first_id) & (ids < spec.vocab_size)).all()
    spans = set()
    for row, row_mask in zip(ids, mask):
        start, span = _repeat(row, row_mask)
        assert spec.min_span <= span <= spec.length // 2 - 1
        assert row_mask.sum() == span - 1 and row_mask[start:start + span].tolist() == [0] + [1] * (span - 1)
        assert torch.equal(row[start:start + span], row[start - span:start])
        assert len(set(row.tolist())) <= spec.symbols
        spans.add(span)
    assert len(spans) > 5


def test_the_same_seed_gives_the_same_rows_and_another_seed_others():
    spec = CopyRowSpec(vocab_size=300)
    first, again, other = (copy_batch(spec, 8, random.Random(s)) for s in (1, 1, 2))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("bad", [dict(length=10, min_span=5), dict(vocab_size=40, symbols=64), dict(min_span=0)])
def test_impossible_row_shapes_are_refused(bad):
    with pytest.raises(ValueError):
        CopyRowSpec(**{"vocab_size": 500, **bad})


def test_copy_loss_scores_only_the_masked_tokens(tiny_dir):
    from toolgym.policy.hf import load_causal_lm

    model = load_causal_lm(tiny_dir).eval()
    ids, mask = copy_batch(CopyRowSpec(model.config.vocab_size, length=32, min_span=4), 4, random.Random(0))
    with torch.no_grad():
        loss, accuracy = copy_loss(model, ids, mask)
        logits = model(input_ids=ids).logits[:, :-1].log_softmax(-1)
    picked = -logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert loss.item() == pytest.approx((picked * mask[:, 1:]).sum().item() / mask[:, 1:].sum().item(), rel=1e-5)
    assert 0.0 <= accuracy <= 1.0


def test_sft_with_copy_rows_trains_on_the_same_episode_batches_plus_the_rows(tasks, tiny_dir, tmp_path, one_thread):
    examples = [sft_example(t, seed=i, fail_p=0.0, plan_p=0.0) for i, t in enumerate(
        t for name in sorted(tasks) for t in tasks[name][:2])]
    plain = train_sft(tiny_dir, examples, tmp_path / "plain", SFTConfig(max_steps=3, batch_size=2, lr=0.0),
                      show_progress=False)
    mixed = train_sft(tiny_dir, examples, tmp_path / "mixed", SFTConfig(max_steps=3, batch_size=2, lr=0.0,
                                                                         copy_rows=4), show_progress=False)
    for a, b in zip(plain, mixed):
        assert "copy_loss" not in a and b["copy_loss"] > 0
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["tokens"] == a["tokens"]
        assert b["total_loss"] == pytest.approx(a["total_loss"] + b["copy_loss"], rel=1e-5)
