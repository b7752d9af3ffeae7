"""Tests for crs.eval.win_rates: win rates, their bootstrap intervals and head-to-head tables, against hand-computed
values."""

from __future__ import annotations

import math

import pytest

from crs.eval.win_rates import bootstrap_ci, head_to_head, pairwise_outcomes, win_rate, win_rate_from_outcomes


def test_win_rate_counts_ties_as_half_and_alpaca_eval_standard_error():
    # Outcomes per prompt: win, loss, tie, win, tie -> (1 + 0 + .5 + 1 + .5) / 5 = 0.6
    result = win_rate([3, 1, 2, 2, 5], [1, 2, 2, 0, 5])
    assert result.win_rate == pytest.approx(0.6)
    assert (result.n_wins, result.n_wins_base, result.n_draws, result.n_total) == (2, 1, 2, 5)
    # AlpacaEval: the standard error of the mean of the outcomes, sample std (ddof=1):
    # squared deviations .16 + .36 + .01 + .16 + .01 = .70; sqrt(.70 / 4) / sqrt(5) = 0.18708
    assert result.standard_error == pytest.approx(math.sqrt(0.70 / 4) / math.sqrt(5))
    # Without ties that is sqrt(p(1-p)/(n-1)): 44 wins of 100 -> 4.9889 % (AlpacaEval prints 4.988876515698589)
    assert 100 * win_rate_from_outcomes([1] * 44 + [0] * 56, n_boot=10).standard_error == pytest.approx(
        4.988876515698589
    )
    assert result.ci_low <= 0.6 <= result.ci_high


def test_tie_eps_decides_what_counts_as_a_tie():
    assert pairwise_outcomes([1.0], [1.0 + 1e-12]) == [0.5]
    assert pairwise_outcomes([1.0], [1.0 + 1e-12], tie_eps=0.0) == [0.0]
    assert pairwise_outcomes([1.0, 2.0], [1.05, 1.95], tie_eps=0.1) == [0.5, 0.5]
    assert pairwise_outcomes([1.0, 2.0], [1.2, 1.7], tie_eps=0.1) == [0.0, 1.0]


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="NaN"):
        win_rate([float("nan")], [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate_from_outcomes([1, 1.5])
    with pytest.raises(ValueError, match="not null"):
        win_rate_from_outcomes([None, float("nan")])
    with pytest.raises(ValueError):
        win_rate_from_outcomes([])


def test_win_rate_from_outcomes_matches_scores_path():
    from_scores = win_rate([3, 1, 2, 2, 5], [1, 2, 2, 0, 5], n_boot=200, seed=3)
    from_outcomes = win_rate_from_outcomes([1, 0, 0.5, 1, 0.5], n_boot=200, seed=3)
    assert from_scores == from_outcomes


def test_bootstrap_is_seeded_and_contains_the_mean():
    values = [0.13, 0.91, 0.47, 0.22, 0.78, 0.35, 0.64, 0.05]
    first = bootstrap_ci(values, n_boot=500, seed=7)
    assert first == bootstrap_ci(values, n_boot=500, seed=7)
    assert first != bootstrap_ci(values, n_boot=500, seed=8)
    low, high = first
    assert 0.05 <= low < sum(values) / len(values) < high <= 0.91  # inside the data range


def test_bootstrap_of_a_constant_is_a_point():
    assert bootstrap_ci([0.25] * 10, n_boot=50, seed=0) == pytest.approx((0.25, 0.25))


def test_bootstrap_interval_narrows_with_more_prompts():
    pattern = [1, 0, 1, 1, 0]  # mean 0.6 at every size
    small_low, small_high = bootstrap_ci(pattern * 4, n_boot=1000, seed=0)
    large_low, large_high = bootstrap_ci(pattern * 100, n_boot=1000, seed=0)
    # Width shrinks like 1/sqrt(n): 25x more prompts -> about 5x narrower.
    assert (large_high - large_low) < 0.4 * (small_high - small_low)
    assert large_low < 0.6 < large_high


def test_head_to_head_covers_ordered_pairs_and_is_complementary():
    scores = {"a": [1, 2, 3], "b": [2, 2, 1], "c": [0, 0, 0]}
    pairs = head_to_head(scores, n_boot=50)
    assert set(pairs) == {(x, y) for x in scores for y in scores if x != y}
    # a vs b: loss, tie, win -> 0.5
    assert pairs[("a", "b")].win_rate == pytest.approx(0.5)
    assert pairs[("c", "a")].win_rate == 0.0
    for (x, y), result in pairs.items():
        assert result.win_rate + pairs[(y, x)].win_rate == pytest.approx(1.0)
        assert result.n_wins == pairs[(y, x)].n_wins_base
