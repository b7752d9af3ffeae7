"""The figures of a best-of-n study (:mod:`crs.eval.bon.instrument`): the best-of-n curves and the weight curve."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from crs.eval.figure_files import save_figure_atomic


def plot_bon_curves(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Best-of-n: the judge's value of each scorer's pick against KL_bon (an upper bound on the
    KL to the sampling policy), one line per scorer, with its interval; the judge's own curve
    (the ceiling) dashed."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    kl = results["kl_bon"]
    for i, (name, entry) in enumerate(results["scorers"].items()):
        means = [p["mean"] for p in entry["gold"]]
        style = {"color": "black", "linestyle": "--"} if name == "judge" else {"color": f"C{i % 10}"}
        ax.plot(kl, means, marker="o", markersize=3, label=name, **style)
        ax.fill_between(
            kl,
            [p["ci_low"] for p in entry["gold"]],
            [p["ci_high"] for p in entry["gold"]],
            alpha=0.12,
            color=style["color"],
        )
    ax.set_xlabel("KL_bon = log n - (n-1)/n (upper bound on KL), nats")
    ax.set_ylabel(f"judge ({results['judge']}) of the best-of-n pick")
    ax.set_title(f"best-of-n on one pool: {results['pool']['prompts']} prompts x {results['pool']['samples']} replies")
    ax.legend(fontsize=7, ncol=2)
    save_figure_atomic(fig, path)


def plot_weight_curve(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Against the preference weight: the best-of-m win rate (left) and the pairwise agreement
    with the judge (right), each with its paired-bootstrap interval."""
    grid = results["weights"]["grid"]
    entries = [results["scorers"][f"w={w:g}"] for w in grid]
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    panels = (
        (left, [e["win_rate"][-1] for e in entries], f"best-of-{results['pool']['samples']} win rate vs the pool"),
        (right, [e["pairwise_accuracy"] for e in entries], "pairwise agreement with the judge"),
    )
    for ax, points, title in panels:
        means = [100 * p["mean"] for p in points]
        errors = [[100 * (p["mean"] - p["ci_low"]) for p in points], [100 * (p["ci_high"] - p["mean"]) for p in points]]
        ax.errorbar(grid, means, yerr=errors, marker="o", capsize=3)
        ax.set_xlabel("preference weight w (absolute: 1 - w)")
        ax.set_ylabel("%")
        ax.set_title(title)
    best = results["weights"]["best"]
    left.axvspan(
        best["interval"][0],
        best["interval"][1],
        alpha=0.12,
        color="C2",
        label=f"best weight {best['weight']:g} (95% interval)",
    )
    left.legend(fontsize=8)
    save_figure_atomic(fig, path)
