"""Post-hoc length calibration of a reward: the reward's trend in reply length, fitted once, subtracted.

After Huang et al. (2025, "Post-hoc Reward Calibration"): a locally weighted regression (LOWESS) of
the reward on the reply's length in characters, fitted on a calibration set of replies, gives the
part of the reward that length alone predicts; the calibrated reward is the reward minus that trend
at the reply's length. Replies of equal length keep their order (the same amount is subtracted from
both); across lengths, the calibration set's trend is flat.

The LOWESS is Cleveland's (1979): at each point ``x0``, the ``k = ceil(span * n)`` nearest
calibration lengths (ties at the k-th distance included) get tricube weights ``(1 - (d / h)^3)^3``,
``h`` the k-th smallest distance, and a weighted straight line is fitted; ``iterations`` robustness
passes then down-weight points with large residuals (bisquare weights ``(1 - (e / 6s)^2)^2``, ``s``
the median absolute residual). The defaults, span 2/3 and 3 passes, are Cleveland's. The fitted trend
is kept at every distinct calibration length; between them it is interpolated linearly, and beyond
the shortest and longest calibration replies it stays at its end values (a reply longer than any
the set holds gets no more subtracted than the longest one did).

The file (:data:`CALIBRATION_FILE`, beside a reward-model run's ``reward_stats.json``, or any path a
user names) also keeps the mean and std of the *calibrated* reward on the calibration set: the
z-scale of a calibrated source, since the raw reward's statistics no longer describe it. Pure
numpy here, so the rm stage that fits and the RL, scoring and best-of-n stages that apply share it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crs.config import ConfigError
from crs.io import write_json_atomic
from crs.rm.metrics import reward_stats

CALIBRATION_FILE = "length_calibration.json"
KIND = "crs length calibration"
LENGTH_UNIT = "characters"
DEFAULT_SPAN = 2.0 / 3.0
DEFAULT_ITERATIONS = 3
# How far (in the reward's std) a refit's raw mean and std may sit from reward_stats.json and still be the same
# reward: the demo's preference RM, rescored in bf16 by the refit script, moved its mean by 2e-4 std; an edited
# head weight moves them by far more.
SAME_REWARD_TOLERANCE = 0.02
# The calibration_set of a fit on a reward-model run's own replies (the rm stage, or the script refitting it).
RUN_CALIBRATION_SET = "the run's own {split} replies"
FIT_COMMAND = "python scripts/fit_length_calibration.py"


def _tricube(distances: np.ndarray, h: float) -> np.ndarray:
    """Tricube weights of ``distances`` within bandwidth ``h``; ``h == 0`` (k neighbours at the point itself):
    weight 1 at distance 0, 0 elsewhere."""
    if h <= 0:
        return (distances == 0).astype(float)
    u = np.clip(distances / h, 0.0, 1.0)
    return (1.0 - u**3) ** 3


def _local_line(x: np.ndarray, y: np.ndarray, weights: np.ndarray, x0: float) -> float:
    """The weighted least-squares line through (x, y), at ``x0``; the weighted mean where the weighted x have no
    spread."""
    total = weights.sum()
    x_mean = float(weights @ x) / total
    y_mean = float(weights @ y) / total
    dx = x - x_mean
    sxx = float(weights @ dx**2)
    if sxx <= 1e-12 * total * max(1.0, x_mean * x_mean):  # one length carries all the weight: no slope to fit
        return y_mean
    return y_mean + float(weights @ (dx * y)) / sxx * (x0 - x_mean)


def _fit_at(x: np.ndarray, y: np.ndarray, robustness: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """The local line's value at each of ``points``, with neighbourhoods of ``k`` points."""
    fitted = np.empty(len(points))
    for i, x0 in enumerate(points):
        distances = np.abs(x - x0)
        h = float(np.partition(distances, k - 1)[k - 1])
        weights = _tricube(distances, h)
        combined = weights * robustness
        # Every neighbour down-weighted to 0 as an outlier: the plain tricube fit rather than none.
        fitted[i] = _local_line(x, y, combined if combined.sum() > 0 else weights, float(x0))
    return fitted


def lowess(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    span: float = DEFAULT_SPAN,
    iterations: int = DEFAULT_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Cleveland's LOWESS of ``y`` on ``x`` (see the module docstring): ``(distinct x ascending, the fit there)``.

    ``span`` in (0, 1]: the share of the points in each neighbourhood (at least 2 points, or all when
    fewer); ``iterations`` >= 0 robustness passes (they stop early once the median absolute residual is
    0: the points already lie on the fit).
    """
    xs, ys = np.asarray(x, dtype=float).reshape(-1), np.asarray(y, dtype=float).reshape(-1)
    if xs.shape != ys.shape or not len(xs):
        raise ValueError(f"lowess needs x and y of one non-zero length; got {xs.shape} and {ys.shape}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("lowess needs finite x and y")
    if not 0 < span <= 1 or iterations < 0:
        raise ValueError(f"lowess: span {span} must be in (0, 1] and iterations {iterations} >= 0")
    n = len(xs)
    k = min(n, max(2, math.ceil(span * n)))
    grid, at_grid = np.unique(xs, return_inverse=True)
    robustness = np.ones(n)
    fitted = _fit_at(xs, ys, robustness, grid, k)
    for _ in range(iterations):
        residuals = ys - fitted[at_grid]
        s = float(np.median(np.abs(residuals)))
        if s <= 1e-12 * max(1.0, float(np.mean(np.abs(ys)))):
            break
        u = np.clip(residuals / (6.0 * s), -1.0, 1.0)
        robustness = (1.0 - u**2) ** 2
        fitted = _fit_at(xs, ys, robustness, grid, k)
    return grid, fitted


@dataclass(frozen=True)
class LengthCalibration:
    """A reward's fitted trend in reply length, and the statistics of the reward with it removed.

    ``lengths`` (ascending, distinct) and ``trend`` are the LOWESS fit on the calibration set;
    ``stats`` (``mean``, ``std``, quantiles, ``n``) describe the calibrated reward there, ``raw_stats``
    the reward before; ``calibration_set`` says which replies, ``source`` which reward.
    """

    lengths: np.ndarray
    trend: np.ndarray
    span: float
    iterations: int
    stats: dict[str, Any]
    raw_stats: dict[str, Any]
    calibration_set: str
    source: str

    def trend_at(self, lengths: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted trend at ``lengths``: interpolated linearly, constant beyond the calibration set's range."""
        return np.interp(np.asarray(lengths, dtype=float), self.lengths, self.trend)

    def apply(self, rewards: Sequence[float] | np.ndarray, lengths: Sequence[float] | np.ndarray) -> np.ndarray:
        """The calibrated rewards: ``rewards - trend(lengths)``, elementwise."""
        values = np.asarray(rewards, dtype=float)
        return values - self.trend_at(lengths).reshape(values.shape)

    def to_json(self) -> dict[str, Any]:
        """What :data:`CALIBRATION_FILE` holds."""
        return {
            "kind": KIND,
            "length_unit": LENGTH_UNIT,
            "calibration_set": self.calibration_set,
            "source": self.source,
            "span": self.span,
            "iterations": self.iterations,
            "stats": self.stats,
            "raw_stats": self.raw_stats,
            "lengths": self.lengths.tolist(),
            "trend": self.trend.tolist(),
        }

    @property
    def fitted_on_run(self) -> bool:
        """Whether it was fitted on its reward-model run's own replies (not on a file a user named)."""
        prefix, _, suffix = RUN_CALIBRATION_SET.partition("{split}")
        return self.calibration_set.startswith(prefix) and self.calibration_set.endswith(suffix)

    def check_same_reward(self, saved: dict[str, Any] | None, path: str | Path) -> None:
        """Refuse a run's own calibration (at ``path``) fitted to another reward than the run gives now.

        Its raw statistics must match the run's ``reward_stats.json`` (``saved``), which describes the
        same replies, to within :data:`SAME_REWARD_TOLERANCE` of the reward's spread; they differ when the
        reward changed after the fit (a joint RM's head weight edited in ``rm_format.json``). A calibration
        fitted on other replies is not checked.
        """
        if not self.fitted_on_run or not saved or "mean" not in saved or "std" not in saved:
            return
        fitted = (float(self.raw_stats["mean"]), float(self.raw_stats["std"]))
        now = (float(saved["mean"]), float(saved["std"]))
        scale = max(abs(now[1]), 1e-6)
        if max(abs(fitted[0] - now[0]), abs(fitted[1] - now[1])) > SAME_REWARD_TOLERANCE * scale:
            raise ConfigError(
                f"{path} was fitted to a reward with mean {fitted[0]:.4g} and std {fitted[1]:.4g} on the run's "
                f"replies, and the run now gives mean {now[0]:.4g}, std {now[1]:.4g} (its reward changed since, e.g. "
                f"a joint RM's head weight): refit it: {FIT_COMMAND} {Path(path).parent}"
            )

    @property
    def digest(self) -> str:
        """A short hash of the fit, so a cache of calibrated scores notices a refitted file."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fit_length_calibration(
    lengths: Sequence[float] | np.ndarray,
    rewards: Sequence[float] | np.ndarray,
    calibration_set: str,
    source: str,
    span: float = DEFAULT_SPAN,
    iterations: int = DEFAULT_ITERATIONS,
) -> LengthCalibration:
    """Fit the trend of ``rewards`` in ``lengths`` (characters) on a calibration set of at least 2 replies."""
    values = np.asarray(rewards, dtype=float).reshape(-1)
    if len(values) < 2:
        raise ValueError(f"a length calibration needs at least 2 replies; {calibration_set} has {len(values)}")
    grid, trend = lowess(lengths, values, span, iterations)
    calibrated = values - np.interp(np.asarray(lengths, dtype=float).reshape(-1), grid, trend)
    return LengthCalibration(
        grid, trend, span, iterations, reward_stats(calibrated), reward_stats(values), calibration_set, source
    )


def write_length_calibration(path: str | Path, calibration: LengthCalibration) -> None:
    """Write ``calibration`` to ``path`` atomically."""
    write_json_atomic(path, calibration.to_json())


def _refit(path: Path) -> str:
    return f"refit it ({FIT_COMMAND}; docs/stages.md) or point length_calibration at another file"


def _checked(data: Any, path: Path) -> dict[str, Any]:
    """``data`` if it is a calibration file's contents, else a ConfigError naming what is wrong."""
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConfigError(f'{path} is not a length calibration (no "kind": {KIND!r}); {_refit(path)}')
    if data.get("length_unit") != LENGTH_UNIT:
        raise ConfigError(f"{path}: length_unit {data.get('length_unit')!r}, expected {LENGTH_UNIT!r}; {_refit(path)}")
    lengths, trend = data.get("lengths"), data.get("trend")
    shaped = isinstance(lengths, list) and isinstance(trend, list) and len(lengths) == len(trend) > 0
    if not shaped or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in [*lengths, *trend]):
        raise ConfigError(
            f'{path}: "lengths" and "trend" must be lists of finite numbers of one non-zero length; {_refit(path)}'
        )
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise ConfigError(f'{path}: "lengths" must be strictly increasing; {_refit(path)}')
    for key in ("stats", "raw_stats"):
        stats = data.get(key)
        if not isinstance(stats, dict) or not all(
            isinstance(stats.get(s), (int, float)) and math.isfinite(stats[s]) for s in ("mean", "std")
        ):
            raise ConfigError(f"{path}: {key!r} needs a finite mean and std; {_refit(path)}")
    return data


def read_length_calibration(path: str | Path) -> LengthCalibration:
    """The calibration saved at ``path``; a one-line ConfigError for a missing, unreadable or misshapen file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"length calibration {path}: no such file; {_refit(path)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a JSON file ({err}); {_refit(path)}") from None
    data = _checked(data, path)
    return LengthCalibration(
        np.array(data["lengths"], dtype=float),
        np.array(data["trend"], dtype=float),
        float(data.get("span", DEFAULT_SPAN)),
        int(data.get("iterations", DEFAULT_ITERATIONS)),
        dict(data["stats"]),
        dict(data["raw_stats"]),
        str(data.get("calibration_set", "")),
        str(data.get("source", "")),
    )


__all__ = [
    "CALIBRATION_FILE",
    "DEFAULT_ITERATIONS",
    "DEFAULT_SPAN",
    "FIT_COMMAND",
    "LENGTH_UNIT",
    "LengthCalibration",
    "RUN_CALIBRATION_SET",
    "fit_length_calibration",
    "lowess",
    "read_length_calibration",
    "write_length_calibration",
]
