"""Scorers judged against held-out human rankings, with intervals from a bootstrap over clusters.

The data: groups of sibling replies, each listed in the humans' order (best first), each
group in a *cluster* (an oasst1 conversation tree: its groups share a conversation and its
labellers, so they are not independent and are resampled together). Every scorer gives one
number per reply. Per scorer:

* **pairwise accuracy**: over every within-group pair, 1 when the scorer puts the
  human-preferred reply higher, 0.5 on a scorer tie (scores within ``TIE_EPS``), else 0; pooled
  over all pairs: the best-of-n study's agreement (:func:`crs.eval.bon.selection.pairwise_credit`),
  the humans' order as the judge;
* **top-1**: per group, whether the scorer's highest reply is the humans' first (a tie for
  the top among t replies that include the humans' first counts 1/t); mean over groups;
* **correlation** with a per-reply label (e.g. oasst1's ``quality``): Spearman over every
  reply that has the label;
* **length-aware** metrics (:func:`length_aware`, :mod:`crs.eval.length_aware`): accuracy on the
  pairs where the humans preferred the shorter reply and on length-matched pairs, Spearman with
  length, information beyond length, the length-only scorer as a row.

:func:`cluster_bootstrap` resamples clusters (with replacement, one shared draw for every
scorer, so differences between scorers are paired) and recomputes each pooled figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crs.eval.bon.selection import TIE_EPS, bootstrap_counts, difference, pairwise_credit
from crs.eval.hierarchical import interval
from crs.eval.length_aware import length_aware_results
from crs.rm.length_metrics import Preferences, preferences, reply_lengths
from crs.rm.metrics import spearman


@dataclass
class RankedGroup:
    """One group of sibling replies in the humans' order, best first."""

    cluster: str
    replies: list[str]
    labels: list[float]  # a per-reply label (NaN where the reply has none)


def pair_credit(scores: Sequence[float], tie_eps: float = TIE_EPS) -> tuple[float, int]:
    """(credit, pairs) of one group's scores listed in the humans' order, best first."""
    s = np.asarray(scores, dtype=float)
    humans = np.arange(len(s), 0, -1, dtype=float)  # the humans' order as judge values: first highest, no ties
    credit, pairs = pairwise_credit(s[None, :], humans[None, :], tie_eps)
    return float(credit[0]), int(pairs[0])


def top1_credit(scores: Sequence[float]) -> float:
    """1/t when the humans' first reply is among the t replies with the top score, else 0."""
    s = np.asarray(scores, dtype=float)
    top = s == s.max()
    return 1.0 / int(top.sum()) if top[0] else 0.0


@dataclass
class ClusterTotals:
    """Per cluster (C,) sums of one scorer: pair credits and top-1 credits; the shared counts."""

    pair_credit: np.ndarray
    top1_credit: np.ndarray


def cluster_totals(
    groups: Sequence[RankedGroup], scores: Sequence[Sequence[float]], clusters: Sequence[str]
) -> ClusterTotals:
    """Sum one scorer's per-group credits into its clusters (in the order of ``clusters``)."""
    index = {c: k for k, c in enumerate(clusters)}
    pairs, top1 = np.zeros(len(clusters)), np.zeros(len(clusters))
    for group, group_scores in zip(groups, scores, strict=True):
        credit, _ = pair_credit(group_scores)
        pairs[index[group.cluster]] += credit
        top1[index[group.cluster]] += top1_credit(group_scores)
    return ClusterTotals(pairs, top1)


def _counts(groups: Sequence[RankedGroup], clusters: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: how many pairs and how many groups it holds."""
    index = {c: k for k, c in enumerate(clusters)}
    n_pairs, n_groups = np.zeros(len(clusters)), np.zeros(len(clusters))
    for group in groups:
        n_pairs[index[group.cluster]] += pair_credit(np.zeros(len(group.replies)))[1]
        n_groups[index[group.cluster]] += 1
    return n_pairs, n_groups


def _correlations(scores: Mapping[str, np.ndarray], labels: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Spearman of every scorer's reply scores against the labels, over the reply indices ``rows``."""
    rows = rows[np.isfinite(labels[rows])]
    out = {}
    for name, values in scores.items():
        rho = spearman(values[rows].tolist(), labels[rows].tolist()) if len(rows) > 1 else None
        out[name] = float("nan") if rho is None else rho
    return out


def cluster_bootstrap(
    groups: Sequence[RankedGroup], scores: Mapping[str, Sequence[Sequence[float]]], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Point values and paired bootstrap rounds of every scorer's pairwise accuracy, top-1 and correlation.

    ``scores[name][g]`` are scorer ``name``'s scores of ``groups[g]``'s replies. Returns per
    metric (``pairwise_accuracy``, ``top1``, ``spearman``) ``{"point": {name: value},
    "rounds": {name: (n_boot,) array}}``; every round draws the same clusters for every scorer.
    """
    if not groups:
        raise ValueError("no ranked groups to judge")
    clusters = sorted({g.cluster for g in groups})
    n_pairs, n_groups = _counts(groups, clusters)
    totals = {name: cluster_totals(groups, s, clusters) for name, s in scores.items()}
    flat = {name: np.concatenate([np.asarray(x, dtype=float) for x in s]) for name, s in scores.items()}
    labels = np.concatenate([np.asarray(g.labels, dtype=float) for g in groups])
    reply_cluster = np.concatenate([[clusters.index(g.cluster)] * len(g.replies) for g in groups]).astype(int)

    weights = bootstrap_counts(len(clusters), n_boot, seed)  # (n_boot, C) multiplicities
    out: dict[str, dict[str, Any]] = {}
    for metric, count, field in (("pairwise_accuracy", n_pairs, "pair_credit"), ("top1", n_groups, "top1_credit")):
        out[metric] = {
            "point": {name: float(getattr(t, field).sum() / count.sum()) for name, t in totals.items()},
            "rounds": {name: (weights @ getattr(t, field)) / (weights @ count) for name, t in totals.items()},
        }
    all_rows = np.arange(len(labels))
    rounds = [_correlations(flat, labels, np.repeat(all_rows, w[reply_cluster].astype(int))) for w in weights]
    out["spearman"] = {
        "point": _correlations(flat, labels, all_rows),
        "rounds": {name: np.array([r[name] for r in rounds]) for name in scores},
    }
    return out


def summarize(
    result: Mapping[str, dict[str, Any]], baseline: str | None = None, alpha: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Per metric and scorer: the value with its interval, and (with ``baseline``) the paired difference to it."""
    table: dict[str, dict[str, Any]] = {}
    for metric, values in result.items():
        table[metric] = {}
        for name, point in values["point"].items():
            rounds = values["rounds"][name]
            row: dict[str, Any] = interval(rounds, point, alpha)
            if baseline is not None and name != baseline:
                row["vs_" + baseline] = difference(
                    rounds, values["rounds"][baseline], point, values["point"][baseline], alpha
                )
            table[metric][name] = row
    return table


def group_preferences(groups: Sequence[RankedGroup]) -> Preferences:
    """The humans' order as pairwise preferences: every within-group pair, the earlier reply preferred; replies in
    group order, their lengths in characters, clusters numbered in sorted order (as :func:`cluster_bootstrap`)."""
    clusters = sorted({g.cluster for g in groups})
    index = {c: k for k, c in enumerate(clusters)}
    lengths, reply_cluster, first, second = [], [], [], []
    for group in groups:
        start = len(lengths)
        lengths += reply_lengths(group.replies).tolist()
        reply_cluster += [index[group.cluster]] * len(group.replies)
        i, j = np.triu_indices(len(group.replies), k=1)
        first += (start + i).tolist()
        second += (start + j).tolist()
    return preferences(lengths, reply_cluster, first, second, np.ones(len(first)), len(clusters))


def length_aware(
    groups: Sequence[RankedGroup],
    scores: Mapping[str, Sequence[Sequence[float]]],
    n_boot: int = 1000,
    seed: int = 0,
    cluster_kind: str = "clusters",
) -> dict[str, Any]:
    """Every scorer's length-aware metrics on the groups (:func:`crs.eval.length_aware.length_aware_results`, the
    length-only scorer added), bootstrapped over the clusters :func:`cluster_bootstrap` draws with the same seed;
    ``cluster_kind`` names them in the report ("trees")."""
    if not groups:
        raise ValueError("no ranked groups to judge")
    flat = {name: np.concatenate([np.asarray(x, dtype=float) for x in s]) for name, s in scores.items()}
    return length_aware_results(group_preferences(groups), flat, n_boot, seed, cluster_kind)
