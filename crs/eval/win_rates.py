"""Win rates with standard errors and bootstrap intervals, from paired scores or per-prompt outcomes.

Conventions used throughout :mod:`crs.eval`:

* Scores are *paired*: ``scores_a[i]`` and ``scores_b[i]`` belong to the same prompt.
* A per-prompt *outcome* is ``1.0`` (first model wins), ``0.0`` (second model wins)
  or ``0.5`` (tie). Win rates are means of outcomes, so a tie counts as half a win.

Everything works on plain sequences and numpy; no model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WinRate:
    """Head-to-head result of model A against model B (the "base") over paired prompts.

    Computed as AlpacaEval computes its leaderboard (``alpaca_eval.metrics``): every
    per-prompt outcome lies in [0, 1] (1 A wins, 0 B wins, 0.5 a tie, a fraction from a
    weighted judge); ``win_rate`` is their mean; ``standard_error`` the standard error of
    that mean with the sample standard deviation, ``std(outcomes, ddof=1) / sqrt(n)``
    (without ties or fractions that is ``sqrt(p(1-p)/(n-1))``; NaN below two outcomes);
    ``n_wins`` / ``n_wins_base`` / ``n_draws`` count outcomes above / below / at 0.5;
    ``discrete_win_rate`` is the mean after rounding each outcome to 0, 0.5 or 1.
    ``n_failed`` counts comparisons the judge failed on (null preferences): they are left
    out of everything else, so ``n_total`` counts only real verdicts. ``ci_low``/``ci_high``
    come from a seeded paired bootstrap over prompts.
    """

    win_rate: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    standard_error: float
    ci_low: float
    ci_high: float
    n_failed: int = 0
    discrete_win_rate: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain-dict form (JSON-serialisable: an undefined standard error becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    """1-D float array; rejects NaN/inf because they would silently count as ties."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Resamples ``values`` with replacement ``n_boot`` times using a generator seeded by
    ``seed`` and returns the ``alpha/2`` and ``1 - alpha/2`` quantiles of the means.
    """
    array = as_finite_array(values, "values")
    if array.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = array.size
    means = np.empty(n_boot)
    # Resample in chunks so that n_boot * n indices never need much memory.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = array[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def pairwise_outcomes(scores_a: Sequence[float], scores_b: Sequence[float], tie_eps: float = 1e-9) -> list[float]:
    """Per-prompt outcomes of A vs B: 1.0 if A's score is higher by more than
    ``tie_eps``, 0.0 if B's is, 0.5 otherwise (a tie)."""
    a = as_finite_array(scores_a, "scores_a")
    b = as_finite_array(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.size} vs {b.size}")
    diff = a - b
    outcomes = np.where(diff > tie_eps, 1.0, np.where(diff < -tie_eps, 0.0, 0.5))
    return outcomes.tolist()


def discrete_outcome(value: float) -> float:
    """An outcome rounded to a verdict: 1.0 above 0.5, 0.0 below, 0.5 at 0.5 (AlpacaEval's
    ``discrete_win_rate`` rounding of a weighted judge's preference)."""
    return 1.0 if value > 0.5 else 0.0 if value < 0.5 else 0.5


def split_failed(outcomes: Sequence[float | None]) -> tuple[np.ndarray, int]:
    """(the real outcomes as an array, how many were None or NaN: a judge that failed).

    Every real outcome must be a finite number in [0, 1]."""
    kept, failed = [], 0
    for value in outcomes:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failed += 1
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"outcomes must be numbers in [0, 1] or None; found {value!r}")
        kept.append(float(value))
    array = np.asarray(kept, dtype=float)
    if array.size and (not np.all(np.isfinite(array)) or np.any((array < 0.0) | (array > 1.0))):
        bad = sorted({v for v in kept if not 0.0 <= v <= 1.0})[:5]
        raise ValueError(f"outcomes must lie in [0, 1] (1 = win, 0 = loss, 0.5 = tie); found {bad}")
    return array, failed


def win_rate_from_outcomes(
    outcomes: Sequence[float | None], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> WinRate:
    """Win rate from per-prompt outcomes: a judge that gives verdicts, not scores.

    An outcome is 1 (A wins), 0 (B wins), 0.5 (tie) or any fraction in between (a weighted
    judge's probability that A is better); ``None`` or NaN means the judge failed on that
    prompt and is counted in ``n_failed``, never silently dropped. See :class:`WinRate`
    for how each number is computed (AlpacaEval's conventions).
    """
    array, failed = split_failed(outcomes)
    if array.size == 0:
        raise ValueError(f"win rate needs at least one outcome that is not null ({failed} failed)")
    n = int(array.size)
    low, high = bootstrap_ci(array, n_boot=n_boot, seed=seed, alpha=alpha)
    return WinRate(
        win_rate=float(array.mean()),
        n_wins=int(np.sum(array > 0.5)),
        n_wins_base=int(np.sum(array < 0.5)),
        n_draws=int(np.sum(array == 0.5)),
        n_total=n,
        standard_error=float(array.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        ci_low=low,
        ci_high=high,
        n_failed=failed,
        discrete_win_rate=float(np.mean([discrete_outcome(v) for v in array])),
    )


def win_rate(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    tie_eps: float = 1e-9,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> WinRate:
    """Win rate of A over B from paired per-prompt scores; ties count as half.

    The bootstrap resamples prompts, so each resample keeps A's and B's scores for the
    same prompt together (a paired bootstrap).
    """
    outcomes = pairwise_outcomes(scores_a, scores_b, tie_eps)
    return win_rate_from_outcomes(outcomes, n_boot=n_boot, seed=seed, alpha=alpha)


def check_aligned(per_model: Mapping[str, Sequence[Any]], what: str) -> int:
    """Common length of every model's list; raises if they differ."""
    lengths = {model: len(values) for model, values in per_model.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{what} are not aligned by prompt: lengths {lengths}")
    return next(iter(lengths.values()), 0)


def head_to_head(
    per_model_scores: Mapping[str, Sequence[float]],
    tie_eps: float = 1e-9,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[tuple[str, str], WinRate]:
    """:class:`WinRate` for every ordered pair ``(a, b)`` of distinct models.

    ``per_model_scores[model][i]`` is the model's score on prompt ``i``; all lists must
    be aligned. ``result[(a, b)].win_rate`` is how often ``a`` beats ``b``.
    """
    check_aligned(per_model_scores, "per-model scores")
    result: dict[tuple[str, str], WinRate] = {}
    for a in per_model_scores:
        for b in per_model_scores:
            if a != b:
                result[(a, b)] = win_rate(per_model_scores[a], per_model_scores[b], tie_eps, n_boot=n_boot, seed=seed)
    return result
