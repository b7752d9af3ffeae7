"""The score report's figures (:mod:`crs.eval.score`): one win-rate heatmap per scorer, the mean scores.

Each is written by :func:`crs.eval.figure_files.save_figure_atomic` (headless, atomic). Training
code never imports this module: a stage's figures are drawn once its numbers are written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crs.eval.figure_files import save_figure_atomic
from crs.eval.score_report import judge_role
from crs.eval.tables import DASH


def plot_win_rate_heatmap(results: Mapping[str, Any], scorer: str, path: str | os.PathLike[str]) -> None:
    """Heatmap of one scorer's win-rate matrix (row beats column, %) saved as PNG."""
    models = results["models"]
    matrix = results["win_rates"][scorer]
    n = len(models)
    values = np.full((n, n), np.nan)  # NaN diagonal renders blank
    for i, row in enumerate(models):
        for j, col in enumerate(models):
            if row != col and col in matrix[row]:  # a pair a pairwise judge never judged stays blank
                values[i, j] = 100.0 * matrix[row][col]["win_rate"]

    size = 1.2 + 0.9 * n
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(n), labels=models, rotation=30, ha="right")
    ax.set_yticks(range(n), labels=models)
    ax.set_xlabel("column model")
    ax.set_ylabel("row model")
    ax.set_title(f"{scorer}: % prompts row beats column (n={results['n_prompts']})")
    for i in range(n):
        for j in range(n):
            text = DASH if i == j else "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.1f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save_figure_atomic(fig, path)


def plot_mean_scores(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Grouped bar chart of mean score (± std) per model, one panel per scorer.

    Scorers use different scales, so each gets its own panel and y axis. A pairwise judge
    gives no scores and has no panel; with no scorer at all there is nothing to plot
    (ValueError).
    """
    models, scorers = results["models"], results.get("score_scorers", results["scorers"])
    if not scorers:
        raise ValueError("no scorer gives per-model scores: nothing to plot")
    stats = results["model_stats"]
    fig = Figure(figsize=(max(4.0, 1.0 + 0.8 * len(models)) * len(scorers), 3.8))
    axes = fig.subplots(1, len(scorers), squeeze=False)[0]
    positions = np.arange(len(models))
    for ax, scorer in zip(axes, scorers):
        means = [stats[m]["scores"][scorer]["mean"] for m in models]
        stds = [stats[m]["scores"][scorer]["std"] for m in models]
        ax.bar(positions, means, yerr=stds, capsize=3, color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(positions, labels=models, rotation=30, ha="right")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(scorer + (f" ({judge_role(results)})" if scorer == results["judge"] else ""))
        ax.set_ylabel("mean score")
    save_figure_atomic(fig, path)
