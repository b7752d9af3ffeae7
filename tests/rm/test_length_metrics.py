"""Length-aware metrics of a scorer against pairwise preferences (crs/rm/length_metrics.py): each by hand on small
cases with ties, the logistic fit against closed forms and a grid search, and the two cases the metrics exist for
(a scorer that is only length, and one that knows something beyond it)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from crs.rm.length_metrics import (
    RIDGE,
    cluster_robust_covariance,
    fit_logistic,
    information_beyond_length,
    length_matched,
    length_term,
    log_likelihood,
    preferences,
    reply_lengths,
    subset_counts,
)
from crs.rm.length_metrics import bootstrap_rounds as rounds_of
from crs.rm.metrics import spearman

# Two clusters of three replies. Cluster 0: lengths 100, 50, 95; cluster 1: 200, 200, 120.
LENGTHS = [100.0, 50.0, 95.0, 200.0, 200.0, 120.0]
CLUSTERS = [0, 0, 0, 1, 1, 1]
FIRST, SECOND = [0, 0, 1, 3, 3, 4], [1, 2, 2, 4, 5, 5]
# (0,1): the longer reply 0 preferred. (0,2): the shorter reply 2 preferred, lengths matched (5 <= 10).
# (1,2): a judge tie, left out. (3,4): equal lengths (matched, neither shorter), reply 3 preferred.
# (3,5): the shorter reply 5 preferred. (4,5): the longer reply 4 preferred.
OUTCOMES = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0]
SCORES = [1.0, 2.0, 1.0, 3.0, 3.0, 0.0]  # credits: (0,1) 0, (0,2) tie 0.5, (3,4) tie 0.5, (3,5) 0, (4,5) 1


def small_case():
    return preferences(LENGTHS, CLUSTERS, FIRST, SECOND, OUTCOMES)


def test_length_matched_is_within_the_band_of_the_longer_reply() -> None:
    a, b = np.array([100, 100, 200, 40, 0, 50.0]), np.array([95, 80, 180, 40, 0, 56.0])
    assert length_matched(a, b).tolist() == [True, False, True, True, True, False]  # 20 <= 20; 6 > 5.6


def test_judge_ties_are_counted_and_left_out_and_bad_input_is_refused() -> None:
    prefs = small_case()
    assert (prefs.n_pairs, prefs.n_judge_ties, prefs.n_clusters) == (5, 1, 2)
    assert subset_counts(prefs) == {"n_pairs": 5, "n_shorter_preferred": 2, "n_length_matched": 2, "n_judge_ties": 1}
    with pytest.raises(ValueError, match="same cluster"):
        preferences(LENGTHS, CLUSTERS, [0], [3], [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        preferences(LENGTHS, CLUSTERS, [0], [1], [1.5])
    with pytest.raises(ValueError, match="outside"):
        preferences(LENGTHS, CLUSTERS, [0], [6], [1.0])
    with pytest.raises(ValueError, match="one score per reply"):
        rounds_of(prefs, [1.0, 2.0])


def test_accuracies_and_spearman_by_hand_with_judge_and_scorer_ties() -> None:
    points = {name: point for name, (point, _) in rounds_of(small_case(), SCORES).items()}
    assert points["accuracy"] == pytest.approx((0 + 0.5 + 0.5 + 0 + 1) / 5)
    assert points["shorter_preferred_accuracy"] == pytest.approx((0.5 + 0) / 2)  # pairs (0,2) and (3,5)
    assert points["length_matched_accuracy"] == pytest.approx((0.5 + 0.5) / 2)  # pairs (0,2) and (3,4)
    # Average ranks by hand: scores 1, 2, 1, 3, 3, 0 and lengths 100, 50, 95, 200, 200, 120.
    score_ranks, length_ranks = [1.5, 3, 1.5, 4.5, 4.5, 0], [2, 0, 1, 4.5, 4.5, 3]
    assert points["length_spearman"] == pytest.approx(np.corrcoef(score_ranks, length_ranks)[0, 1])
    # The length-only scorer: right on (0,1) and (4,5), wrong on both shorter-preferred pairs, ties (3,4).
    length = {name: point for name, (point, _) in rounds_of(small_case(), LENGTHS).items()}
    assert length["accuracy"] == pytest.approx(2.5 / 5)
    assert length["shorter_preferred_accuracy"] == 0.0
    assert length["length_matched_accuracy"] == pytest.approx(0.5 / 2)
    assert length["length_spearman"] == pytest.approx(1.0)
    # A near-tie within tie_eps is a tie: (0,1) then earns half instead of 0.
    near = rounds_of(small_case(), [1.0, 1.0 + 1e-12, 1.0, 3.0, 3.0, 0.0], tie_eps=1e-9)
    assert near["accuracy"][0] == pytest.approx(2.5 / 5)


def test_rounds_are_the_metrics_of_the_clusters_each_round_draws() -> None:
    counts = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    result = rounds_of(small_case(), SCORES, counts)
    assert result["accuracy"][1] == pytest.approx([0.5 / 2, 1.5 / 3, 2.0 / 5, 1.5 / 3])
    # Cluster 1 alone has one shorter-preferred pair (credit 0); cluster 0 alone has one (0.5).
    assert result["shorter_preferred_accuracy"][1] == pytest.approx([0.5, 0.0, 0.25, 0.0])
    assert result["length_matched_accuracy"][1] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    correlation = result["length_spearman"][1]
    twice = np.corrcoef([1.5, 4.5, 1.5, 1.5, 4.5, 1.5], [4.5, 0.5, 2.5, 4.5, 0.5, 2.5])[0, 1]  # cluster 0, twice
    assert correlation[0] == pytest.approx(twice)
    assert correlation[2] == pytest.approx(rounds_of(small_case(), SCORES)["length_spearman"][0])
    # Every round is Spearman over the drawn replies written out, ties included (scores and lengths both tie).
    many = np.random.default_rng(0).integers(0, 3, size=(30, 2)).astype(float)
    expected = []
    for drawn in many:
        picked = np.repeat(np.arange(6), drawn[CLUSTERS].astype(int))
        rho = spearman(np.array(SCORES)[picked], np.array(LENGTHS)[picked]) if picked.size else None
        expected.append(np.nan if rho is None else rho)
    assert rounds_of(small_case(), SCORES, many)["length_spearman"][1] == pytest.approx(expected, nan_ok=True)
    # A round without a pair of a subset has no value there: NaN, not 0.
    only_ties = preferences(LENGTHS, CLUSTERS, [0, 3], [2, 5], [0.5, 0.0])
    assert np.isnan(rounds_of(only_ties, SCORES, np.array([[1.0, 0.0]]))["accuracy"][1][0])


# ---------------------------------------------------------------------------------------------- the logistic fit


def test_fit_logistic_matches_the_closed_form_of_a_binary_regressor() -> None:
    # With an intercept and one 0/1 column the fit reproduces each group's log-odds exactly.
    x = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1.0])
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0.5])  # a fractional outcome counts as half a success
    coef = fit_logistic(np.column_stack([np.ones_like(x), x]), y)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert coef == pytest.approx([logit(1 / 4), logit(3.5 / 5) - logit(1 / 4)], abs=1e-8)


def test_fit_logistic_matches_a_grid_search_with_weights_and_ridge() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = (rng.random(30) < 1 / (1 + np.exp(-1.3 * x))).astype(float)
    weights = rng.uniform(0.5, 2.0, 30)
    grid = np.linspace(-1.0, 5.0, 60001)  # step 1e-4
    for ridge in (0.0, 2.0):
        objective = [log_likelihood(x[:, None], y, np.array([b]), weights) - ridge / 2 * b * b for b in grid]
        (coef,) = fit_logistic(x[:, None], y, weights, ridge)
        assert coef == pytest.approx(grid[int(np.argmax(objective))], abs=2e-4)


def test_a_separating_column_stays_finite_under_the_ridge() -> None:
    x = np.array([-2.0, -1.0, 1.0, 2.0])
    (coef,) = fit_logistic(x[:, None], (x > 0).astype(float), ridge=RIDGE)
    assert 1.0 < coef < 1e3 and np.isfinite(coef)


def test_the_robust_covariance_is_the_sandwich_written_out_cluster_by_cluster() -> None:
    rng = np.random.default_rng(1)
    design = rng.normal(size=(12, 2))
    y = (rng.random(12) < 0.5).astype(float)
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    coef = fit_logistic(design, y)
    p = 1 / (1 + np.exp(-design @ coef))
    information = sum(p[i] * (1 - p[i]) * np.outer(design[i], design[i]) for i in range(12))
    meat = np.zeros((2, 2))
    for g in range(4):
        score = sum(design[i] * (y[i] - p[i]) for i in range(12) if clusters[i] == g)
        meat += np.outer(score, score)
    bread = np.linalg.inv(information)
    expected = 4 / 3 * 11 / 10 * bread @ meat @ bread
    assert cluster_robust_covariance(design, y, coef, clusters) == pytest.approx(expected)
    assert cluster_robust_covariance(design, y, coef, np.zeros(12)) is None  # one cluster: no estimate


# ---------------------------------------------------------------------------------------- information beyond length


def simulated(seed: int, content_weight: float, n_prompts: int = 150, k: int = 4):
    """Preferences over every pair of k replies to each prompt: P(first preferred) = sigmoid(1.5 tanh(d / s) +
    content_weight * (c_first - c_second)), lengths log-normal, content c standard normal. Returns the
    preferences, the lengths and the content."""
    rng = np.random.default_rng(seed)
    lengths, content = np.round(np.exp(rng.normal(6.0, 0.6, n_prompts * k))), rng.normal(size=n_prompts * k)
    pairs = np.array([(p * k + i, p * k + j) for p in range(n_prompts) for i, j in itertools.combinations(range(k), 2)])
    first, second = pairs[:, 0], pairs[:, 1]
    eta = 1.5 * length_term(lengths[first] - lengths[second]) + content_weight * (content[first] - content[second])
    outcomes = (rng.random(eta.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return preferences(lengths, np.repeat(np.arange(n_prompts), k), first, second, outcomes), lengths, content


def test_the_lr_and_its_p_value_are_the_two_fits_likelihoods() -> None:
    prefs, lengths, content = simulated(0, 1.0, n_prompts=20)
    scores = lengths / 100 + content
    found = information_beyond_length(prefs, scores)
    y = prefs.first_preferred.astype(float)
    t = length_term(prefs.length_difference())
    diff = scores[prefs.first] - scores[prefs.second]
    z = diff / np.sqrt(np.mean(diff**2))
    base, full = t[:, None], np.column_stack([t, z])
    lr = 2 * (
        log_likelihood(full, y, fit_logistic(full, y, ridge=RIDGE))
        - log_likelihood(base, y, fit_logistic(base, y, ridge=RIDGE))
    )
    assert found.lr == pytest.approx(lr)
    assert found.p_lr == pytest.approx(math.erfc(math.sqrt(lr / 2)))
    assert math.erfc(math.sqrt(3.841458820694124 / 2)) == pytest.approx(0.05)  # chi-square(1)'s 95% point
    assert found.ci_low == pytest.approx(found.coef - 1.959963984540054 * found.se_robust)
    assert found.p_robust == pytest.approx(math.erfc(abs(found.coef / found.se_robust) / math.sqrt(2)))


def test_pairs_repeated_within_their_cluster_shrink_the_naive_p_but_not_the_robust_interval() -> None:
    prefs, lengths, content = simulated(2, 0.3, n_prompts=40)
    doubled = preferences(
        prefs.lengths,
        prefs.reply_cluster,
        np.concatenate([prefs.first, prefs.first]),
        np.concatenate([prefs.second, prefs.second]),
        np.tile(prefs.first_preferred.astype(float), 2),
    )
    scores = lengths / 100 + content
    once, twice = information_beyond_length(prefs, scores), information_beyond_length(doubled, scores)
    assert twice.coef == pytest.approx(once.coef, rel=1e-3)
    assert twice.lr == pytest.approx(2 * once.lr, rel=1e-3)  # the naive test counts every copy as evidence
    assert twice.se_robust == pytest.approx(once.se_robust, rel=0.02)  # the robust one does not


def test_a_monotone_function_of_length_carries_no_information_beyond_length() -> None:
    prefs, lengths, _ = simulated(0, 0.0)
    for scores in (lengths, np.sqrt(lengths), np.log(lengths)):
        found = information_beyond_length(prefs, scores)
        assert found.p_lr > 0.05 and found.p_robust > 0.05, found
        assert found.ci_low < 0 < found.ci_high
        assert found.cv_log_loss_with_scorer >= found.cv_log_loss_length - 0.002
        assert found.n_clusters == 150 and found.cv_folds == 5


def test_length_plus_an_independent_content_signal_carries_information_beyond_length() -> None:
    prefs, lengths, content = simulated(0, 1.0)
    found = information_beyond_length(prefs, lengths / 100 + content)
    assert found.p_lr < 1e-6 and found.p_robust < 1e-6 and found.ci_low > 0
    assert found.cv_log_loss_with_scorer < found.cv_log_loss_length - 0.02
    control = information_beyond_length(prefs, lengths)  # length alone, judged on the same preferences
    assert control.p_robust > 0.05 and control.cv_log_loss_with_scorer > found.cv_log_loss_with_scorer
    content_points = {name: point for name, (point, _) in rounds_of(prefs, lengths / 100 + content).items()}
    assert content_points["shorter_preferred_accuracy"] > 0.2  # the length scorer's is 0 by construction


def test_cross_validation_holds_out_whole_clusters() -> None:
    # Two clusters: two folds, each one cluster; the held-out loss is the other cluster's fit scored on it.
    prefs, lengths, content = simulated(3, 1.0, n_prompts=2, k=5)
    scores = lengths / 100 + content
    found = information_beyond_length(prefs, scores)
    y, d = prefs.first_preferred.astype(float), prefs.length_difference()
    diff = scores[prefs.first] - scores[prefs.second]
    losses = np.zeros(2)
    for held in (0, 1):
        train, test = prefs.pair_cluster != held, prefs.pair_cluster == held
        s, r = np.sqrt(np.mean(d[train] ** 2)), np.sqrt(np.mean(diff[train] ** 2))  # scales from the training fold

        def design(rows: np.ndarray, with_scorer: bool, s: float = s, r: float = r) -> np.ndarray:
            return np.column_stack([np.tanh(d[rows] / s), *([diff[rows] / r] if with_scorer else [])])

        for column in (0, 1):
            coef = fit_logistic(design(train, bool(column)), y[train], ridge=RIDGE)
            losses[column] -= log_likelihood(design(test, bool(column)), y[test], coef)
    assert found.cv_folds == 2
    assert (found.cv_log_loss_length, found.cv_log_loss_with_scorer) == pytest.approx(tuple(losses / y.size))


def test_undefined_numbers_are_none() -> None:
    prefs = small_case()
    constant = information_beyond_length(prefs, np.ones(6))
    assert (constant.lr, constant.p_lr, constant.coef, constant.p_robust) == (0.0, 1.0, None, None)
    nothing = information_beyond_length(preferences(LENGTHS, CLUSTERS, [0], [1], [0.5]), SCORES)
    assert (nothing.n_pairs, nothing.lr, nothing.coef, nothing.cv_folds) == (0, None, None, 0)
    one_cluster = information_beyond_length(preferences(LENGTHS, CLUSTERS, [0, 0], [1, 2], [1.0, 0.0]), SCORES)
    assert one_cluster.se_robust is None and one_cluster.cv_folds == 0 and one_cluster.lr is not None


def test_reply_lengths_count_characters_not_bytes() -> None:
    assert reply_lengths(["", "abc", "é!"]).tolist() == [0.0, 3.0, 2.0]
