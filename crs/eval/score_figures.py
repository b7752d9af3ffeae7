"""Every figure crs draws: win-rate heatmaps, mean scores, over-optimisation and best-of-n curves.

Each is written by :func:`crs.eval.figure_files.save_figure_atomic` (headless, atomic). Training
code never imports this module: a stage's figures are drawn once its numbers are written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crs.eval.figure_files import save_figure_atomic
from crs.eval.score_report import judge_role
from crs.eval.tables import DASH
from crs.io import read_jsonl
from crs.rl.overoptimization import OVEROPT_FILE, judge_peak


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


def plot_overoptimization(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike[str], proxy_key: str = "reward/combined"
) -> None:
    """Proxy reward and judge score against sqrt(KL to the reference) and against the step.

    ``runs[name]`` is a run's ``overoptimization.jsonl`` rows; several runs overlay (a sweep).
    The judge's best logged point is starred: past it, the policy pleases its reward models
    more and the judge less (Gao et al. 2022).
    """
    judge_keys = sorted({k for rows in runs.values() for r in rows for k in r if k.startswith("judge/")})
    judge_key = judge_keys[0] if judge_keys else None
    panels = [(proxy_key, "proxy: combined reward")] + ([(judge_key, f"judge: {judge_key[6:]}")] if judge_key else [])
    fig = Figure(figsize=(10, 3.4 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        for (key, title), (ax_kl, ax_step) in zip(panels, axes):
            points = [(r["kl/sqrt"], r["step"], r[key]) for r in rows if r.get(key) is not None]
            if not points:
                continue
            kl, step, value = zip(*points)
            ax_kl.plot(kl, value, "o-", color=color, label=name, markersize=3)
            ax_step.plot(step, value, "o-", color=color, label=name, markersize=3)
            if key == judge_key:
                peak = judge_peak(rows, key)
                ax_kl.plot(
                    [peak["kl"] ** 0.5 if peak["kl"] > 0 else 0.0], [peak["judge"]], "*", color=color, markersize=14
                )
                ax_step.plot([peak["step"]], [peak["judge"]], "*", color=color, markersize=14)
            ax_kl.set_title(title)
            ax_kl.set_xlabel("sqrt(KL to the reference), nats")
            ax_step.set_title(title)
            ax_step.set_xlabel("PPO step")
    axes[0][1].legend(fontsize=8)
    save_figure_atomic(fig, path)


def plot_run_overoptimization(run_dir: str | os.PathLike[str], run_name: str) -> None:
    """``<run>/overoptimization.png`` from the run's over-optimisation log, where it has one (PPO)."""
    log = Path(run_dir) / OVEROPT_FILE
    if log.is_file():
        plot_overoptimization({run_name: read_jsonl(log)}, Path(run_dir) / "overoptimization.png")
