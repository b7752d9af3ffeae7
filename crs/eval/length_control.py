"""Length-controlled win rates: the judge's verdicts regressed on the reply-length difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from crs.eval.win_rates import as_finite_array


@dataclass(frozen=True)
class LengthControlledWinRate:
    """The win rate a model would have at equal reply length (see :func:`length_controlled_win_rate`)."""

    win_rate: float
    ci_low: float
    ci_high: float
    length_coef: float  # > 0: the judge prefers the longer reply; < 0: the shorter one

    def as_dict(self) -> dict[str, float]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


def _fit_length_logit(outcomes: np.ndarray, x: np.ndarray, weights: np.ndarray, ridge: float) -> tuple[float, float]:
    """Weighted logistic regression ``P(A wins) = sigmoid(theta + beta * x)`` by Newton's method
    (fractional outcomes allowed); ``ridge`` penalises ``beta`` only. Returns (theta, beta)."""
    theta = beta = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta + beta * x)))
        residual = weights * (outcomes - p)
        gradient = np.array([residual.sum(), (residual * x).sum() - ridge * beta])
        curvature = weights * p * (1.0 - p)
        hessian = np.array([[curvature.sum() + 1e-9, (curvature * x).sum()], [(curvature * x).sum(), (curvature * x * x).sum() + ridge]])
        step = np.linalg.solve(hessian, gradient)
        theta, beta = theta + step[0], beta + step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(theta), float(beta)


def _length_controlled(outcomes: np.ndarray, length_diff: np.ndarray, ridge: float) -> tuple[float, float]:
    mean = float(outcomes.mean())
    if mean in (0.0, 1.0):  # nothing to separate: every prompt went the same way
        return mean, 0.0
    scale = float(np.sqrt(np.mean(length_diff**2)))
    x = np.tanh(length_diff / scale) if scale > 0 else np.zeros_like(length_diff)
    # Each sign of length difference carries half the weight, so a model that is shorter on
    # most prompts cannot pass its length advantage into the intercept.
    weights = np.ones_like(x)
    shorter, longer = length_diff < 0, length_diff > 0
    if shorter.any() and longer.any():
        n_signed = int(shorter.sum() + longer.sum())
        weights[shorter] = n_signed / (2.0 * shorter.sum())
        weights[longer] = n_signed / (2.0 * longer.sum())
    theta, beta = _fit_length_logit(outcomes, x, weights, ridge)
    return 1.0 / (1.0 + math.exp(-theta)), beta


def length_controlled_win_rate(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    ridge: float = 0.1,
) -> LengthControlledWinRate:
    """A's win rate over B at equal reply length, in the spirit of AlpacaEval 2's length control.

    Fits ``P(A wins prompt i) = sigmoid(theta + beta * tanh(d_i / s))`` to the judge's outcomes
    (ties 0.5, fractional preferences as they are), where ``d_i`` is A's reply length minus B's
    and ``s`` the root mean square of the ``d_i``; the length-controlled win rate is
    ``sigmoid(theta)``, the predicted rate at ``d = 0``. Prompts where A is shorter and prompts
    where it is longer carry equal total weight, and ``beta`` has a small ridge penalty, so a
    judge that only rewards brevity gives ~50% even when A is shorter on most prompts. With
    equal lengths everywhere it equals the raw win rate. The interval is a paired bootstrap
    over prompts (refitting each time). AlpacaEval 2 also models each instruction's
    difficulty across many models; with a handful of models crs leaves that term out.
    """
    y = as_finite_array(outcomes, "outcomes")
    diff = as_finite_array(lengths_a, "lengths_a") - as_finite_array(lengths_b, "lengths_b")
    if y.size == 0 or y.size != diff.size:
        raise ValueError(f"need one length pair per outcome: {y.size} outcomes, {diff.size} length pairs")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    rate, beta = _length_controlled(y, diff, ridge)
    rng = np.random.default_rng(seed)
    boots = np.array([_length_controlled(y[idx], diff[idx], ridge)[0] for idx in rng.integers(0, y.size, size=(n_boot, y.size))])
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return LengthControlledWinRate(rate, float(low), float(high), beta)
