"""Studies over seeds: intervals that count both seed and prompt variance (the sweep's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _seed_prompt_matrix(values: Sequence[Sequence[float]], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty seeds x prompts matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def hierarchical_bootstrap(
    groups: Mapping[str, Sequence[Sequence[float]]], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Means of seeds x prompts matrices with intervals that count seed and prompt variance.

    ``groups[name][s][p]`` is a per-prompt value (an outcome against the reference, a judge
    score) of training seed ``s`` on prompt ``p``; every matrix covers the same prompts. Each
    bootstrap round resamples every group's seeds (independently: they are separate training
    runs) and then one set of prompts shared by all groups (the prompts are paired), so the
    rounds give the joint distribution of the groups' means. Returns, per group, the mean,
    the interval and the bootstrap means (``"boot"``, for derived quantities such as a
    difference or a slope).
    """
    matrices = {name: _seed_prompt_matrix(values, name) for name, values in groups.items()}
    n_prompts = {m.shape[1] for m in matrices.values()}
    if len(n_prompts) != 1:
        raise ValueError(f"every group must cover the same prompts; prompt counts {sorted(n_prompts)}")
    n_p = n_prompts.pop()
    rng = np.random.default_rng(seed)
    boot = {name: np.empty(n_boot) for name in matrices}
    for b in range(n_boot):
        prompts = rng.integers(0, n_p, size=n_p)
        for name, matrix in matrices.items():
            seeds = rng.integers(0, matrix.shape[0], size=matrix.shape[0])
            boot[name][b] = matrix[np.ix_(seeds, prompts)].mean()
    out = {}
    for name, matrix in matrices.items():
        low, high = np.quantile(boot[name], [alpha / 2.0, 1.0 - alpha / 2.0])
        out[name] = {"mean": float(matrix.mean()), "ci_low": float(low), "ci_high": float(high), "n_seeds": int(matrix.shape[0]), "boot": boot[name]}
    return out


def interval(samples: np.ndarray, point: float, alpha: float = 0.05) -> dict[str, float]:
    """``{"mean": point, "ci_low", "ci_high"}`` from bootstrap samples of a derived quantity."""
    low, high = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"mean": float(point), "ci_low": float(low), "ci_high": float(high)}


def bootstrap_difference(boot: Mapping[str, Mapping[str, Any]], a: str, b: str, alpha: float = 0.05) -> dict[str, float]:
    """Mean of group ``a`` minus group ``b`` with its interval, from :func:`hierarchical_bootstrap`'s rounds."""
    return interval(boot[a]["boot"] - boot[b]["boot"], boot[a]["mean"] - boot[b]["mean"], alpha)


def bootstrap_slope(boot: Mapping[str, Mapping[str, Any]], x: Mapping[str, float], alpha: float = 0.05) -> dict[str, float]:
    """Least-squares slope of the groups' means on ``x[group]`` with its bootstrap interval."""
    names = list(x)
    xs = np.array([x[n] for n in names], dtype=float)
    if len(names) < 2 or np.ptp(xs) == 0:
        raise ValueError("a slope needs at least two groups with different x")
    centred = xs - xs.mean()
    means = np.array([boot[n]["mean"] for n in names])
    rounds = np.stack([boot[n]["boot"] for n in names])  # groups x rounds
    slope = float(centred @ means / (centred @ centred))
    return interval(centred @ rounds / (centred @ centred), slope, alpha)
