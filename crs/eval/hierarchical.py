"""Studies over seeds: intervals that count both seed and prompt variance (the sweep's).

A group (one weight or arm of the sweep) is a seeds x prompts matrix ``y[s, p]``, modelled as
``mu + a_s + b_p + e_sp`` (seed effect, prompt effect, cell noise). Its mean ``g`` varies by
``sa^2 / S + sb^2 / P + se^2 / (S P)``; the seed part is known from S - 1 degrees of freedom
only, so resampling the seeds (a bootstrap) understates it badly with 2-5 seeds (docs/study.md
gives the coverage measured). Here every round is a generalised pivotal quantity instead:

    round = g - sqrt(ms_seeds / (S P)) * T - k * (mean of the column means over resampled prompts - g)

with ``T`` a Student-t draw with S - 1 degrees of freedom (its own per group: the seeds are
separate runs), the resampled prompts shared by every group in a round (the prompts are
paired) and ``k`` shrinking the prompt part to the prompt effects alone (the seed part already
counts the cell noise). The rounds' 2.5% and 97.5% quantiles are the interval, and any
quantity derived round by round (a difference, a slope) keeps the seed and prompt structure.
One seed gives no interval: seed variance cannot be estimated from one run.
"""

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


def mean_squares(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """The two-way table's mean squares of a batch of seeds x prompts matrices, shape (B, S, P).

    ``seeds``: P * var(row means), expectation se^2 + P sa^2 (S - 1 df); ``prompts``: S * var(column
    means), expectation se^2 + S sb^2; ``residual``: the interaction mean square, expectation
    se^2 ((S - 1)(P - 1) df); ``prompt_shrink``: k = sqrt(max(prompts - residual, 0) / prompts), the
    share of the column means' spread that is prompt effect (0 where the columns do not vary).
    Every entry has shape (B,); with one seed or one prompt the terms that need two are NaN or 0.
    """
    matrices = np.asarray(matrices, dtype=float)
    n_seeds, n_prompts = matrices.shape[1:]
    rows, columns = matrices.mean(axis=2), matrices.mean(axis=1)
    grand = matrices.mean(axis=(1, 2))
    ms_seeds = n_prompts * rows.var(axis=1, ddof=1) if n_seeds > 1 else np.full(grand.shape, np.nan)
    ms_prompts = n_seeds * columns.var(axis=1, ddof=1) if n_prompts > 1 else np.zeros(grand.shape)
    if n_seeds > 1 and n_prompts > 1:
        residual = matrices - rows[:, :, None] - columns[:, None, :] + grand[:, None, None]
        ms_residual = (residual**2).sum(axis=(1, 2)) / ((n_seeds - 1) * (n_prompts - 1))
    else:
        ms_residual = np.zeros(grand.shape)
    prompt_effect = np.clip(ms_prompts - ms_residual, 0.0, None)
    shrink = np.sqrt(np.divide(prompt_effect, ms_prompts, out=np.zeros_like(prompt_effect), where=ms_prompts > 0))
    return {
        "mean": grand,
        "seeds": ms_seeds,
        "prompts": ms_prompts,
        "residual": ms_residual,
        "prompt_shrink": shrink,
        "column_means": columns,
    }


def _psd_root(matrices: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Symmetric square roots (or pseudo-inverse square roots) of a batch of symmetric matrices, negative eigenvalues
    as 0."""
    values, vectors = np.linalg.eigh(matrices)
    values = np.clip(values, 0.0, None)
    scale = np.abs(values).max(axis=-1, keepdims=True) * 1e-12
    roots = np.sqrt(values)
    if inverse:
        roots = np.divide(1.0, roots, out=np.zeros_like(roots), where=values > scale)
    return (vectors * roots[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def prompt_shrink(column_means: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The (B, G, G) map that turns the groups' resampled column-mean deviations into prompt effects alone.

    ``column_means`` (B, G, P): each group's per-prompt mean over its seeds; ``noise`` (B, G): the
    cell noise each group's column means carry (residual mean square / seeds). The column means'
    covariance over prompts is C = prompt effects' covariance B + diag(noise); the map
    M = B^(1/2) C^(-1/2) (B = C - diag(noise), negative eigenvalues as 0) gives M C M' = B, so every
    contrast of the groups' prompt parts has the prompt effects' variance, with the noise (already
    in the seed part) taken out. With one group M is sqrt(max(ms_prompts - ms_residual, 0) / ms_prompts).
    """
    n_prompts = column_means.shape[-1]
    centred = column_means - column_means.mean(axis=-1, keepdims=True)
    covariance = centred @ np.swapaxes(centred, -1, -2) / (n_prompts - 1)
    effects = covariance - noise[..., :, None] * np.eye(noise.shape[-1])
    return _psd_root(effects) @ _psd_root(covariance, inverse=True)


def pivotal_rounds(
    groups: Sequence[np.ndarray], prompt_draws: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """(B, R) rounds of each group, a batch of B seeds x prompts matrices (B, S_g, P) with S_g >= 2.

    ``prompt_draws`` (R, P) are the resampled prompt indices, the same for every group (paired);
    each group gets its own Student-t draws (its seeds are its own runs); the prompt parts are
    shrunk jointly (:func:`prompt_shrink`). The b-th batch entries of the groups form one study.
    See the module's docstring for the round's formula.
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    if any(g.shape[1] < 2 for g in groups):
        raise ValueError("rounds need at least two seeds per group: one run says nothing about seed variance")
    squares = [mean_squares(g) for g in groups]
    n_batch, n_prompts, n_rounds = groups[0].shape[0], groups[0].shape[2], prompt_draws.shape[0]
    # Resampled prompts as counts: the mean over a draw is column means @ counts / P (no (B, R, P) gather).
    counts = np.zeros((n_rounds, n_prompts))
    np.add.at(counts, (np.repeat(np.arange(n_rounds), n_prompts), prompt_draws.ravel()), 1.0)
    columns = np.stack([sq["column_means"] for sq in squares], axis=1)  # (B, G, P)
    grand = np.stack([sq["mean"] for sq in squares], axis=1)[..., None]  # (B, G, 1)
    noise = np.stack([sq["residual"] / g.shape[1] for sq, g in zip(squares, groups)], axis=1)
    prompt_part = prompt_shrink(columns, noise) @ (columns @ counts.T / n_prompts - grand)  # (B, G, R)
    out = []
    for index, (group, sq) in enumerate(zip(groups, squares)):
        n_seeds = group.shape[1]
        t_draws = rng.standard_normal((n_batch, n_rounds)) / np.sqrt(
            rng.chisquare(n_seeds - 1, (n_batch, n_rounds)) / (n_seeds - 1)
        )
        seed_part = np.sqrt(sq["seeds"] / (n_seeds * n_prompts))[:, None] * t_draws
        out.append(grand[:, index] - seed_part - prompt_part[:, index])
    return out


def seed_prompt_intervals(
    groups: Mapping[str, Sequence[Sequence[float]]], n_rounds: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Means of seeds x prompts matrices with (1 - alpha) intervals that count seed and prompt variance.

    ``groups[name][s][p]`` is a per-prompt value (an outcome against the reference, a judge
    score) of training seed ``s`` on prompt ``p``; every matrix covers the same prompts. Returns,
    per group, ``mean``, ``ci_low``, ``ci_high``, ``n_seeds`` and ``rounds`` (the (n_rounds,)
    pivotal rounds, paired across groups by their shared prompt draws, for derived quantities).
    A group with one seed has no interval: ``ci_low``, ``ci_high`` and ``rounds`` are None.
    """
    matrices = {name: _seed_prompt_matrix(values, name) for name, values in groups.items()}
    n_prompts = {m.shape[1] for m in matrices.values()}
    if len(n_prompts) > 1:
        raise ValueError(f"every group must cover the same prompts; prompt counts {sorted(n_prompts)}")
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be >= 1, got {n_rounds}")
    rng = np.random.default_rng(seed)
    draws = (
        rng.integers(0, n_prompts.pop(), size=(n_rounds, next(iter(matrices.values())).shape[1])) if matrices else None
    )
    with_seeds = [name for name, matrix in matrices.items() if matrix.shape[0] >= 2]
    rounds = (
        dict(zip(with_seeds, pivotal_rounds([matrices[name][None] for name in with_seeds], draws, rng)))
        if with_seeds
        else {}
    )
    out = {}
    for name, matrix in matrices.items():
        entry: dict[str, Any] = {
            "mean": float(matrix.mean()),
            "ci_low": None,
            "ci_high": None,
            "n_seeds": int(matrix.shape[0]),
            "rounds": None,
        }
        if name in rounds:
            entry["rounds"] = rounds[name][0]
            entry["ci_low"], entry["ci_high"] = (
                float(q) for q in np.quantile(entry["rounds"], [alpha / 2.0, 1.0 - alpha / 2.0])
            )
        out[name] = entry
    return out


def interval(samples: np.ndarray, point: float, alpha: float = 0.05) -> dict[str, float]:
    """``{"mean": point, "ci_low", "ci_high"}`` from bootstrap (or pivotal) rounds of a derived quantity."""
    low, high = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"mean": float(point), "ci_low": float(low), "ci_high": float(high)}


def _no_interval(point: float) -> dict[str, Any]:
    return {"mean": float(point), "ci_low": None, "ci_high": None}


def rounds_difference(groups: Mapping[str, Mapping[str, Any]], a: str, b: str, alpha: float = 0.05) -> dict[str, Any]:
    """Mean of group ``a`` minus group ``b`` with its interval, from :func:`seed_prompt_intervals`'
    paired rounds (no interval where either group has one seed)."""
    point = groups[a]["mean"] - groups[b]["mean"]
    if groups[a]["rounds"] is None or groups[b]["rounds"] is None:
        return _no_interval(point)
    return interval(groups[a]["rounds"] - groups[b]["rounds"], point, alpha)


def rounds_slope(
    groups: Mapping[str, Mapping[str, Any]], x: Mapping[str, float], alpha: float = 0.05
) -> dict[str, Any]:
    """Least-squares slope of the groups' means on ``x[group]`` with its interval, from the rounds
    (no interval where a group has one seed)."""
    names = list(x)
    xs = np.array([x[n] for n in names], dtype=float)
    if len(names) < 2 or np.ptp(xs) == 0:
        raise ValueError("a slope needs at least two groups with different x")
    centred = xs - xs.mean()
    means = np.array([groups[n]["mean"] for n in names])
    slope = float(centred @ means / (centred @ centred))
    if any(groups[n]["rounds"] is None for n in names):
        return _no_interval(slope)
    rounds = np.stack([groups[n]["rounds"] for n in names])  # groups x rounds
    return interval(centred @ rounds / (centred @ centred), slope, alpha)
