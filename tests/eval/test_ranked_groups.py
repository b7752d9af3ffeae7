"""Tests of the held-out ranked-group metrics and their cluster bootstrap (crs/eval/ranked_groups.py)."""

from __future__ import annotations

import numpy as np
import pytest

from crs.eval.ranked_groups import (
    RankedGroup,
    cluster_bootstrap,
    group_preferences,
    length_aware,
    pair_credit,
    summarize,
    top1_credit,
)
from crs.rm.metrics import spearman

NAN = float("nan")


def test_pair_credit_by_hand_with_ties() -> None:
    assert pair_credit([3.0, 1.0, 2.0]) == (2.0, 3)  # (0,1) and (0,2) right, (1,2) wrong
    assert pair_credit([1.0, 1.0, 0.0]) == (2.5, 3)  # the tie counts half
    assert pair_credit([0.0, 1.0]) == (0.0, 1)
    assert pair_credit([5.0]) == (0.0, 0)
    # A near-tie (float noise within TIE_EPS) is a tie, as in the best-of-n agreement (the same function).
    assert pair_credit([1.0, 1.0 + 1e-12, 0.0]) == (2.5, 3)
    assert pair_credit([1.0, 1.0 + 1e-12, 0.0], tie_eps=0.0) == (2.0, 3)


def test_top1_credit_by_hand_with_ties() -> None:
    assert top1_credit([2.0, 1.0]) == 1.0
    assert top1_credit([1.0, 2.0]) == 0.0
    assert top1_credit([2.0, 2.0, 1.0]) == 0.5  # the humans' first shares the top with one other
    assert top1_credit([1.0, 2.0, 2.0]) == 0.0
    assert top1_credit([3.0, 3.0, 3.0]) == pytest.approx(1 / 3)


def _groups() -> tuple[list[RankedGroup], dict[str, list[list[float]]]]:
    groups = [
        RankedGroup("t1", ["a", "b", "c"], [0.9, 0.5, NAN]),
        RankedGroup("t1", ["d", "e"], [0.7, 0.2]),
        RankedGroup("t2", ["f", "g"], [0.4, 0.6]),
        RankedGroup("t3", ["h", "i", "j", "k"], [1.0, 0.8, 0.1, 0.0]),
    ]
    scores = {
        "good": [[3, 2, 1], [1, 0], [0, 1], [4, 3, 3, 1]],
        "tied": [[1, 1, 1], [0, 0], [2, 2], [1, 1, 1, 1]],
        "length": [[1, 3, 2], [2, 1], [1, 1], [0, 2, 1, 3]],
    }
    return groups, {k: [[float(x) for x in g] for g in v] for k, v in scores.items()}


def _brute(groups: list[RankedGroup], scores: list[list[float]]) -> dict[str, float]:
    """Pooled figures straight from the definitions, on an explicit list of groups."""
    credits = [c for g in scores for c in [pair_credit(g)]]
    labels = [x for g in groups for x in g.labels]
    flat = [x for g in scores for x in g]
    keep = [k for k, x in enumerate(labels) if not np.isnan(x)]
    rho = spearman([flat[k] for k in keep], [labels[k] for k in keep])
    return {
        "pairwise_accuracy": sum(c for c, _ in credits) / sum(n for _, n in credits),
        "top1": float(np.mean([top1_credit(g) for g in scores])),
        "spearman": NAN if rho is None else rho,
    }


def test_points_equal_the_pooled_definitions() -> None:
    groups, scores = _groups()
    result = cluster_bootstrap(groups, scores, n_boot=5, seed=0)
    for name, s in scores.items():
        brute = _brute(groups, s)
        for metric in ("pairwise_accuracy", "top1"):
            assert result[metric]["point"][name] == pytest.approx(brute[metric])
    assert result["pairwise_accuracy"]["point"]["tied"] == 0.5
    # good: 3 + 1 + 0 + 5.5 credits over 3 + 1 + 1 + 6 pairs
    assert result["pairwise_accuracy"]["point"]["good"] == pytest.approx(9.5 / 11)
    assert result["top1"]["point"]["good"] == pytest.approx(3 / 4)


def test_rounds_equal_a_brute_force_resample_of_whole_clusters() -> None:
    groups, scores = _groups()
    n_boot, seed = 40, 7
    result = cluster_bootstrap(groups, scores, n_boot=n_boot, seed=seed)
    clusters = sorted({g.cluster for g in groups})
    draws = np.random.default_rng(seed).integers(0, len(clusters), size=(n_boot, len(clusters)))
    for r, draw in enumerate(draws):
        picked = [k for c in draw for k, g in enumerate(groups) if g.cluster == clusters[c]]  # with multiplicity
        for name, s in scores.items():
            brute = _brute([groups[k] for k in picked], [s[k] for k in picked])
            for metric in ("pairwise_accuracy", "top1", "spearman"):
                got = result[metric]["rounds"][name][r]
                assert got == pytest.approx(brute[metric], nan_ok=True), (metric, name, r)


def test_summarize_pairs_every_scorer_with_the_baseline() -> None:
    groups, scores = _groups()
    scores["copy"] = scores["length"]
    table = summarize(cluster_bootstrap(groups, scores, n_boot=200, seed=1), baseline="length")
    same = table["pairwise_accuracy"]["copy"]["vs_length"]
    assert same == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # paired rounds: a copy never differs
    good = table["pairwise_accuracy"]["good"]
    assert good["ci_low"] <= good["mean"] <= good["ci_high"]
    assert "vs_length" not in table["pairwise_accuracy"]["length"]
    with pytest.raises(ValueError, match="no ranked groups"):
        cluster_bootstrap([], {})


def test_the_humans_order_as_pairs_and_its_length_metrics_share_the_cluster_bootstrap() -> None:
    groups, scores = _groups()
    prefs = group_preferences(groups)
    # t1's groups (replies 0-2 and 3-4), t2's (5-6), t3's (7-10): every within-group pair, the earlier reply first.
    assert prefs.first.tolist() == [0, 0, 1, 3, 5, 7, 7, 7, 8, 8, 9]
    assert prefs.second.tolist() == [1, 2, 2, 4, 6, 8, 9, 10, 9, 10, 10]
    assert prefs.first_preferred.all() and prefs.reply_cluster.tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert prefs.lengths.tolist() == [1.0] * 11  # the replies are one letter each
    n_boot, seed = 30, 5
    lengths = length_aware(groups, scores, n_boot=n_boot, seed=seed, cluster_kind="trees")
    boot = summarize(cluster_bootstrap(groups, scores, n_boot=n_boot, seed=seed))
    keys = ("mean", "ci_low", "ci_high")
    for name in scores:  # the same pooled accuracy and, drawn with the same seed, the same rounds
        accuracy = lengths["scorers"][name]["accuracy"]
        assert [accuracy[k] for k in keys] == pytest.approx([boot["pairwise_accuracy"][name][k] for k in keys])
    assert lengths["cluster_kind"] == "trees" and "length (characters)" in lengths["scorers"]
