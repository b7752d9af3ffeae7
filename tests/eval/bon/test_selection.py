"""Tests for crs.eval.bon.selection against brute-force enumeration and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from crs.eval.bon.selection import (
    best_of_n_values,
    best_of_n_win_rates,
    best_weight,
    bootstrap_counts,
    difference,
    kendall_tau_b,
    kl_bon,
    paired_bootstrap_means,
    pairwise_accuracy,
    pairwise_credit,
    powers_of_two_up_to,
    selection_weights,
)
from crs.eval.power import minimum_detectable_difference, power_of_interval, power_of_neighbours


def _tied_pools(seed: int, count: int = 5, m: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    # Scores from {0, 1, 2} so most pools have ties, values continuous.
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 3, size=m).astype(float), rng.random(m)) for _ in range(count)]


def _brute_weights(scores: np.ndarray, n: int) -> np.ndarray:
    # Every n-subset equally likely; the subset's maximum is shared evenly among the replies tied at it.
    weights = np.zeros(scores.size)
    subsets = list(itertools.combinations(range(scores.size), n))
    for subset in subsets:
        top = max(scores[i] for i in subset)
        tied = [i for i in subset if scores[i] == top]
        for i in tied:
            weights[i] += 1.0 / len(tied) / len(subsets)
    return weights


def _brute_value(scores: np.ndarray, values: np.ndarray, n: int) -> float:
    subsets = list(itertools.combinations(range(scores.size), n))
    total = 0.0
    for subset in subsets:
        top = max(scores[i] for i in subset)
        total += np.mean([values[i] for i in subset if scores[i] == top])
    return total / len(subsets)


def test_kl_bon_and_powers_of_two():
    assert kl_bon(1) == 0.0
    assert kl_bon(4) == pytest.approx(math.log(4) - 0.75)
    assert powers_of_two_up_to(1) == [1]
    assert powers_of_two_up_to(16) == [1, 2, 4, 8, 16]
    assert powers_of_two_up_to(20) == [1, 2, 4, 8, 16, 20]
    assert powers_of_two_up_to(3) == [1, 2, 3]


def test_selection_weights_and_values_match_enumeration():
    pools = _tied_pools(0)
    assert any(len(set(s)) < s.size for s, _ in pools)  # the pools do exercise ties
    for scores, values in pools:
        m = scores.size
        for n in range(1, m + 1):
            np.testing.assert_allclose(selection_weights(scores, n), _brute_weights(scores, n), atol=1e-12)
        curve = best_of_n_values(scores[None], values[None], range(1, m + 1))[0]
        np.testing.assert_allclose(curve, [_brute_value(scores, values, n) for n in range(1, m + 1)], atol=1e-12)


def test_selection_weights_large_pool_and_errors():
    scores = np.random.default_rng(1).integers(0, 20, size=256).astype(float)
    for n in (1, 2, 100, 128, 255, 256):
        weights = selection_weights(scores, n)
        assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    top = scores == scores.max()
    np.testing.assert_allclose(selection_weights(scores, 256)[top], 1.0 / top.sum())
    for bad in (0, 257):
        with pytest.raises(ValueError):
            selection_weights(scores, bad)
    with pytest.raises(ValueError):
        selection_weights(np.array([0.0, np.nan]), 1)


def test_oracle_ceiling_constant_scorer_and_monotone_judge():
    rng = np.random.default_rng(2)
    values = rng.random((30, 8))
    ns = list(range(1, 9))
    oracle = best_of_n_values(values, values, ns)
    expected_max = [[_brute_value(v, v, n) for n in ns] for v in values[:3]]
    np.testing.assert_allclose(oracle[:3], expected_max, atol=1e-12)
    assert np.all(np.diff(oracle, axis=1) >= -1e-12)  # the judge's own curve never falls
    for _ in range(5):
        noisy = best_of_n_values(values + rng.normal(0, 0.3, values.shape), values, ns)
        assert np.all(noisy <= oracle + 1e-12)
    constant = best_of_n_values(np.zeros_like(values), values, ns)
    np.testing.assert_allclose(constant, np.repeat(values.mean(axis=1, keepdims=True), len(ns), axis=1), atol=1e-12)


def test_win_rates_half_at_one_and_match_enumeration():
    rng = np.random.default_rng(3)
    for scores, _ in _tied_pools(4):
        judge = rng.integers(0, 3, size=scores.size).astype(float)  # judge ties too
        m = scores.size
        rates = best_of_n_win_rates(scores[None], judge[None], range(1, m + 1))[0]
        assert rates[0] == pytest.approx(0.5)
        for n in range(1, m + 1):
            brute = 0.0
            subsets = list(itertools.combinations(range(m), n))
            for subset in subsets:
                top = max(scores[i] for i in subset)
                tied = [i for i in subset if scores[i] == top]
                for i in tied:
                    against = [1.0 if judge[i] > judge[k] else 0.5 if judge[i] == judge[k] else 0.0 for k in range(m)]
                    brute += np.mean(against) / len(tied) / len(subsets)
            assert rates[n - 1] == pytest.approx(brute, abs=1e-12)


def _brute_agreement(x: np.ndarray, y: np.ndarray, tie_eps: float = 1e-9) -> tuple[float, float, float]:
    # (credit, judged pairs, Kendall tau-b) of scorer x against judge y, counting pairs one by one;
    # a tie on either side is a difference of at most tie_eps.
    concordant = discordant = ties_x = ties_y = right = judged = 0.0
    pairs = list(itertools.combinations(range(x.size), 2))
    for i, j in pairs:
        dx, dy = x[i] - x[j], y[i] - y[j]
        dx, dy = (0.0 if abs(dx) <= tie_eps else dx), (0.0 if abs(dy) <= tie_eps else dy)
        ties_x += dx == 0
        ties_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
        if dy != 0:
            judged += 1
            right += 1.0 if dx * dy > 0 else 0.5 if dx == 0 else 0.0
    denominator = math.sqrt((len(pairs) - ties_x) * (len(pairs) - ties_y))
    tau = (concordant - discordant) / denominator if denominator else math.nan
    return right, judged, tau


def test_pairwise_agreement_and_tau_match_brute_force_with_ties_and_near_ties():
    rng = np.random.default_rng(5)
    scorer = rng.integers(0, 3, size=(20, 6)).astype(float)
    judge = rng.integers(0, 4, size=(20, 6)).astype(float)
    judge[0] = 1.0  # judge ties everything: both undefined
    scorer[1] = 2.0  # scorer ties everything: accuracy 0.5, tau undefined
    # Rows 10-19: float noise far below tie_eps on both sides (near-ties, not exact ones).
    scorer[10:] += 1e-12 * rng.random((10, 6))
    judge[10:] += 1e-12 * rng.random((10, 6))
    brute = np.array([_brute_agreement(s, j) for s, j in zip(scorer, judge)])
    credit, pairs = pairwise_credit(scorer, judge)
    np.testing.assert_allclose(credit, brute[:, 0])
    np.testing.assert_allclose(pairs, brute[:, 1])
    np.testing.assert_allclose(kendall_tau_b(scorer, judge), brute[:, 2], equal_nan=True)
    # Pooled: every judged pair of every prompt counts once.
    assert pairwise_accuracy(scorer, judge) == pytest.approx(brute[:, 0].sum() / brute[:, 1].sum())
    assert pairs[0] == 0 and np.isnan(kendall_tau_b(scorer, judge)[0])
    assert credit[1] == 0.5 * pairs[1] and np.isnan(kendall_tau_b(scorer, judge)[1])
    assert np.all(np.abs(brute[2:, 2]) < 1)  # the random rows are neither perfect nor reversed
    assert np.isnan(pairwise_accuracy(scorer[:1], judge[:1]))  # no judged pair anywhere


def test_perfect_and_reversed_scorers():
    judge = np.random.default_rng(6).random((10, 7))
    assert pairwise_accuracy(judge, judge) == 1.0
    assert pairwise_accuracy(-judge, judge) == 0.0
    np.testing.assert_allclose(kendall_tau_b(2 * judge + 1, judge), 1.0)
    np.testing.assert_allclose(kendall_tau_b(-judge, judge), -1.0)


def test_agreement_and_tau_share_one_tie_rule():
    # The example: the judge's first two values differ by 1e-12, a tie for both metrics.
    judge, scorer = np.array([[0.0, 1e-12, 1.0]]), np.array([[1.0, 0.0, 2.0]])
    credit, pairs = pairwise_credit(scorer, judge)
    assert (credit[0], pairs[0]) == (2.0, 2.0) and pairwise_accuracy(
        scorer, judge
    ) == 1.0  # the tied pair is not judged
    # tau-b: concordant 2, discordant 0, the judge ties 1 of 3 pairs: 2 / sqrt(3 * 2)
    assert kendall_tau_b(scorer, judge)[0] == pytest.approx(2 / math.sqrt(6))
    # With exact ties (tie_eps 0) the pair is separated, in both: 2 of 3 right, tau (2 - 1) / 3.
    assert pairwise_accuracy(scorer, judge, tie_eps=0.0) == pytest.approx(2 / 3)
    assert kendall_tau_b(scorer, judge, tie_eps=0.0)[0] == pytest.approx(1 / 3)
    # The scorer's side follows the same rule: a near-tie of the scorer counts half and leaves tau's numerator.
    near = np.array([[0.0, 1e-12, 2.0]])
    assert pairwise_accuracy(near, np.array([[0.0, 1.0, 2.0]])) == pytest.approx(2.5 / 3)
    assert kendall_tau_b(near, np.array([[0.0, 1.0, 2.0]]))[0] == pytest.approx(2 / math.sqrt(6))
    assert pairwise_accuracy(-np.array([[0.0, 1.0, 2.0]]), judge) == 0.0


def test_pooled_agreement_weighs_prompts_by_their_judged_pairs():
    # Prompt 0: the judge separates all 3 pairs, the scorer gets all 3. Prompt 1: the judge ties
    # (0, 1), so 2 judged pairs; the scorer gets (0, 2) wrong and ties (1, 2): credit 0.5.
    judge = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    scorer = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    credit, pairs = pairwise_credit(scorer, judge)
    assert credit.tolist() == [3.0, 0.5] and pairs.tolist() == [3.0, 2.0]
    assert pairwise_accuracy(scorer, judge) == pytest.approx(
        3.5 / 5
    )  # pooled 0.7; the mean of per-prompt fractions would be 0.625


def test_paired_bootstrap_shares_draws_and_shapes():
    rng = np.random.default_rng(7)
    a = rng.random(50)
    curves = rng.random((50, 3))
    boot = paired_bootstrap_means({"a": a, "a_again": a.copy(), "curves": curves}, n_boot=200, seed=1)
    np.testing.assert_array_equal(boot["a"], boot["a_again"])
    assert boot["a"].shape == (200,) and boot["curves"].shape == (200, 3)
    np.testing.assert_array_equal(boot["a"], paired_bootstrap_means({"a": a}, 200, 1)["a"])  # seeded
    with_nan = a.copy()
    with_nan[0] = np.nan
    assert np.all(np.isfinite(paired_bootstrap_means({"x": with_nan}, 50, 2)["x"]))  # nanmean skips NaN prompts
    with pytest.raises(ValueError):
        paired_bootstrap_means({"a": a, "b": a[:10]}, 10, 0)


def test_bootstrap_counts_are_the_draws_of_the_paired_bootstrap_with_the_same_seed():
    a = np.random.default_rng(3).random(7)
    counts = bootstrap_counts(7, 40, seed=5)
    assert counts.shape == (40, 7) and np.all(counts.sum(axis=1) == 7)
    # A mean over the drawn prompts, written with the multiplicities, is the paired bootstrap's round.
    np.testing.assert_allclose(counts @ a / 7, paired_bootstrap_means({"a": a}, 40, 5)["a"])
    with pytest.raises(ValueError):
        bootstrap_counts(0, 10, 0)


def test_paired_difference_narrower_than_unpaired():
    rng = np.random.default_rng(8)
    a = rng.normal(0, 1, 100)
    b = a + rng.normal(0.05, 0.1, 100)  # scorer B tracks scorer A closely
    boot = paired_bootstrap_means({"a": a, "b": b}, n_boot=2000, seed=3)
    paired = np.std(boot["b"] - boot["a"])
    independent_a = paired_bootstrap_means({"a": a}, 2000, seed=4)["a"]
    independent_b = paired_bootstrap_means({"b": b}, 2000, seed=5)["b"]
    unpaired = math.sqrt(np.var(independent_a) + np.var(independent_b))
    assert paired < 0.2 * unpaired
    diff = difference(boot["b"], boot["a"], float(b.mean()), float(a.mean()))
    assert diff["mean"] == pytest.approx(b.mean() - a.mean())
    assert diff["ci_low"] < diff["mean"] < diff["ci_high"]
    assert diff["ci_high"] - diff["ci_low"] < 0.2 * 2 * 1.96 * unpaired


def test_minimum_detectable_difference_has_the_stated_power():
    assert minimum_detectable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    rng = np.random.default_rng(9)
    n_studies, n_prompts, sigma = 400, 200, 1.0
    delta = minimum_detectable_difference(sigma / math.sqrt(n_prompts))
    per_prompt = rng.normal(delta, sigma, size=(n_studies, n_prompts))
    z = per_prompt.mean(axis=1) / (per_prompt.std(axis=1, ddof=1) / math.sqrt(n_prompts))
    rejection_rate = np.mean(np.abs(z) > 1.959964)
    assert abs(rejection_rate - 0.8) <= 0.07


def test_best_weight_finds_a_clear_middle_winner():
    rng = np.random.default_rng(10)
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    truth = {0.0: 0.1, 0.25: 0.3, 0.5: 0.5, 0.75: 0.3, 1.0: 0.1}
    shared = rng.normal(0, 0.2, 1000)  # paired rounds: a common shift that does not change the winner
    boot = {w: truth[w] + shared + rng.normal(0, 0.1, 1000) for w in grid}
    result = best_weight(boot)
    assert set(result["counts"]) == set(grid) and sum(result["counts"].values()) == 1000
    assert max(result["counts"], key=result["counts"].get) == 0.5
    low, high = result["interval"]
    assert grid[0] < low <= 0.5 <= high < grid[-1]


def test_power_of_neighbours_and_of_an_interval_agree_with_the_standard_error():
    rng = np.random.default_rng(0)
    base = rng.normal(size=4000)
    samples = [base, base + rng.normal(scale=0.01, size=4000), base + rng.normal(scale=0.03, size=4000)]
    neighbours = power_of_neighbours(samples)
    spreads = [np.std(samples[0] - samples[1], ddof=1), np.std(samples[1] - samples[2], ddof=1)]
    # Read from the rounds' quantiles: for normal rounds the SE is their spread and the detectable difference 2.8 SE.
    assert neighbours["standard_error"] == pytest.approx(np.median(spreads), rel=0.05)
    assert neighbours["minimum_detectable_difference"] == pytest.approx(2.8016 * neighbours["standard_error"], rel=0.05)
    by_interval = power_of_interval(0.5 - 1.959964 * 0.02, 0.5 + 1.959964 * 0.02)
    assert by_interval["standard_error"] == pytest.approx(0.02) and by_interval[
        "minimum_detectable_difference"
    ] == pytest.approx(0.056, rel=1e-3)
    with pytest.raises(ValueError):
        power_of_neighbours(samples[:1])
