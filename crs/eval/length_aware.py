"""Length-aware agreement of scorers with a judge: how much of each scorer's agreement is reply length.

:func:`length_aware_results` computes, for several scorers on one set of the judge's pairwise
preferences, the metrics of :mod:`crs.rm.length_metrics` (accuracy on every decided pair, on the
pairs where the shorter reply was preferred and on length-matched pairs; Spearman with length;
information beyond length) with intervals from a bootstrap over clusters (prompts, or trees),
and always adds the length-only scorer as a row. :func:`length_aware_table` and
:func:`length_aware_notes` are the Markdown the score, best-of-n and oasst1 reports show.

The bootstrap draws the clusters :func:`crs.eval.bon.selection.paired_bootstrap_means` and
:func:`crs.eval.ranked_groups.cluster_bootstrap` draw with the same seed
(:func:`crs.eval.bon.selection.bootstrap_counts`), so each scorer's difference from the length
row (``vs_length``) is paired, and it pairs with the caller's other intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from crs.eval.bon.selection import TIE_EPS, bootstrap_counts
from crs.eval.hierarchical import interval
from crs.eval.tables import DASH, md_table, pct
from crs.rm.length_metrics import (
    CV_FOLDS,
    LENGTH_BAND,
    SUBSETS,
    Preferences,
    bootstrap_rounds,
    information_beyond_length,
    subset_counts,
)

LENGTH_SCORER = "length (characters)"
"""The length-only scorer's row: a reply's length in characters (it prefers the longer reply)."""


def _interval(point: float | None, rounds: np.ndarray, alpha: float) -> dict[str, float | None]:
    """``{"mean", "ci_low", "ci_high"}``; rounds that drew nothing to compute on (NaN) are left out."""
    finite = rounds[np.isfinite(rounds)]
    if point is None or finite.size == 0:
        return {"mean": point, "ci_low": None, "ci_high": None}
    return interval(finite, point, alpha)


def length_aware_results(
    prefs: Preferences,
    scorers: Mapping[str, np.ndarray],
    n_boot: int,
    seed: int,
    cluster_kind: str = "prompts",
    tie_eps: float = TIE_EPS,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Every scorer's length-aware metrics with intervals, the length-only scorer included.

    ``scorers[name]`` holds one value per reply of ``prefs``; :data:`LENGTH_SCORER` is added
    unless given. Returns (JSON-serialisable) ``band``, ``cluster_kind``, ``n_boot``,
    ``n_clusters``, ``n_replies``, the counts of :func:`crs.rm.length_metrics.subset_counts`, and
    ``scorers``: per scorer ``accuracy``, ``shorter_preferred_accuracy``,
    ``length_matched_accuracy`` (each ``{"mean", "ci_low", "ci_high"}``, and for every scorer but
    the length row ``vs_length``, the paired difference from it), ``length_spearman`` (the same
    form) and ``beyond_length`` (:class:`crs.rm.length_metrics.BeyondLength`, its cross-validation
    seeded by ``seed``). A mean is None where its subset is empty; an interval's ends are None
    where no round drew a pair of it.
    """
    out: dict[str, Any] = {
        "band": LENGTH_BAND,
        "cluster_kind": cluster_kind,
        "n_boot": n_boot,
        "n_clusters": prefs.n_clusters,
        "n_replies": int(prefs.lengths.size),
        **subset_counts(prefs),
        "scorers": {},
    }
    if prefs.n_pairs == 0:
        return out
    every = {**scorers, LENGTH_SCORER: scorers.get(LENGTH_SCORER, prefs.lengths)}
    counts = bootstrap_counts(prefs.n_clusters, n_boot, seed)
    rounds = {name: bootstrap_rounds(prefs, values, counts, tie_eps) for name, values in every.items()}
    for name, metrics in rounds.items():
        row: dict[str, Any] = {}
        for metric, (point, samples) in metrics.items():
            row[metric] = _interval(point, samples, alpha)
            base_point, base_samples = rounds[LENGTH_SCORER][metric]
            if metric in SUBSETS and name != LENGTH_SCORER and point is not None and base_point is not None:
                row[metric]["vs_length"] = _interval(point - base_point, samples - base_samples, alpha)
        row["beyond_length"] = information_beyond_length(prefs, every[name], alpha, seed=seed).as_dict()
        out["scorers"][name] = row
    return out


def _rate(entry: Mapping[str, Any]) -> str:
    if entry["mean"] is None:
        return DASH
    if entry["ci_low"] is None:
        return pct(entry["mean"])
    return f"{pct(entry['mean'])} ({pct(entry['ci_low'])}–{pct(entry['ci_high'])})"


def _correlation(entry: Mapping[str, Any]) -> str:
    if entry["mean"] is None:
        return DASH
    if entry["ci_low"] is None:
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ({entry['ci_low']:.2f} to {entry['ci_high']:.2f})"  # "to": ends may be negative


def _p_value(p: float | None) -> str:
    return DASH if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _coefficient(beyond: Mapping[str, Any]) -> str:
    if beyond["coef"] is None:
        return DASH
    if beyond["ci_low"] is None:
        return f"{beyond['coef']:+.2f}"
    return f"{beyond['coef']:+.2f} ({beyond['ci_low']:+.2f} to {beyond['ci_high']:+.2f})"


def _log_losses(beyond: Mapping[str, Any]) -> str:
    if beyond["cv_log_loss_length"] is None:
        return DASH
    return f"{beyond['cv_log_loss_length']:.3f} / {beyond['cv_log_loss_with_scorer']:.3f}"


def length_aware_table(results: Mapping[str, Any]) -> str:
    """One row per scorer (the length-only scorer last): the accuracies with their intervals, Spearman with length,
    and the information-beyond-length columns. Explained by :func:`length_aware_notes`."""
    if not results.get("scorers"):
        return "_No pair the judge decided: nothing to measure._"
    header = [
        "scorer",
        f"accuracy % (n={results['n_pairs']})",
        f"shorter preferred % (n={results['n_shorter_preferred']})",
        f"length-matched % (n={results['n_length_matched']})",
        "Spearman with length",
        "LR",
        "p (naive)",
        "robust p",
        "coefficient (95% CI, robust)",
        "CV log-loss: length / + scorer",
    ]
    names = [n for n in results["scorers"] if n != LENGTH_SCORER] + [LENGTH_SCORER]
    rows = []
    for name in names:
        row, beyond = results["scorers"][name], results["scorers"][name]["beyond_length"]
        rows.append(
            [
                name,
                *(_rate(row[metric]) for metric in SUBSETS),
                _correlation(row["length_spearman"]),
                DASH if beyond["lr"] is None else f"{beyond['lr']:.1f}",
                _p_value(beyond["p_lr"]),
                _p_value(beyond["p_robust"]),
                _coefficient(beyond),
                _log_losses(beyond),
            ]
        )
    return md_table(header, rows)


def length_aware_notes(results: Mapping[str, Any]) -> str:
    """What each column of :func:`length_aware_table` means, one line each (docs/evaluation.md has more)."""
    clusters = results.get("cluster_kind", "prompts")
    folds = max((row["beyond_length"]["cv_folds"] for row in results["scorers"].values()), default=CV_FOLDS)
    return "\n".join(
        [
            f"- accuracy: share of the pairs the judge decided (its ties left out) on which the scorer prefers the "
            f"judge's choice, scorer ties half; 95% interval from {results['n_boot']} bootstrap rounds over "
            f"{results['n_clusters']} {clusters}.",
            "- shorter preferred: the same on the pairs where the judge preferred the shorter reply (the length row "
            "gets 0 there by construction).",
            f"- length-matched: the same on the pairs whose lengths lie within {results['band']:.0%} of each other.",
            "- Spearman with length: rank correlation of the scorer with reply length in characters, every reply once.",
            "- LR, p (naive): likelihood-ratio test of adding the scorer's difference to a logistic model of the "
            "judge's choice on length alone (tanh of the standardised length difference); it treats pairs as "
            "independent, so p is too small when a cluster gives several pairs.",
            f"- robust p, coefficient: the scorer's coefficient in that model (log-odds per root mean square of "
            f"its difference) with a 95% interval and Wald p from a cluster-robust standard error, which lets the "
            f"pairs within each of the {clusters} depend on each other (optimistic under about 30 {clusters}): the "
            "scorer carries information beyond length when robust p < 0.05.",
            f"- CV log-loss: held-out log-loss per pair of the length model / the model with the scorer, "
            f"{folds}-fold over {clusters}; lower with the scorer: it predicts beyond length out of sample.",
        ]
    )
