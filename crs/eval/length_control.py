"""Length-controlled win rates, the check that says when they cannot be trusted, and the
win rate on prompts whose two replies have about the same length.

* :func:`length_controlled_win_rate`: the judge's verdicts regressed on the reply-length
  difference, read at equal length (the LC win rate).
* :func:`length_separation`: whether length alone nearly separates the verdicts while few
  prompts lie near equal length; then the LC extrapolates and is flagged unreliable.
* :func:`length_matched_win_rate` (and :func:`pooled_length_matched_win_rate` over seeds):
  the raw win rate on the prompts whose replies lie within :data:`LENGTH_BAND` of each
  other in length, or "cannot tell" below :data:`MIN_MATCHED` such prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from crs.eval.win_rates import as_finite_array, discrete_outcome, win_rate_from_outcomes
from crs.rm.length_metrics import LENGTH_BAND, fit_logistic, length_matched, length_term

MIN_MATCHED = 20
"""Below this many length-matched prompts the length-matched win rate says "cannot tell"."""

SEPARATION_THRESHOLD = 0.90
"""Length *nearly separates* the verdicts when it orders at least this share of the
(won prompt, lost prompt) pairs (:func:`length_separation`)."""

MIN_NEAR_EQUAL_PER_SIDE = 10
"""Under near separation the LC is trusted only with at least this many length-matched
prompts on each side of equal length (the model shorter, the model longer)."""


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


def _length_controlled(outcomes: np.ndarray, length_diff: np.ndarray, ridge: float) -> tuple[float, float]:
    mean = float(outcomes.mean())
    if mean in (0.0, 1.0):  # nothing to separate: every prompt went the same way
        return mean, 0.0
    x = length_term(length_diff)
    # Each sign of length difference carries half the weight, so a model that is shorter on
    # most prompts cannot pass its length advantage into the intercept.
    weights = np.ones_like(x)
    shorter, longer = length_diff < 0, length_diff > 0
    if shorter.any() and longer.any():
        n_signed = int(shorter.sum() + longer.sum())
        weights[shorter] = n_signed / (2.0 * shorter.sum())
        weights[longer] = n_signed / (2.0 * longer.sum())
    # The ridge penalises beta only; the intercept's tiny one only keeps the curvature invertible.
    design = np.column_stack([np.ones_like(x), x])
    theta, beta = (float(c) for c in fit_logistic(design, outcomes, weights, [1e-9, ridge]))
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
    where it is longer carry equal total weight, and ``beta`` has a small ridge penalty, so
    that a length advantage on most prompts does not pass into ``theta``. With equal lengths
    everywhere it equals the raw win rate; a length-blind judge gives about the raw rate. The
    interval is a paired bootstrap over prompts (refitting each time). AlpacaEval 2 also models
    each instruction's difficulty across many models; with a handful of models crs leaves that
    term out.

    It fails, as AlpacaEval's does, when length alone nearly separates the verdicts and few
    prompts lie near equal length: then ``sigmoid(theta)`` is an extrapolation fixed by the
    ridge and the spread of ``d``, not by the data (a judge that only rewards brevity, with A
    shorter by 100-200 characters on 88% of prompts and longer by 5-20 on the rest, gives
    about 3% while the raw rate is 88%), and its bootstrap interval is narrow all the same.
    :func:`length_separation` detects that case; :func:`length_matched_win_rate` is the
    number to read beside it.
    """
    y = as_finite_array(outcomes, "outcomes")
    diff = as_finite_array(lengths_a, "lengths_a") - as_finite_array(lengths_b, "lengths_b")
    if y.size == 0 or y.size != diff.size:
        raise ValueError(f"need one length pair per outcome: {y.size} outcomes, {diff.size} length pairs")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    rate, beta = _length_controlled(y, diff, ridge)
    rng = np.random.default_rng(seed)
    boots = np.array(
        [_length_controlled(y[idx], diff[idx], ridge)[0] for idx in rng.integers(0, y.size, size=(n_boot, y.size))]
    )
    low, high = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return LengthControlledWinRate(rate, float(low), float(high), beta)


def _paired_lengths(
    outcomes: Sequence[float], lengths_a: Sequence[float], lengths_b: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = as_finite_array(outcomes, "outcomes")
    a, b = as_finite_array(lengths_a, "lengths_a"), as_finite_array(lengths_b, "lengths_b")
    if y.size != a.size or y.size != b.size:
        raise ValueError(f"need one length pair per outcome: {y.size} outcomes, {a.size} and {b.size} lengths")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    return y, a, b


@dataclass(frozen=True)
class LengthSeparation:
    """What :func:`length_separation` saw, and whether the LC win rate can be read.

    ``n_decisive``: verdicts that are not ties (a fractional verdict counts on its side);
    ``shorter_wins`` of the ``n_decisive_unequal`` decisive verdicts on replies of unequal
    length went to the shorter reply; ``separation``: the share of (won prompt, lost prompt)
    pairs that the length difference alone orders (:func:`length_separation`), None when every
    decisive verdict went the same way; ``direction``: "shorter" when the won prompts are
    the ones where the model's reply is the shorter relative to the reference, else "longer";
    ``share_shorter``/``share_longer``: the share of prompts on which the model's reply is
    shorter / longer; ``near_equal_shorter``/``near_equal_longer``: the length-matched
    prompts (within ``band``) with the model's reply shorter / longer (equal: both).
    """

    n_prompts: int
    n_decisive: int
    n_decisive_unequal: int
    shorter_wins: int
    separation: float | None
    direction: str
    share_shorter: float
    share_longer: float
    near_equal_shorter: int
    near_equal_longer: int
    band: float
    reliable: bool
    reason: str

    def as_dict(self) -> dict[str, float | int | str | bool | None]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


def brevity_concordance(diff: np.ndarray, won: np.ndarray, lost: np.ndarray) -> float | None:
    """The share of (won prompt, lost prompt) pairs in which the won prompt has the smaller
    length difference ``diff`` (equal differences count half): 1 when the shorter reply
    always wins, 0 when the longer one does, about 0.5 when length says nothing (the
    Mann-Whitney AUC of ``-diff`` for wins against losses). None without both a win and a loss."""
    wins, losses = diff[won], np.sort(diff[lost])
    if wins.size == 0 or losses.size == 0:
        return None
    above = losses.size - np.searchsorted(losses, wins, side="right")
    equal = np.searchsorted(losses, wins, side="right") - np.searchsorted(losses, wins, side="left")
    return float((above + 0.5 * equal).sum() / (wins.size * losses.size))


def length_separation(
    outcomes: Sequence[float], lengths_a: Sequence[float], lengths_b: Sequence[float], band: float = LENGTH_BAND
) -> LengthSeparation:
    """Does length alone nearly separate the judge's verdicts of A against B, so that the LC
    win rate (read at equal length) rests on extrapolation?

    The LC regression cannot tell a judge that rewards brevity from a better model when the
    verdicts split by length: any boundary between the won and the lost prompts' length
    differences fits, and only prompts near equal length, on both sides of it, say where the
    verdicts flip. So the LC is flagged unreliable when (1) the length difference orders at
    least :data:`SEPARATION_THRESHOLD` of the (won, lost) prompt pairs, either way (a concordance,
    :func:`brevity_concordance`; a length-blind judge gives about 0.5 whatever the win rate),
    and (2) fewer than :data:`MIN_NEAR_EQUAL_PER_SIDE` length-matched prompts (within ``band``)
    have the model's reply shorter, or fewer have it longer. With no won or no lost prompt the
    LC equals the raw rate and nothing is flagged. ``reason`` says what was seen in one sentence.
    """
    y, a, b = _paired_lengths(outcomes, lengths_a, lengths_b)
    diff, n = a - b, int(y.size)
    verdict = np.array([discrete_outcome(v) for v in y]) if n else np.zeros(0)
    won, lost = verdict == 1.0, verdict == 0.0
    unequal = (won | lost) & (diff != 0)
    shorter_wins = int(np.sum(won & (diff < 0)) + np.sum(lost & (diff > 0)))
    concordance = brevity_concordance(diff, won, lost)
    separation = None if concordance is None else max(concordance, 1.0 - concordance)
    direction = "shorter" if concordance is None or concordance >= 0.5 else "longer"
    matched = length_matched(a, b, band)
    near_shorter, near_longer = int(np.sum(matched & (diff <= 0))), int(np.sum(matched & (diff >= 0)))
    separated = separation is not None and separation >= SEPARATION_THRESHOLD
    pinned = min(near_shorter, near_longer) >= MIN_NEAR_EQUAL_PER_SIDE
    n_unequal = int(unequal.sum())
    winner = shorter_wins if direction == "shorter" else n_unequal - shorter_wins
    reason = _separation_reason(
        separation, direction, winner, n_unequal, near_shorter, near_longer, band, separated, pinned
    )
    return LengthSeparation(
        n,
        int(np.sum(won | lost)),
        n_unequal,
        shorter_wins,
        separation,
        direction,
        float(np.mean(diff < 0)) if n else 0.0,
        float(np.mean(diff > 0)) if n else 0.0,
        near_shorter,
        near_longer,
        band,
        not (separated and not pinned),
        reason,
    )


def _separation_reason(
    separation: float | None,
    direction: str,
    winner: int,
    n_unequal: int,
    near_shorter: int,
    near_longer: int,
    band: float,
    separated: bool,
    pinned: bool,
) -> str:
    """One sentence: what :func:`length_separation` saw and what it concluded."""
    if separation is None:
        return "No prompt was both won and another lost, so length has nothing to separate."
    seen = (
        f"the {direction} reply wins {winner} of {n_unequal} decisive verdicts on replies of unequal length and the "
        f"length difference alone orders {separation:.0%} of the (won, lost) prompt pairs"
    )
    near = (
        f"{near_shorter} prompts with the model shorter and {near_longer} with it longer lie within {band:.0%} "
        "of equal length"
    )
    if separated and not pinned:
        return (
            f"Length alone nearly separates the verdicts ({seen}) and only {near}: the LC extrapolates to equal "
            "length and is unreliable."
        )
    if separated:
        return f"Length nearly separates the verdicts ({seen}), but {near}: they place the flip near equal length."
    return f"Length does not separate the verdicts ({seen})."


@dataclass(frozen=True)
class LengthMatchedWinRate:
    """The raw win rate on the prompts whose replies have matched length (:func:`length_matched`).

    ``win_rate``, ``ci_low``, ``ci_high`` are None ("cannot tell") when fewer than
    ``min_matched`` prompts match; ``n_matched`` of ``n_total`` prompts matched.
    """

    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_matched: int
    n_total: int
    band: float
    min_matched: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


def length_matched_win_rate(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    band: float = LENGTH_BAND,
    min_matched: int = MIN_MATCHED,
    n_boot: int = 1000,
    seed: int = 0,
) -> LengthMatchedWinRate:
    """A's raw win rate over B on the prompts whose two replies are within ``band`` of each
    other in length (ties half), with a paired bootstrap interval over those prompts
    (:func:`crs.eval.win_rates.win_rate_from_outcomes`); "cannot tell" (None) below
    ``min_matched`` such prompts. Unlike the LC it fits nothing, so it cannot extrapolate;
    it answers for the matched prompts only, and a judge may still see the small length
    differences within the band."""
    return pooled_length_matched_win_rate([(outcomes, lengths_a, lengths_b)], band, min_matched, n_boot, seed)


def pooled_length_matched_win_rate(
    runs: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]],
    band: float = LENGTH_BAND,
    min_matched: int = MIN_MATCHED,
    n_boot: int = 1000,
    seed: int = 0,
) -> LengthMatchedWinRate:
    """:func:`length_matched_win_rate` over several runs (a sweep's seeds): each run's
    ``(outcomes, lengths_a, lengths_b)`` contributes its matched prompts, pooled. With one run
    the interval is the plain paired bootstrap. With several, each round is the pooled rate minus
    a Student-t seed part (the spread of the runs' own matched rates, S - 1 degrees of freedom, as
    :mod:`crs.eval.hierarchical` does: resampling 2-5 runs would understate it) minus a bootstrap
    of the pooled matched verdicts; the two parts both count the verdicts' own noise, so the
    interval errs wide. Runs with no matched prompt add nothing; a single such run leaves one."""
    matched = []
    n_total = 0
    for outcomes, lengths_a, lengths_b in runs:
        y, a, b = _paired_lengths(outcomes, lengths_a, lengths_b)
        matched.append(y[length_matched(a, b, band)])
        n_total += int(y.size)
    n_matched = sum(int(m.size) for m in matched)
    if n_matched < max(min_matched, 1):
        return LengthMatchedWinRate(None, None, None, n_matched, n_total, band, min_matched)
    pooled = np.concatenate(matched)
    per_run = np.array([m.mean() for m in matched if m.size])
    if per_run.size == 1:
        result = win_rate_from_outcomes(pooled.tolist(), n_boot=n_boot, seed=seed)
        return LengthMatchedWinRate(
            result.win_rate, result.ci_low, result.ci_high, n_matched, n_total, band, min_matched
        )
    rng = np.random.default_rng(seed)
    n_runs, point = per_run.size, float(pooled.mean())
    t_draws = rng.standard_normal(n_boot) / np.sqrt(rng.chisquare(n_runs - 1, n_boot) / (n_runs - 1))
    seed_part = np.sqrt(per_run.var(ddof=1) / n_runs) * t_draws
    prompt_part = pooled[rng.integers(0, pooled.size, size=(n_boot, pooled.size))].mean(axis=1) - point
    low, high = np.quantile(point - seed_part - prompt_part, [0.025, 0.975])
    return LengthMatchedWinRate(
        point, float(max(low, 0.0)), float(min(high, 1.0)), n_matched, n_total, band, min_matched
    )


def unreliable_note() -> str:
    """What a report's LC flag means, in one sentence with the thresholds (for a footnote)."""
    return (
        "length alone nearly separates the judge's verdicts (the length difference orders at least "
        f"{SEPARATION_THRESHOLD:.0%} of the (won, lost) prompt pairs) and fewer than {MIN_NEAR_EQUAL_PER_SIDE} "
        f"prompts within {LENGTH_BAND:.0%} of equal length lie on one side of it, so the LC extrapolates to equal "
        "length and says little; the length-matched rate is what the judge decided on replies of about equal length "
        "(mind its n)"
    )


def length_matched_cell(
    win_rate: float | None, ci_low: float | None, ci_high: float | None, n_matched: int, scale: float = 100.0
) -> str:
    """A length-matched rate for a table: ``48.0 (40.1–55.2), n=63``, or ``cannot tell (n=7)``
    when too few prompts matched; ``scale`` turns the stored rate into percent (1 when it already is)."""
    if win_rate is None or ci_low is None or ci_high is None:
        return f"cannot tell (n={n_matched})"
    return f"{scale * win_rate:.1f} ({scale * ci_low:.1f}–{scale * ci_high:.1f}), n={n_matched}"
