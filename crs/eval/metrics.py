"""Evaluation maths: win rates, bootstrap intervals, agreement and rank aggregation.

Everything here works on plain Python sequences and numpy; no model is loaded. The
stage script generates replies, scores them with every scorer (the gold judge and each
reward model or combination) and hands the per-prompt numbers to these functions;
:mod:`crs.eval.report` turns the results into Markdown and plots.

Conventions used throughout:

* Scores are *paired*: ``scores_a[i]`` and ``scores_b[i]`` belong to the same prompt.
* A per-prompt *outcome* is ``1.0`` (first model wins), ``0.0`` (second model wins)
  or ``0.5`` (tie). Win rates are means of outcomes, so a tie counts as half a win.
* Prediction files follow AlpacaEval's layout: a JSON list of objects with
  ``instruction``, ``output`` and ``generator`` (plus our ``dataset``, ``prompt_id``
  and ``run``), so they can be fed to AlpacaEval unchanged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from crs.data.schema import DataError
from crs.io import write_json_atomic

# --------------------------------------------------------------------------------------
# Prediction files (AlpacaEval format)
# --------------------------------------------------------------------------------------

#: Required keys of a prediction row and the type each must have.
PREDICTION_KEYS: dict[str, type] = {
    "instruction": str,
    "output": str,
    "generator": str,
    "dataset": str,
    "prompt_id": str,
    "run": int,
}


def _check_prediction_row(row: Any, where: str, index: int) -> None:
    """Raise :class:`DataError` naming ``where`` and ``index`` if ``row`` is malformed."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: row {index}: expected an object, got {type(row).__name__}")
    missing = [key for key in PREDICTION_KEYS if key not in row]
    if missing:
        raise DataError(
            f"{where}: row {index}: missing required key(s) {missing}; "
            f"every row needs {sorted(PREDICTION_KEYS)}"
        )
    for key, expected in PREDICTION_KEYS.items():
        value = row[key]
        # bool is a subclass of int, but a boolean run index is certainly a bug.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise DataError(
                f"{where}: row {index}: key {key!r} must be {expected.__name__}, "
                f"got {type(value).__name__} ({value!r})"
            )


def write_predictions(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write prediction rows as an AlpacaEval JSON list, atomically.

    Rows are validated first (same rules as :func:`read_predictions`) so a bad row never
    reaches disk; extra keys are written unchanged.
    """
    # Local import: crs.eval.report imports this module, so a top-level import would cycle.

    plain_rows = [dict(row) for row in rows]
    for index, row in enumerate(plain_rows):
        _check_prediction_row(row, f"{path} (writing)", index)
    write_json_atomic(path, plain_rows)


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an AlpacaEval-format prediction file.

    Raises :class:`DataError` naming the file and the row index when the file is not a
    JSON list or a row lacks a required key or has the wrong type.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prediction rows, got {type(data).__name__}")
    for index, row in enumerate(data):
        _check_prediction_row(row, str(path), index)
    return data


# --------------------------------------------------------------------------------------
# Win rates and intervals
# --------------------------------------------------------------------------------------


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


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
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
    array = _as_finite_array(values, "values")
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


def pairwise_outcomes(
    scores_a: Sequence[float], scores_b: Sequence[float], tie_eps: float = 1e-9
) -> list[float]:
    """Per-prompt outcomes of A vs B: 1.0 if A's score is higher by more than
    ``tie_eps``, 0.0 if B's is, 0.5 otherwise (a tie)."""
    a = _as_finite_array(scores_a, "scores_a")
    b = _as_finite_array(scores_b, "scores_b")
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


def _check_aligned(per_model: Mapping[str, Sequence[Any]], what: str) -> int:
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
    _check_aligned(per_model_scores, "per-model scores")
    result: dict[tuple[str, str], WinRate] = {}
    for a in per_model_scores:
        for b in per_model_scores:
            if a != b:
                result[(a, b)] = win_rate(
                    per_model_scores[a], per_model_scores[b], tie_eps, n_boot=n_boot, seed=seed
                )
    return result


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
    y = _as_finite_array(outcomes, "outcomes")
    diff = _as_finite_array(lengths_a, "lengths_a") - _as_finite_array(lengths_b, "lengths_b")
    if y.size == 0 or y.size != diff.size:
        raise ValueError(f"need one length pair per outcome: {y.size} outcomes, {diff.size} length pairs")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    rate, beta = _length_controlled(y, diff, ridge)
    rng = np.random.default_rng(seed)
    boots = np.array([_length_controlled(y[idx], diff[idx], ridge)[0] for idx in rng.integers(0, y.size, size=(n_boot, y.size))])
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return LengthControlledWinRate(rate, float(low), float(high), beta)


def average_length(outputs: Sequence[str]) -> int:
    """AlpacaEval's ``avg_length``: the mean length of the outputs in characters, truncated
    to a whole number as ``int(mean)`` does (0 without outputs)."""
    return int(np.mean([len(text) for text in outputs])) if len(outputs) else 0


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else 100.0 * value


def leaderboard_row(model: str, result: WinRate, outputs: Sequence[str]) -> dict[str, Any]:
    """One AlpacaEval-style leaderboard row (percentages) for ``model``.

    ``standard_error`` is None where it is undefined (a single verdict); ``avg_length`` is
    :func:`average_length` of every output of the model.
    """
    return {
        "model": model,
        "win_rate": 100.0 * result.win_rate,
        "standard_error": _percent(result.standard_error),
        "n_wins": result.n_wins,
        "n_wins_base": result.n_wins_base,
        "n_draws": result.n_draws,
        "n_total": result.n_total,
        "avg_length": average_length(outputs),
        "discrete_win_rate": _percent(result.discrete_win_rate),
        "n_failed": result.n_failed,
        "ci_low": 100.0 * result.ci_low,
        "ci_high": 100.0 * result.ci_high,
    }


def leaderboard_from_outcomes(
    outcomes: Mapping[str, Sequence[float | None] | Mapping[int, float | None]],
    outputs: Mapping[str, Sequence[str]],
    reference: str,
    n_boot: int = 1000,
    seed: int = 0,
    include_reference: bool = True,
) -> list[dict[str, Any]]:
    """AlpacaEval leaderboard from per-prompt outcomes against ``reference``, best first.

    ``outcomes[model]`` holds the judge's verdicts of ``model`` against the reference (see
    :func:`win_rate_from_outcomes`; None where the judge failed): a list aligned with
    ``outputs[model]``, or a mapping from a prompt's index in ``outputs`` to its verdict when
    the judge saw only some prompts. The reference's own entry (all 0.5) makes its anchor
    row. ``avg_length`` counts every output of the model, judged or not (as AlpacaEval counts
    every output it was given); ``lc_win_rate`` (with ``lc_ci_low``/``lc_ci_high``) is the
    length-controlled win rate (:func:`length_controlled_win_rate`) over the prompts with a
    verdict.
    """
    if reference not in outputs:
        raise KeyError(f"no outputs for the reference model {reference!r}")
    rows = []
    for model, given in outcomes.items():
        if model == reference and not include_reference:
            continue
        if model not in outputs:
            raise KeyError(f"no outputs for model {model!r} (needed for avg_length)")
        if len(outputs[model]) != len(outputs[reference]):
            raise ValueError(f"model {model!r}: {len(outputs[model])} outputs, the reference {len(outputs[reference])}")
        by_index = dict(given) if isinstance(given, Mapping) else dict(enumerate(given))
        if isinstance(given, Sequence) and len(given) != len(outputs[model]):
            raise ValueError(f"model {model!r}: {len(given)} outcomes for {len(outputs[model])} outputs")
        result = win_rate_from_outcomes(list(by_index.values()), n_boot=n_boot, seed=seed)
        row = leaderboard_row(model, result, outputs[model])
        judged = sorted(i for i, v in by_index.items() if v is not None and not (isinstance(v, float) and math.isnan(v)))
        lc = length_controlled_win_rate(
            [by_index[i] for i in judged], [len(outputs[model][i]) for i in judged],
            [len(outputs[reference][i]) for i in judged], n_boot=n_boot, seed=seed,
        )
        row.update(lc_win_rate=100.0 * lc.win_rate, lc_ci_low=100.0 * lc.ci_low, lc_ci_high=100.0 * lc.ci_high, length_coef=lc.length_coef)
        rows.append(row)
    rows.sort(key=lambda row: (-row["win_rate"], row["model"]))
    return rows


def leaderboard_rows(
    per_model_scores: Mapping[str, Sequence[float]],
    outputs: Mapping[str, Sequence[str]],
    reference: str,
    tie_eps: float = 1e-9,
    n_boot: int = 1000,
    seed: int = 0,
    include_reference: bool = True,
) -> list[dict[str, Any]]:
    """AlpacaEval leaderboard from a scorer's scores: every model against ``reference``, best first.

    ``win_rate`` and ``standard_error`` are in percent as AlpacaEval reports them (see
    :class:`WinRate`); ``avg_length`` is :func:`average_length` of the model's outputs;
    ``lc_win_rate`` (with ``lc_ci_low``/``lc_ci_high``) is the length-controlled win rate
    (:func:`length_controlled_win_rate`). The
    reference itself scores exactly 50% (all draws) and is kept as an anchor row
    unless ``include_reference`` is False.
    """
    if reference not in per_model_scores:
        raise KeyError(f"reference model {reference!r} has no scores; models: {list(per_model_scores)}")
    _check_aligned(per_model_scores, "per-model scores")
    outcomes = {m: pairwise_outcomes(s, per_model_scores[reference], tie_eps) for m, s in per_model_scores.items()}
    return leaderboard_from_outcomes(outcomes, outputs, reference, n_boot=n_boot, seed=seed, include_reference=include_reference)


# --------------------------------------------------------------------------------------
# Pairwise judges: verdicts per (model pair, prompt) instead of scores per model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairwiseVerdicts:
    """What a pairwise judge said (an AlpacaEval annotator, a CSV of verdicts).

    ``by_pair[(a, b)][item]`` is the outcome of ``a`` against ``b`` on one prompt (item id):
    1 ``a`` wins, 0 ``b`` wins, 0.5 a tie, a fraction from a weighted judge; None where the
    judge failed (AlpacaEval's null preference). Each unordered pair is stored once, in
    either orientation; a pair or a prompt that is absent was not judged.
    """

    by_pair: Mapping[tuple[str, str], Mapping[str, float | None]]

    def between(self, a: str, b: str) -> dict[str, float | None] | None:
        """Outcomes of ``a`` against ``b`` per item id; None when the pair was never judged."""
        if (a, b) in self.by_pair:
            return dict(self.by_pair[(a, b)])
        if (b, a) in self.by_pair:
            return {item: None if v is None else 1.0 - v for item, v in self.by_pair[(b, a)].items()}
        return None

    def models(self) -> set[str]:
        """Every model the judge compared."""
        return {name for pair in self.by_pair for name in pair}


def ranking_from_pairwise(
    outcomes: Mapping[tuple[str, str], float], candidates: Sequence[str], tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> list[str]:
    """One prompt's ordering from a pairwise judge's verdicts on every pair of ``candidates``.

    ``outcomes[(a, b)]`` in [0, 1] is how strongly ``a`` beats ``b`` (either orientation of
    each pair suffices); it counts as ``a``'s support over ``b`` and ``1 - outcome`` as
    ``b``'s over ``a``, and :func:`ranked_pairs` orders the candidates.
    """
    support = {x: {y: 0.0 for y in candidates} for x in candidates}
    for x, y in combinations(candidates, 2):
        if (x, y) in outcomes:
            value = float(outcomes[(x, y)])
        elif (y, x) in outcomes:
            value = 1.0 - float(outcomes[(y, x)])
        else:
            raise ValueError(f"no verdict on {x} vs {y}")
        support[x][y], support[y][x] = value, 1.0 - value
    return ranked_pairs(candidates, support, tie_break, candidate_order)


# --------------------------------------------------------------------------------------
# Agreement between a scorer and the judge
# --------------------------------------------------------------------------------------


def _check_outcome_pairs(scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float]) -> None:
    if len(scorer_outcomes) != len(judge_outcomes):
        raise ValueError(
            f"scorer and judge outcomes differ in length: {len(scorer_outcomes)} vs {len(judge_outcomes)}"
        )
    for value in (*scorer_outcomes, *judge_outcomes):
        if value not in (0.0, 0.5, 1.0):
            raise ValueError(f"outcomes must be 0, 0.5 or 1; found {value!r}")


def agreement(scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float]) -> float:
    """Fraction of comparisons where the scorer picks the same winner as the judge.

    Outcomes are 1 / 0 / 0.5 per compared pair. They agree only when equal: a tie
    matches only a tie, so "tie vs a winner" counts as disagreement (the scorer failed
    to separate replies the judge separated, or vice versa) and "tie vs tie" counts as
    agreement.
    """
    _check_outcome_pairs(scorer_outcomes, judge_outcomes)
    if not scorer_outcomes:
        raise ValueError("agreement needs at least one comparison")
    matches = sum(1 for s, j in zip(scorer_outcomes, judge_outcomes) if s == j)
    return matches / len(scorer_outcomes)


def agreement_by_group(
    scorer_outcomes: Sequence[float], judge_outcomes: Sequence[float], groups: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """:func:`agreement` per group (e.g. prompt category).

    Returns ``{group: {"agreement": float, "n": int}}`` with groups sorted by name.
    """
    _check_outcome_pairs(scorer_outcomes, judge_outcomes)
    if len(groups) != len(scorer_outcomes):
        raise ValueError(f"{len(groups)} group labels for {len(scorer_outcomes)} comparisons")
    buckets: dict[str, tuple[list[float], list[float]]] = {}
    for s, j, group in zip(scorer_outcomes, judge_outcomes, groups):
        bucket = buckets.setdefault(group, ([], []))
        bucket[0].append(s)
        bucket[1].append(j)
    return {
        group: {"agreement": agreement(*buckets[group]), "n": len(buckets[group][0])}
        for group in sorted(buckets)
    }


# --------------------------------------------------------------------------------------
# Rank aggregation: Tideman ranked pairs per prompt, Borda points across prompts
# --------------------------------------------------------------------------------------

#: How :func:`ranked_pairs` settles what the margins leave open (docs/evaluation.md has a worked example).
TIE_BREAKS = ("support", "candidate_order")

#: A best-first ballot: each entry is a model, or a list of models ranked equal (a tie).
Ballot = Sequence[str | Sequence[str]]


def ballot_tiers(ballot: Ballot) -> list[list[str]]:
    """A ballot as best-first tiers: ``["a", ["b", "c"]]`` -> ``[["a"], ["b", "c"]]``."""
    tiers = []
    for item in ballot:
        if isinstance(item, str):
            tiers.append([item])
        elif isinstance(item, (list, tuple)) and item and all(isinstance(name, str) for name in item):
            tiers.append(list(item))
        else:
            raise ValueError(f"a ballot lists model names, or lists of models ranked equal; found {item!r}")
    return tiers


def _check_ballots(ballots: Sequence[Ballot]) -> list[str]:
    """Sorted candidate list; every ballot must rank the same candidates exactly once."""
    if not ballots:
        raise ValueError("need at least one ballot")
    candidates: list[str] | None = None
    for index, ballot in enumerate(ballots):
        names = [name for tier in ballot_tiers(ballot) for name in tier]
        if len(set(names)) != len(names):
            raise ValueError(f"ballot {index} ranks a candidate twice: {names}")
        if candidates is None:
            candidates = sorted(names)
        elif sorted(names) != candidates:
            raise ValueError(
                f"ballot {index} ranks {sorted(names)} but ballot 0 ranks {candidates}; "
                "all ballots must rank the same candidates"
            )
    return candidates or []


def _reaches(graph: Mapping[str, set[str]], start: str, target: str) -> bool:
    """Whether ``target`` is reachable from ``start`` along locked edges."""
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return False


def candidate_positions(candidates: Sequence[str], candidate_order: Sequence[str] | None = None) -> dict[str, int]:
    """Each candidate's place in ``candidate_order`` (models it does not list follow, alphabetically)."""
    listed = [name for name in dict.fromkeys(candidate_order or []) if name in set(candidates)]
    rest = sorted(name for name in candidates if name not in set(listed))
    return {name: index for index, name in enumerate(listed + rest)}


def ranked_pairs(
    candidates: Sequence[str],
    support: Mapping[str, Mapping[str, float]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> list[str]:
    """Order ``candidates`` by Tideman's ranked pairs from pairwise ``support``.

    ``support[x][y]`` is how much the voters prefer x to y (ballots ranking x above y; a
    judge's verdict). Each pair becomes an edge winner -> loser weighted by the margin
    ``support[w][l] - support[l][w]``; edges are taken largest margin first and locked
    unless they would close a cycle; the ordering is read off the locked graph by repeatedly
    taking a candidate no locked edge points at. What the margins leave open is settled by
    ``tie_break``:

    * ``support`` (the default): a pair with margin 0 is not locked (no preference to
      lock); equal margins are taken in alphabetical (winner, loser) order; when several
      candidates are unbeaten, the one with more total pairwise support goes first, then
      alphabetical order.
    * ``candidate_order``: a pair with margin 0 is locked too, the candidate listed first in
      ``candidate_order`` winning it; equal margins are taken in that order; unbeaten
      candidates go in that order. (Tools that keep zero-margin pairs, as the reference
      study's did, work this way.)

    The result depends only on the support, never on the order of the ballots behind it.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    position = candidate_positions(candidates, candidate_order)
    ordered = sorted(candidates, key=position.__getitem__)
    edges = []
    for x, y in combinations(ordered, 2):  # x comes first in candidate order
        margin = support[x][y] - support[y][x]
        if margin > 0 or (margin == 0 and tie_break == "candidate_order"):
            edges.append((margin, x, y))
        elif margin < 0:
            edges.append((-margin, y, x))
    if tie_break == "support":
        edges.sort(key=lambda edge: (-edge[0], edge[1], edge[2]))
    else:
        edges.sort(key=lambda edge: (-edge[0], position[edge[1]], position[edge[2]]))

    locked: dict[str, set[str]] = {name: set() for name in candidates}
    for _, winner, loser in edges:
        # Locking winner -> loser closes a cycle iff loser already reaches winner.
        if not _reaches(locked, loser, winner):
            locked[winner].add(loser)

    total_support = {x: sum(support[x][y] for y in candidates if y != x) for x in candidates}
    first = (lambda name: (-total_support[name], name)) if tie_break == "support" else position.__getitem__
    remaining = set(candidates)
    ordering = []
    while remaining:
        beaten = {loser for w in remaining for loser in locked[w]}
        best = min((name for name in remaining if name not in beaten), key=first)
        ordering.append(best)
        remaining.remove(best)
    return ordering


def tideman_ranked_pairs(
    ballots: Sequence[Ballot], tie_break: str = "support", candidate_order: Sequence[str] | None = None
) -> list[str]:
    """Aggregate best-first ballots into one ordering with Tideman's ranked pairs.

    The support of x over y is the number of ballots ranking x strictly above y; a ballot
    that ranks them equal supports neither. :func:`ranked_pairs` does the rest, settling
    what the margins leave open by ``tie_break`` (``support`` or ``candidate_order``).
    """
    candidates = _check_ballots(ballots)
    support = {x: {y: 0 for y in candidates} for x in candidates}
    for ballot in ballots:
        place = {name: rank for rank, tier in enumerate(ballot_tiers(ballot)) for name in tier}
        for x, y in combinations(candidates, 2):
            if place[x] < place[y]:
                support[x][y] += 1
            elif place[y] < place[x]:
                support[y][x] += 1
    return ranked_pairs(candidates, support, tie_break, candidate_order)


def borda_points(ranking: Ballot) -> dict[str, float]:
    """Linear Borda points for a best-first ranking of n models: 1st gets 1, the
    k-th (1-based) gets (n - k + 1) / n, so last gets 1/n. For 3 models: 1, 2/3, 1/3.

    Models ranked equal (a list inside the ranking) share the points of the places they
    take: ``["a", ["b", "c"]]`` gives a 1 and b and c (2/3 + 1/3) / 2 = 1/2 each.
    """
    tiers = ballot_tiers(ranking)
    names = [name for tier in tiers for name in tier]
    if len(set(names)) != len(names):
        raise ValueError(f"ranking names a model twice: {names}")
    n, place, points = len(names), 0, {}
    for tier in tiers:
        share = sum((n - (place + k)) / n for k in range(len(tier))) / len(tier)
        points.update({name: share for name in tier})
        place += len(tier)
    return points


def scores_to_ballot(scores: Mapping[str, float]) -> list[str]:
    """Best-first ballot from one scorer's scores on one prompt.

    Equal scores are ordered alphabetically so that the ballot is deterministic.
    """
    for name, value in scores.items():
        if not math.isfinite(value):
            raise ValueError(f"score of {name!r} is not finite: {value}")
    return sorted(scores, key=lambda name: (-scores[name], name))


def ballots_from_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]], prompt_ids: Sequence[str]
) -> dict[str, list[list[str]]]:
    """One ballot per scorer per prompt: ``scores[scorer][model][i]`` is the score of
    ``model`` on ``prompt_ids[i]``. Returns ``{prompt_id: [ballot per scorer]}``."""
    per_prompt: dict[str, list[list[str]]] = {pid: [] for pid in prompt_ids}
    if len(per_prompt) != len(prompt_ids):
        raise ValueError("prompt ids must be unique")
    for scorer, per_model in scores.items():
        n = _check_aligned(per_model, f"scores of scorer {scorer!r}")
        if n != len(prompt_ids):
            raise ValueError(f"scorer {scorer!r} has {n} scores per model for {len(prompt_ids)} prompts")
        for index, pid in enumerate(prompt_ids):
            per_prompt[pid].append(scores_to_ballot({m: per_model[m][index] for m in per_model}))
    return per_prompt


def summarize_points(points: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """``{model: {prompt_id: Borda points}}`` -> ``{model: {"mean", "std" (population), "per_prompt"}}``."""
    result = {}
    for model in sorted(points):
        values = np.array(list(points[model].values()))
        result[model] = {
            "mean": float(values.mean()),
            "std": float(values.std()),  # ddof=0: population std over prompts
            "per_prompt": dict(points[model]),
        }
    return result


def aggregate_rankings(
    per_prompt_ballots: Mapping[str, Sequence[Ballot]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Borda points per model averaged over prompts.

    For each prompt, a single ballot is used as the ranking directly (models it ranks equal
    share their places' points); several ballots (one per scorer, one per annotator) are
    first merged with :func:`tideman_ranked_pairs` under ``tie_break``. Returns ``{model:
    {"mean": float, "std": float (population), "per_prompt": {prompt_id: points}}}``.
    Every prompt's ballots must rank the same models; an error names the prompt.
    """
    if not per_prompt_ballots:
        raise ValueError("need ballots for at least one prompt")
    points: dict[str, dict[str, float]] = {}
    expected: list[str] | None = None
    for pid, ballots in per_prompt_ballots.items():
        try:
            candidates = _check_ballots(ballots)
        except ValueError as err:
            raise ValueError(f"prompt {pid!r}: {err}") from None
        if expected is None:
            expected = candidates
        elif candidates != expected:
            raise ValueError(f"prompt {pid!r} ranks {candidates} but earlier prompts rank {expected}")
        ranking = ballots[0] if len(ballots) == 1 else tideman_ranked_pairs(ballots, tie_break, candidate_order)
        for model, value in borda_points(ranking).items():
            points.setdefault(model, {})[pid] = value
    return summarize_points(points)


def group_rankings(
    ballots_by_group: Mapping[str, Mapping[str, Sequence[Ballot]]],
    tie_break: str = "support",
    candidate_order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Borda points of a human study with groups of annotators.

    ``ballots_by_group[group][prompt_id]`` holds that group's ballots on the prompt. Each
    group is aggregated on its own (:func:`aggregate_rankings`: Tideman per prompt, then
    Borda points averaged over the group's prompts); ``overall`` pools every annotator's
    ballots per prompt; ``across_groups`` gives, per model, the mean of the groups' mean
    points and their spread (population std, min, max over groups). Returns ``{"overall":
    {model: {"mean", "std"}}, "groups": {group: {model: {"mean", "std"}}}, "across_groups":
    {model: {"mean", "std", "min", "max", "n_groups"}}, "group_prompts": {group: int}}``.
    """
    if not ballots_by_group:
        raise ValueError("need ballots of at least one group")
    pooled: dict[str, list[Ballot]] = {}
    groups = {}
    for group, per_prompt in ballots_by_group.items():
        for pid, ballots in per_prompt.items():
            pooled.setdefault(pid, []).extend(ballots)
        groups[group] = aggregate_rankings(per_prompt, tie_break, candidate_order)
    overall = aggregate_rankings(pooled, tie_break, candidate_order)
    models = sorted(overall)
    for group, result in groups.items():
        if sorted(result) != models:
            raise ValueError(f"group {group!r} ranks {sorted(result)} but the other groups rank {models}")
    across = {}
    for model in models:
        means = np.array([groups[g][model]["mean"] for g in groups])
        across[model] = {"mean": float(means.mean()), "std": float(means.std()), "min": float(means.min()),
                         "max": float(means.max()), "n_groups": int(means.size)}
    return {
        "overall": {m: {"mean": overall[m]["mean"], "std": overall[m]["std"]} for m in models},
        "groups": {g: {m: {"mean": r[m]["mean"], "std": r[m]["std"]} for m in models} for g, r in groups.items()},
        "across_groups": across,
        "group_prompts": {g: len(per_prompt) for g, per_prompt in ballots_by_group.items()},
    }


def summary_stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, population std, min, max and count of ``values``."""
    array = _as_finite_array(values, "values")
    if array.size == 0:
        raise ValueError("summary_stats needs at least one value")
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


# --------------------------------------------------------------------------------------
# Studies over seeds: intervals that count both seed and prompt variance
# --------------------------------------------------------------------------------------


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
