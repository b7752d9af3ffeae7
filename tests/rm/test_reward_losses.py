"""Reward-model losses and re-balancing helpers against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crs.rm.reward_losses import absolute_loss, absolute_loss_weights, pad_groups, ranking_loss, undersample_by_bins


def nll(diff: float) -> float:
    """-log sigmoid(diff), computed by hand."""
    return math.log(1.0 + math.exp(-diff))


def test_ranking_loss_k2_is_logistic_loss_of_the_gap():
    loss = ranking_loss(torch.tensor([2.0, 0.5]), [2])
    assert loss.item() == pytest.approx(nll(1.5))


def test_ranking_loss_k4_averages_all_six_pairs():
    r = [3.0, 1.0, 2.0, 0.0]
    expected = np.mean([nll(r[i] - r[j]) for i in range(4) for j in range(i + 1, 4)])
    assert ranking_loss(torch.tensor(r), [4]).item() == pytest.approx(expected)


def test_ranking_loss_averages_per_prompt_then_over_prompts():
    # Prompt A has 1 pair, prompt B has 3: a pooled mean would weight B three times.
    a, b = [1.0, 0.0], [0.0, 1.0, 2.0]
    loss_a = nll(1.0)
    loss_b = np.mean([nll(0.0 - 1.0), nll(0.0 - 2.0), nll(1.0 - 2.0)])
    loss = ranking_loss(torch.tensor(a + b), [2, 3])
    assert loss.item() == pytest.approx((loss_a + loss_b) / 2)


def test_ranking_loss_ignores_padded_replies_whatever_they_hold():
    flat = ranking_loss(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0]), [2, 3])
    padded = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 2.0]])
    assert ranking_loss(padded, [2, 3]).item() == pytest.approx(flat.item())
    padded[0, 2] = 1e9
    assert ranking_loss(padded, [2, 3]).item() == pytest.approx(flat.item())


def test_ranking_loss_l2_term_is_mean_square_of_real_rewards():
    r = torch.tensor([2.0, 0.5, 1.0, -1.0])
    base = ranking_loss(r, [2, 2]).item()
    with_l2 = ranking_loss(r, [2, 2], l2_coef=0.1).item()
    assert with_l2 - base == pytest.approx(0.1 * (4 + 0.25 + 1 + 1) / 4)


def test_ranking_loss_margin_comes_from_score_gaps():
    r, s = torch.tensor([1.0, 0.0]), torch.tensor([0.9, 0.4])
    assert ranking_loss(r, [2], scores=s, margin_scale=2.0).item() == pytest.approx(nll(1.0 - 2.0 * 0.5))
    # Replies without scores (NaN) get no margin.
    nan = torch.tensor([float("nan"), float("nan")])
    assert ranking_loss(r, [2], scores=nan, margin_scale=2.0).item() == pytest.approx(nll(1.0))


def test_ranking_loss_skips_tied_scores():
    r, s = torch.tensor([0.0, 5.0, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    # (0,1) is a tie and left out; (0,2) and (1,2) remain.
    expected = np.mean([nll(0.0 - -1.0), nll(5.0 - -1.0)])
    assert ranking_loss(r, [3], scores=s).item() == pytest.approx(expected)


def test_ranking_loss_gradient_raises_the_better_reply():
    r = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    ranking_loss(r, [3]).backward()
    assert r.grad[0] < 0 < r.grad[2]  # descent pushes the best up and the worst down


def test_pad_groups_keeps_order_and_masks():
    padded, mask = pad_groups(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), [3, 2], fill=-7.0)
    assert padded.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, -7.0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    with pytest.raises(ValueError, match="add up to"):
        pad_groups(torch.tensor([1.0, 2.0]), [3])


def test_absolute_bce_matches_hand_values():
    logits, targets = torch.tensor([0.0, 1.0]), torch.tensor([0.25, 1.0])
    expected = (math.log(2.0) + math.log(1 + math.exp(-1.0))) / 2
    assert absolute_loss(logits, targets, "bce").item() == pytest.approx(expected)


def test_absolute_mse_is_on_the_sigmoid():
    logits, targets = torch.tensor([0.0, 0.0]), torch.tensor([0.25, 1.0])
    assert absolute_loss(logits, targets, "mse").item() == pytest.approx((0.25**2 + 0.5**2) / 2)


def test_absolute_loss_weighted_mean():
    logits, targets = torch.tensor([0.0, 0.0]), torch.tensor([0.25, 1.0])
    weights = torch.tensor([3.0, 1.0])
    assert absolute_loss(logits, targets, "mse", weights).item() == pytest.approx((3 * 0.0625 + 0.25) / 4)
    with pytest.raises(ValueError, match="unknown absolute loss"):
        absolute_loss(logits, targets, "hinge")


def test_absolute_loss_weights_lift_the_low_bucket():
    targets = torch.tensor([0.1, 0.4, 0.8, 0.9, 1.0])  # 0.4 is at the threshold: counts as low
    weights = absolute_loss_weights(targets, threshold=0.4, strength=0.5)
    assert weights.tolist() == pytest.approx([1.25, 1.25, 1.0, 1.0, 1.0])  # 0.5 * 5 / 2
    assert absolute_loss_weights(targets, 0.4, 0.0).tolist() == [1.0] * 5
    assert absolute_loss_weights(torch.tensor([0.9, 1.0]), 0.4, 2.0).tolist() == [1.0, 1.0]


def test_undersample_caps_big_bins_and_keeps_small_ones():
    scores = np.array([0.1, 0.2] + [0.9] * 10 + [1.0])  # low bin 2 rows, high bin 11 (1.0 included)
    kept = undersample_by_bins(scores, bins=2, max_ratio=2.0, rng=np.random.default_rng(0))
    assert {0, 1} <= set(kept.tolist())
    assert len(kept) == 2 + 4  # the high bin keeps ceil(2.0 * 2)
    assert list(kept) == sorted(set(kept.tolist()))
    again = undersample_by_bins(scores, bins=2, max_ratio=2.0, rng=np.random.default_rng(0))
    assert kept.tolist() == again.tolist()  # seeded
    everything = undersample_by_bins(scores, bins=2, max_ratio=100.0, rng=np.random.default_rng(0))
    assert everything.tolist() == list(range(len(scores)))
