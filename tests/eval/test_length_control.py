"""Length control: when the LC win rate fails (length separates the verdicts), the diagnostic
that flags it, and the length-matched win rate (issue 30 §2)."""

from __future__ import annotations

import numpy as np
import pytest
from length_cases import shorter_on_most

from crs.eval.length_control import (
    MIN_MATCHED,
    brevity_concordance,
    length_controlled_win_rate,
    length_matched_win_rate,
    length_separation,
    pooled_length_matched_win_rate,
)
from crs.rm.length_metrics import LENGTH_BAND, length_matched


def brevity_case(mirror: bool, seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The issue's case: the model is shorter by 100-200 characters on 88% of the prompts and
    longer by 5-20 on the rest (``mirror``: the other way round); the judge always prefers the
    shorter reply. Returns (outcomes, model lengths, reference lengths)."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(300, 700, n).astype(float)
    model = shorter_on_most(reference, rng, mirror)
    return (model < reference).astype(float), model, reference


def mixed_lengths(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Realistic lengths: the model's reply a log-normal multiple (median 0.9) of the reference's."""
    reference = rng.integers(150, 700, n).astype(float)
    return np.round(reference * np.exp(rng.normal(-0.1, 0.35, n))), reference


@pytest.mark.parametrize("mirror", [False, True])
def test_the_issues_brevity_cases_reproduce_the_failure_and_are_flagged(mirror: bool) -> None:
    outcomes, model, reference = brevity_case(mirror)
    raw = outcomes.mean()
    assert raw == pytest.approx(0.12 if mirror else 0.88)
    lc = length_controlled_win_rate(outcomes, model, reference, n_boot=200)
    # The failure the issue reports: the LC lands far from 50% with a narrow interval.
    if mirror:
        assert lc.win_rate > 0.95 and lc.ci_low > 0.9
    else:
        assert lc.win_rate < 0.05 and lc.ci_high < 0.1
    seen = length_separation(outcomes, model, reference)
    assert not seen.reliable
    assert seen.separation == 1.0 and seen.direction == "shorter"
    assert seen.shorter_wins == seen.n_decisive_unequal == 200
    assert (seen.near_equal_shorter, seen.near_equal_longer) == ((24, 0) if mirror else (0, 24))
    assert seen.share_shorter == pytest.approx(0.12 if mirror else 0.88)
    assert "unreliable" in seen.reason and "200 of 200" in seen.reason and "within 10%" in seen.reason


def test_a_length_blind_judge_is_not_flagged_and_its_lc_holds_the_raw_rate() -> None:
    rng = np.random.default_rng(1)
    for lengths in (brevity_case(False, seed=1)[1:], mixed_lengths(rng, 200)):
        outcomes = (rng.random(200) < 0.65).astype(float)  # a better model, whatever the lengths
        seen = length_separation(outcomes, *lengths)
        assert seen.reliable and abs(seen.separation - 0.5) < 0.1
        lc = length_controlled_win_rate(outcomes, *lengths, n_boot=300)
        assert lc.ci_low <= outcomes.mean() <= lc.ci_high


def test_a_moderate_length_preference_on_mixed_lengths_is_not_flagged() -> None:
    rng = np.random.default_rng(2)
    model, reference = mixed_lengths(rng, 300)
    diff = model - reference
    outcomes = (rng.random(300) < 1.0 / (1.0 + np.exp(-(0.4 - 1.2 * np.tanh(diff / 200))))).astype(float)
    seen = length_separation(outcomes, model, reference)
    assert seen.reliable and 0.55 < seen.separation < 0.8 and seen.direction == "shorter"
    assert "does not separate" in seen.reason


def test_a_brevity_judge_with_prompts_near_equal_length_on_both_sides_is_readable() -> None:
    # Length separates the verdicts, but many prompts on either side of equal length pin the
    # flip at equal length: the LC is about 50% and is not flagged.
    rng = np.random.default_rng(3)
    model, reference = mixed_lengths(rng, 300)
    outcomes = np.where(model < reference, 1.0, np.where(model > reference, 0.0, 0.5))
    seen = length_separation(outcomes, model, reference)
    assert seen.separation == 1.0 and seen.reliable
    assert min(seen.near_equal_shorter, seen.near_equal_longer) >= 10
    assert abs(length_controlled_win_rate(outcomes, model, reference, n_boot=100).win_rate - 0.5) < 0.1


def test_a_judge_that_rewards_length_is_separation_the_other_way() -> None:
    outcomes, model, reference = brevity_case(False)
    seen = length_separation(1.0 - outcomes, model, reference)
    assert seen.direction == "longer" and seen.separation == 1.0 and not seen.reliable
    assert seen.shorter_wins == 0 and "the longer reply wins 200 of 200" in seen.reason


def test_brevity_concordance_by_hand_with_ties() -> None:
    diff = np.array([-10.0, 5.0, 5.0, 20.0, 0.0])
    won = np.array([True, True, False, False, False])
    lost = np.array([False, False, True, True, False])
    # (won, lost) pairs: (-10, 5) shorter wins 1, (-10, 20) 1, (5, 5) equal 0.5, (5, 20) 1 -> 3.5 / 4
    assert brevity_concordance(diff, won, lost) == pytest.approx(3.5 / 4)
    assert brevity_concordance(diff, won, np.zeros(5, dtype=bool)) is None


def test_every_verdict_one_way_is_not_flagged() -> None:
    seen = length_separation([1.0, 1.0, 0.5], [10, 20, 30], [50, 60, 70])
    assert seen.separation is None and seen.reliable and "nothing to separate" in seen.reason


def test_length_matched_win_rate_by_hand() -> None:
    # Within 10% of the longer reply: prompts 0 (100 vs 95), 2 (200 vs 180: 20 <= 20), 3 (equal)
    # and 4 (empty both); not 1 (100 vs 80) nor 5 (50 vs 56: 6 > 5.6).
    outcomes = [1.0, 1.0, 0.0, 0.5, 1.0, 0.0]
    model = [100, 100, 200, 40, 0, 50]
    reference = [95, 80, 180, 40, 0, 56]
    assert length_matched(np.array(model, float), np.array(reference, float)).tolist() == [
        True,
        False,
        True,
        True,
        True,
        False,
    ]
    result = length_matched_win_rate(outcomes, model, reference, min_matched=4, n_boot=200)
    assert result.n_matched == 4 and result.n_total == 6 and result.band == LENGTH_BAND
    assert result.win_rate == pytest.approx((1.0 + 0.0 + 0.5 + 1.0) / 4)
    assert 0.0 <= result.ci_low <= result.win_rate <= result.ci_high <= 1.0
    too_few = length_matched_win_rate(outcomes, model, reference, min_matched=5)
    assert too_few.win_rate is None and too_few.ci_low is None and too_few.n_matched == 4


def test_length_matched_rate_says_cannot_tell_below_the_minimum_by_default() -> None:
    n = MIN_MATCHED - 1
    result = length_matched_win_rate([1.0] * n, [100] * n, [100] * n)
    assert result.win_rate is None and result.n_matched == n


def test_pooled_length_matched_rate_pools_the_runs() -> None:
    run_a = ([1.0, 0.0, 1.0], [100, 100, 10], [100, 100, 100])  # matched: 1.0, 0.0
    run_b = ([1.0, 1.0], [50, 52], [50, 50])  # matched: both
    result = pooled_length_matched_win_rate([run_a, run_b], min_matched=4, n_boot=300)
    assert result.n_matched == 4 and result.n_total == 5
    assert result.win_rate == pytest.approx(0.75)
    assert 0.0 <= result.ci_low <= 0.75 <= result.ci_high <= 1.0
    single = pooled_length_matched_win_rate([run_b], min_matched=2, n_boot=100)
    assert single == length_matched_win_rate(*run_b, min_matched=2, n_boot=100)


def test_pooled_length_matched_interval_counts_the_seed_spread_with_a_t_level() -> None:
    # Two runs whose matched rates differ (0.2 and 0.8 over 50 prompts each): a seed-resampling
    # bootstrap would give about +-0.3; the t level with 1 degree of freedom (12.7 x 0.3) spans all.
    lengths = [100] * 50
    run_a = ([1.0] * 10 + [0.0] * 40, lengths, lengths)
    run_b = ([1.0] * 40 + [0.0] * 10, lengths, lengths)
    spread = pooled_length_matched_win_rate([run_a, run_b], n_boot=2000)
    assert spread.win_rate == pytest.approx(0.5)
    assert spread.ci_low == 0.0 and spread.ci_high == 1.0
    # Runs that agree: the interval is the verdicts' own (about +-0.1 for 100 verdicts at 0.5).
    same = ([1.0, 0.0] * 25, lengths, lengths)
    agree = pooled_length_matched_win_rate([same, same], n_boot=2000)
    assert 0.35 < agree.ci_low < 0.45 and 0.55 < agree.ci_high < 0.65


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one length pair per outcome"):
        length_separation([1.0, 0.0], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="must lie in"):
        length_matched_win_rate([1.5], [1], [1])


# --------------------------------------------------------------------------- the LC win rate


def test_length_controlled_equals_raw_when_lengths_are_equal() -> None:
    outcomes = [1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0]
    lc = length_controlled_win_rate(outcomes, [100] * 8, [100] * 8, n_boot=200)
    assert lc.win_rate == pytest.approx(np.mean(outcomes), abs=1e-6)
    assert lc.ci_low <= lc.win_rate <= lc.ci_high


def test_a_brevity_judge_gives_about_half_only_when_the_differences_are_alike_both_ways() -> None:
    rng = np.random.default_rng(0)
    n = 200
    lengths_b = rng.integers(80, 400, n)
    # A is shorter on ~80% of prompts, by amounts drawn alike on both sides; the judge always
    # picks the shorter reply. The LC lands near 50%, but only because the differences are
    # alike both ways (the brevity cases above: unequal ones give 3%), so it is flagged.
    lengths_a = lengths_b + np.where(rng.random(n) < 0.8, -1, 1) * rng.integers(10, 200, n)
    outcomes = (lengths_a < lengths_b).astype(float)
    lc = length_controlled_win_rate(outcomes, lengths_a, lengths_b, n_boot=200)
    assert outcomes.mean() > 0.7  # the raw rate rewards brevity
    assert abs(lc.win_rate - 0.5) < 0.12 and lc.length_coef < 0
    assert not length_separation(outcomes, lengths_a, lengths_b).reliable
    # A real, length-independent advantage survives length control.
    better = (rng.random(n) < 0.8).astype(float)
    assert length_controlled_win_rate(better, lengths_a, lengths_b, n_boot=200).win_rate > 0.7
