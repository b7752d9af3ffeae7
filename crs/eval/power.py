"""Statistical power, stated: the smallest difference a study could have detected.

Every study report (best-of-n, the RL sweep, the online loop) prints it beside its verdict, so
that "cannot tell" comes with "differences of X points or more would have been seen". The
normal approximation of a two-sided test at level alpha: a true difference of
(z_{1-alpha/2} + z_power) standard errors is detected with probability ``power``. The standard
error comes from the study's own bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def minimum_detectable_difference(standard_error: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """(z_{1-alpha/2} + z_power) * SE: the smallest true difference this study detects with probability ``power``.

    Normal approximation for a two-sided test at level ``alpha`` whose estimate has standard
    error ``standard_error``. Tells, before reading a null result, which effects it could have
    seen (the far tail of the wrong sign is neglected).
    """
    if standard_error < 0 or not math.isfinite(standard_error):
        raise ValueError(f"standard_error must be finite and >= 0, got {standard_error}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    normal = NormalDist()
    return (normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)) * standard_error


def power_of_neighbours(samples: Sequence[np.ndarray], alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """The detectable difference between neighbouring groups (adjacent weights), from paired bootstrap samples.

    ``samples[i]`` holds group i's bootstrap rounds, drawn with the same resampled prompts for every
    group, so ``samples[i] - samples[i + 1]`` is the paired difference; its spread is that
    difference's standard error (the median over neighbours is reported).
    """
    if len(samples) < 2:
        raise ValueError("power between groups needs at least two groups")
    spreads = [float(np.std(np.asarray(a) - np.asarray(b), ddof=1)) for a, b in zip(samples, samples[1:])]
    standard_error = float(np.median(spreads))
    return {"standard_error": standard_error, "minimum_detectable_difference": minimum_detectable_difference(standard_error, alpha, power)}


def power_of_interval(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """The detectable difference of an estimate known by its (1 - alpha) interval: SE = width / (2 z_{1-alpha/2})."""
    standard_error = (ci_high - ci_low) / (2 * NormalDist().inv_cdf(1 - alpha / 2))
    return {"standard_error": standard_error, "minimum_detectable_difference": minimum_detectable_difference(standard_error, alpha, power)}


def power_line(power: dict[str, float], subject: str, metric: str) -> str:
    """The sentence every report prints beside its verdict."""
    return (f"Power: {subject} tell apart differences of {100 * power['minimum_detectable_difference']:.1f} points or more in {metric} "
            f"(80% power, 5% level; standard error {100 * power['standard_error']:.1f} points, from the study's own bootstrap).")
