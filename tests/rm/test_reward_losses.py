"""Reward-model losses and re-balancing helpers against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crs.config import RewardModelConfig
from crs.rm.reward_losses import (
    absolute_loss,
    absolute_loss_weights,
    batch_pearson,
    disentangled_terms,
    length_covariance,
    pad_groups,
    ranking_loss,
    undersample_by_bins,
)


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


# --------------------------------------------------------------------------- the disentangled RM's terms


def test_batch_pearson_and_length_covariance_by_hand_with_tied_lengths():
    values, lengths = [1.0, 3.0, 2.0, 6.0], [10.0, 10.0, 20.0, 40.0]  # two replies of the same length
    mean_v, mean_l = sum(values) / 4, sum(lengths) / 4  # 3.0, 20.0
    cov = sum((v - mean_v) * (x - mean_l) for v, x in zip(values, lengths)) / 4  # (20 + 0 + 0 + 60) / 4 = 20
    sd_v = math.sqrt(sum((v - mean_v) ** 2 for v in values) / 4)  # sqrt(14 / 4)
    sd_l = math.sqrt(sum((x - mean_l) ** 2 for x in lengths) / 4)  # sqrt(600 / 4)
    got_r = batch_pearson(torch.tensor(values), torch.tensor(lengths)).item()
    assert got_r == pytest.approx(cov / (sd_v * sd_l), rel=1e-6)
    assert got_r == pytest.approx(np.corrcoef(values, lengths)[0, 1], rel=1e-6)
    assert length_covariance(torch.tensor(values), torch.tensor(lengths)).item() == pytest.approx(cov / sd_l, rel=1e-6)
    # the covariance is the correlation times the values' own spread, so it scales with them; the correlation does not
    assert length_covariance(torch.tensor(values) * 3, torch.tensor(lengths)).item() == pytest.approx(3 * cov / sd_l)
    assert batch_pearson(torch.tensor(values) * 3, torch.tensor(lengths)).item() == pytest.approx(got_r, rel=1e-6)


def test_length_terms_are_zero_with_a_finite_gradient_where_length_or_values_say_nothing():
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for term in (batch_pearson, length_covariance):
        assert term(values, torch.tensor([5.0, 5.0, 5.0])).item() == 0.0  # every reply as long: no length signal
        assert term(values[:1], torch.tensor([5.0])).item() == 0.0  # one reply
        constant = torch.zeros(3, requires_grad=True)
        out = term(constant, torch.tensor([1.0, 2.0, 4.0]))
        out.backward()
        assert out.item() == 0.0 and torch.isfinite(constant.grad).all()


def test_disentangled_terms_and_their_weighted_total_by_hand():
    heads = torch.tensor([[1.0, 0.5], [0.0, 0.2], [2.0, 1.5], [0.5, -0.5]])  # [quality, length], 2 prompts of K=2
    lengths = torch.tensor([30.0, 10.0, 50.0, 20.0])
    weight = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # w_q . w_l = 0.5 - 2 + 0 = -1.5
    quality, length = heads[:, 0].tolist(), heads[:, 1].tolist()
    summed = [q + x for q, x in zip(quality, length)]
    ranking = (nll(summed[0] - summed[1]) + nll(summed[2] - summed[3])) / 2
    length_r = float(np.corrcoef(length, lengths.tolist())[0, 1])
    quality_cov = abs(float(np.corrcoef(quality, lengths.tolist())[0, 1]) * np.std(quality))
    terms = disentangled_terms(heads, [2, 2], lengths, weight)
    assert terms.ranking.item() == pytest.approx(ranking, rel=1e-6)
    assert terms.length_correlation.item() == pytest.approx(length_r, rel=1e-6)
    assert terms.quality_covariance.item() == pytest.approx(quality_cov, rel=1e-6)
    assert terms.orthogonality.item() == pytest.approx(1.5)
    rm = RewardModelConfig(
        loss="disentangled",
        disentangled_length_weight=0.5,
        disentangled_quality_weight=2.0,
        disentangled_orthogonality_weight=0.1,
    )
    expected = ranking - 0.5 * length_r + 2.0 * quality_cov + 0.1 * 1.5
    assert terms.total(rm).item() == pytest.approx(expected, rel=1e-6)
    assert terms.as_metrics() == pytest.approx(
        {
            "loss_ranking": ranking,
            "loss_length_correlation": length_r,
            "loss_quality_covariance": quality_cov,
            "loss_orthogonality": 1.5,
        },
        rel=1e-6,
    )
    # the weights at 0: the ranking loss of the sum alone, i.e. a pairwise RM's loss on q + l
    off = RewardModelConfig(
        loss="disentangled",
        disentangled_length_weight=0.0,
        disentangled_quality_weight=0.0,
        disentangled_orthogonality_weight=0.0,
    )
    assert terms.total(off).item() == pytest.approx(ranking_loss(heads.sum(dim=1), [2, 2]).item())
    assert disentangled_terms(heads, [2, 2], lengths, None).orthogonality.item() == 0.0


def test_the_quality_terms_gradient_only_removes_the_length_part():
    """Its gradient on the quality head's outputs is the centred standardised length (times the sign):
    nothing pushes the head's other content, whatever the head's scale."""
    lengths = torch.tensor([10.0, 20.0, 30.0, 40.0])
    for scale in (0.01, 1.0, 100.0):
        quality = (torch.tensor([0.3, -1.0, 2.0, 0.1]) * scale).requires_grad_(True)
        heads = torch.stack([quality, torch.zeros(4)], dim=1)
        disentangled_terms(heads, [2, 2], lengths, None).quality_covariance.backward()
        z = (lengths - lengths.mean()) / lengths.std(unbiased=False)
        sign = 1.0 if float(((quality - quality.mean()) * z).mean().detach()) > 0 else -1.0
        assert torch.allclose(quality.grad, sign * z / 4, atol=1e-6)
