"""Statistical power, stated: the smallest difference a study could have detected.

Every study report (best-of-n, the RL sweep, the online loop) prints it beside its verdict, so
that "cannot tell" comes with "differences of X points or more would have been seen". The
normal approximation of a two-sided test at level alpha: a true difference of
(z_{1-alpha/2} + z_power) standard errors is detected with probability ``power``. The standard
error comes from the study's own rounds (its bootstrap, or the sweep's pivotal rounds over seeds
and prompts), read from their quantiles so that heavy-tailed rounds (few seeds) are not mistaken
for normal ones.
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


def power_of_rounds(differences: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """The detectable difference of an estimate known by its rounds (bootstrap or pivotal), from their quantiles.

    The study calls a difference real when its (1 - alpha) interval excludes 0; that interval's
    half-width h is (q_{1-alpha/2} - q_{alpha/2}) / 2 of the rounds. A true difference D is then
    seen with probability ``power`` when D = h + (q_power - q_{1-power}) / 2 (the estimate's
    spread above its centre, read from the rounds the same way). For normal rounds this is
    (z_{1-alpha/2} + z_power) SE, as :func:`minimum_detectable_difference`; for the heavy-tailed
    rounds of a few seeds (Student t) it is what the intervals actually need. ``standard_error``
    is h / z_{1-alpha/2}: the normal SE that would give the same interval.
    """
    rounds = np.asarray(differences, dtype=float)
    if not 0 < alpha < 1 or not 0.5 < power < 1:
        raise ValueError(f"alpha must be in (0, 1) and power in (0.5, 1), got {alpha}, {power}")
    low, high, below, above = np.quantile(rounds, [alpha / 2, 1 - alpha / 2, 1 - power, power])
    half_width = (high - low) / 2
    return {
        "standard_error": float(half_width / NormalDist().inv_cdf(1 - alpha / 2)),
        "minimum_detectable_difference": float(half_width + (above - below) / 2),
    }


def power_of_neighbours(samples: Sequence[np.ndarray], alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """The detectable difference between neighbouring groups (adjacent weights), from paired rounds.

    ``samples[i]`` holds group i's rounds, drawn with the same resampled prompts for every group
    (the best-of-n study's paired bootstrap, the sweep's pivotal rounds), so ``samples[i] -
    samples[i + 1]`` is the paired difference; :func:`power_of_rounds` reads its power from
    those rounds' quantiles, and the median over neighbours is reported (each of standard error
    and detectable difference). A standard error of 0 (neighbours equal in every round) means
    the study cannot tell them apart at all: :func:`power_line` says so.
    """
    if len(samples) < 2:
        raise ValueError("power between groups needs at least two groups")
    each = [power_of_rounds(np.asarray(a) - np.asarray(b), alpha, power) for a, b in zip(samples, samples[1:])]
    return {
        key: float(np.median([p[key] for p in each])) for key in ("standard_error", "minimum_detectable_difference")
    }


def power_of_interval(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """The detectable difference of an estimate known by its (1 - alpha) interval: SE = width / (2 z_{1-alpha/2})."""
    standard_error = (ci_high - ci_low) / (2 * NormalDist().inv_cdf(1 - alpha / 2))
    return {
        "standard_error": standard_error,
        "minimum_detectable_difference": minimum_detectable_difference(standard_error, alpha, power),
    }


def power_line(power: dict[str, float | None], subject: str, metric: str) -> str:
    """The sentence every report prints beside its verdict: the detectable difference, or why there is none.

    No standard error (None: one seed, so no interval) states no power; a standard error of 0
    (the compared values equal in every round) is no power either: "cannot tell", never
    "differences of 0.0 points or more"; nor is a detectable difference past the whole scale of
    a rate (100 points: 2 seeds' Student-t level with 1 degree of freedom gets there).
    """
    if power["standard_error"] is None:
        return (
            f"Power: none stated: {subject} have one seed per row, so no interval and no power (seed variance "
            "cannot be estimated from one run)."
        )
    if power["minimum_detectable_difference"] is not None and power["minimum_detectable_difference"] >= 1.0:
        return (
            f"Power: {subject} cannot detect even the largest possible difference in {metric}: the detectable "
            f"difference, {100 * power['minimum_detectable_difference']:.0f} points, is past the 100-point scale "
            f"(standard error {100 * power['standard_error']:.1f} points, from the study's own rounds); more seeds or "
            "prompts are needed."
        )
    if power["standard_error"] == 0:
        return (
            f"Power: {subject} cannot tell differences in {metric} apart: the compared values are equal in every "
            "round of the study's own resampling (standard error 0), so no difference could be detected."
        )
    return (
        f"Power: {subject} tell apart differences of {100 * power['minimum_detectable_difference']:.1f} points or "
        f"more in {metric} (80% power, 5% level; standard error {100 * power['standard_error']:.1f} points, from the "
        "study's own rounds)."
    )
