"""GSPO / GRPO losses and group advantages: hand-computed values, masking, clipping and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from toolgym.rl.losses import LOSSES, group_advantages, grpo_loss, gspo_loss

# B=2, T=3. Row 0: own tokens 0 and 1, log-ratios 0.1 and 0.3 (token 2 is a masked tool token).
# Row 1: all three tokens own, log-ratios -0.3, 0, 0.
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.2, -0.9]], dtype=torch.float64)
DIFF = torch.tensor([[0.1, 0.3, 5.0], [-0.3, 0.0, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
ADV = torch.tensor([1.0, -2.0], dtype=torch.float64)


def _leaf(values: torch.Tensor) -> torch.Tensor:
    return values.clone().requires_grad_(True)


def test_group_advantages_use_population_std():
    # mean 0.25; population var = (0.75^2 + 3 * 0.25^2) / 4 = 0.1875; std = 0.4330127
    # -> 0.75 / 0.4330127 = 1.7320508, -0.25 / 0.4330127 = -0.5773503 (sample std would give 1.5 and -0.5)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), eps=0.0)
    assert torch.allclose(adv, torch.tensor([1.7320508, -0.5773503, -0.5773503, -0.5773503]))
    assert torch.allclose(group_advantages(torch.tensor([1, 0, 0, 1])), torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)


def test_group_advantages_of_equal_rewards_are_exactly_zero():
    assert torch.equal(group_advantages(torch.tensor([0.1, 0.1, 0.1])), torch.zeros(3))
    assert torch.equal(group_advantages(torch.tensor([1.0])), torch.zeros(1))
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2))


def test_gspo_hand_value_unclipped():
    # s_0 = exp((0.1 + 0.3) / 2) = exp(0.2) = 1.2214028; s_1 = exp((-0.3 + 0 + 0) / 3) = exp(-0.1) = 0.9048374
    # wide clip range, so loss = -(1.2214028 * 1 + 0.9048374 * -2) / 2 = 0.2941360
    loss, stats = gspo_loss(OLD + DIFF, OLD, ADV, MASK, eps_low=0.5, eps_high=0.5)
    assert loss.item() == pytest.approx(0.2941360, abs=1e-6)
    assert stats["clip_fraction"] == 0.0
    assert stats["ratio_max"] == pytest.approx(1.2214028) and stats["ratio_min"] == pytest.approx(0.9048374)
    assert stats["ratio_mean"] == pytest.approx((1.2214028 + 0.9048374) / 2)


def test_gspo_hand_value_clipped_with_default_eps():
    # row 0: A > 0, s = 1.2214 > 1 + 4e-4 -> min(1.2214, 1.0004) = 1.0004
    # row 1: A < 0, s = 0.9048 < 1 - 3e-4 -> min(-1.8097, 0.9997 * -2 = -1.9994) = -1.9994
    # loss = -(1.0004 - 1.9994) / 2 = 0.4995; both sequences clipped
    loss, stats = gspo_loss(OLD + DIFF, OLD, ADV, MASK)
    assert loss.item() == pytest.approx(0.4995, abs=1e-9)
    assert stats["clip_fraction"] == 1.0


def test_grpo_hand_value():
    # token ratios: row 0 exp(0.1) = 1.1051709, exp(0.3) = 1.3498588; row 1 exp(-0.3) = 0.7408182, 1, 1; eps = 0.2
    # row 0 (A=1):  min(1.1051709, 1.1051709) = 1.1051709, min(1.3498588, 1.2) = 1.2 -> mean 1.1525855
    # row 1 (A=-2): min(-1.4816364, 0.8 * -2 = -1.6) = -1.6, -2, -2 -> mean -1.8666667
    # loss = -(1.1525855 - 1.8666667) / 2 = 0.3570406; 2 of 5 own tokens clipped
    loss, stats = grpo_loss(OLD + DIFF, OLD, ADV, MASK, eps=0.2)
    assert loss.item() == pytest.approx(0.3570406, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(0.4)
    assert stats["ratio_max"] == pytest.approx(1.3498588) and stats["ratio_min"] == pytest.approx(0.7408182)
    assert stats["ratio_mean"] == pytest.approx((1.1051709 + 1.3498588 + 0.7408182 + 2) / 5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_tokens_change_nothing(name):
    loss_fn = LOSSES[name]
    small = OLD + 1e-3 * DIFF  # ratios inside both default trust regions, so every own token has a gradient
    first = _leaf(small)
    loss_a, stats_a = loss_fn(first, OLD, ADV, MASK)
    loss_a.backward()
    changed = small.clone()
    changed[0, 2] = -math.inf
    second = _leaf(changed)
    loss_b, stats_b = loss_fn(second, OLD, ADV, MASK)
    loss_b.backward()
    assert loss_a.item() == loss_b.item() and stats_a == stats_b
    assert torch.equal(first.grad, second.grad)
    assert first.grad[0, 2] == 0.0 and first.grad[0, :2].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_rows_are_left_out_and_all_empty_gives_zero_with_grad(name):
    loss_fn = LOSSES[name]
    padded_logprobs = torch.cat([OLD + DIFF, torch.full((1, 3), -3.0, dtype=torch.float64)])
    padded_old = torch.cat([OLD, torch.zeros(1, 3, dtype=torch.float64)])
    padded_mask = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    padded_adv = torch.cat([ADV, torch.tensor([10.0], dtype=torch.float64)])
    loss, _ = loss_fn(padded_logprobs, padded_old, padded_adv, padded_mask)
    reference, _ = loss_fn(OLD + DIFF, OLD, ADV, MASK)
    assert loss.item() == pytest.approx(reference.item())
    logprobs = _leaf(OLD + DIFF)
    empty, stats = loss_fn(logprobs, OLD, ADV, torch.zeros_like(MASK))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert torch.equal(logprobs.grad, torch.zeros_like(logprobs))
    assert stats["clip_fraction"] == 0.0


def _gspo_grad(log_ratio: float, advantage: float) -> torch.Tensor:
    old = torch.zeros(1, 2, dtype=torch.float64)
    logprobs = _leaf(torch.full((1, 2), log_ratio, dtype=torch.float64))
    loss, _ = gspo_loss(logprobs, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 2))
    loss.backward()
    return logprobs.grad


def test_gspo_clipping_zeroes_the_gradient_outside_the_trust_region():
    # defaults: trust region [1 - 3e-4, 1 + 4e-4]; log(1 + 4e-4) = 3.9992e-4
    assert torch.equal(_gspo_grad(1e-3, 1.0), torch.zeros(1, 2))  # s above 1 + eps_high, A > 0: clipped
    assert torch.equal(_gspo_grad(-1e-3, -1.0), torch.zeros(1, 2))  # s below 1 - eps_low, A < 0: clipped
    assert _gspo_grad(1e-4, 1.0).abs().min() > 0  # inside the region
    assert _gspo_grad(-1e-4, -1.0).abs().min() > 0
    # PPO's pessimistic min keeps the gradient when the ratio moved against the advantage (s low, A > 0)
    assert _gspo_grad(-1e-3, 1.0).abs().min() > 0


def test_grpo_clipping_is_per_token():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logprobs = _leaf(torch.tensor([[0.5, 0.05]], dtype=torch.float64))  # ratios 1.65 (clipped) and 1.05 (inside)
    loss, stats = grpo_loss(logprobs, old, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2))
    loss.backward()
    assert logprobs.grad[0, 0] == 0.0 and logprobs.grad[0, 1] != 0.0
    assert stats["clip_fraction"] == 0.5


def test_gspo_gradient_matches_the_analytic_form():
    # unclipped: loss = -1/B sum_i A_i s_i, s_i = exp(sum_t m_it d_it / |m_i|)
    # -> d loss / d logp_it = -A_i s_i m_it / (B |m_i|)
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    diff = 0.1 * torch.randn(3, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 1, 0, 1]])
    adv = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    logprobs = _leaf(old + diff)
    loss, stats = gspo_loss(logprobs, old, adv, mask, eps_low=10.0, eps_high=10.0)
    loss.backward()
    lengths = mask.sum(dim=1, keepdim=True)
    ratio = torch.exp((diff * mask).sum(dim=1, keepdim=True) / lengths)
    expected = -adv[:, None] * ratio * mask / (3 * lengths)
    assert stats["clip_fraction"] == 0.0
    assert torch.allclose(logprobs.grad, expected)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        gspo_loss(OLD, OLD, torch.ones(3), MASK)
    with pytest.raises(ValueError):
        grpo_loss(OLD, OLD[:, :2], ADV, MASK)
