"""The over-optimisation figure of RL runs: proxy reward and judge against the KL and the step.

Drawn from a run's ``overoptimization.jsonl`` (:mod:`crs.rl.overoptimization`) by the ``rl``
command, the sweep and the online loop, once the numbers are written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from crs.eval.figure_files import save_figure_atomic
from crs.io import read_jsonl
from crs.rl.overoptimization import OVEROPT_FILE, judge_peak


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
    fig = Figure(figsize=(10, 3.4 * len(panels)), layout="constrained")  # else a title overlaps the axis label above
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
