"""AlpacaEval's leaderboard rows: win rates against a reference with lengths and failures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crs.eval.length_control import length_controlled_win_rate, length_matched_win_rate, length_separation
from crs.eval.win_rates import WinRate, check_aligned, pairwise_outcomes, win_rate_from_outcomes


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


def length_columns(
    outcomes: Sequence[float], lengths: Sequence[int], reference_lengths: Sequence[int], n_boot: int, seed: int
) -> dict[str, Any]:
    """A leaderboard row's length columns (percentages): ``lc_win_rate`` with ``lc_ci_low`` /
    ``lc_ci_high`` and ``length_coef`` (:func:`length_controlled_win_rate`); ``lc_reliable``
    and ``lc_separation``, what :func:`length_separation` saw (its ``reason`` says why an LC is
    unreliable); ``length_matched_win_rate`` with ``length_matched_ci_low`` /
    ``length_matched_ci_high`` (None: too few matched prompts to tell) and ``n_length_matched``
    (:func:`length_matched_win_rate`)."""
    lc = length_controlled_win_rate(outcomes, lengths, reference_lengths, n_boot=n_boot, seed=seed)
    separation = length_separation(outcomes, lengths, reference_lengths)
    matched = length_matched_win_rate(outcomes, lengths, reference_lengths, n_boot=n_boot, seed=seed)
    return {
        "lc_win_rate": 100.0 * lc.win_rate,
        "lc_ci_low": 100.0 * lc.ci_low,
        "lc_ci_high": 100.0 * lc.ci_high,
        "length_coef": lc.length_coef,
        "lc_reliable": separation.reliable,
        "lc_separation": separation.as_dict(),
        "length_matched_win_rate": _percent(matched.win_rate),
        "length_matched_ci_low": _percent(matched.ci_low),
        "length_matched_ci_high": _percent(matched.ci_high),
        "n_length_matched": matched.n_matched,
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
    every output it was given); the length columns (:func:`length_columns`) use the prompts
    with a verdict.
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
        judged = sorted(
            i for i, v in by_index.items() if v is not None and not (isinstance(v, float) and math.isnan(v))
        )
        row.update(
            length_columns(
                [by_index[i] for i in judged],
                [len(outputs[model][i]) for i in judged],
                [len(outputs[reference][i]) for i in judged],
                n_boot=n_boot,
                seed=seed,
            )
        )
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
    the length columns are :func:`length_columns`'s. The reference itself scores exactly 50%
    (all draws) and is kept as an anchor row unless ``include_reference`` is False.
    """
    if reference not in per_model_scores:
        raise KeyError(f"reference model {reference!r} has no scores; models: {list(per_model_scores)}")
    check_aligned(per_model_scores, "per-model scores")
    outcomes = {m: pairwise_outcomes(s, per_model_scores[reference], tie_eps) for m, s in per_model_scores.items()}
    return leaderboard_from_outcomes(
        outcomes, outputs, reference, n_boot=n_boot, seed=seed, include_reference=include_reference
    )
