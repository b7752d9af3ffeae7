"""How reward sources are combined into one score: the arithmetic alone, shared by every consumer.

Three strategies (``rl.combine``; the best-of-n study's ``bon.strategies``):

* ``sum``: ``sum_i w_i * z_i``, each source on its own fixed z-scale (the default, PPO's formula);
* ``sum_per_prompt``: ``sum_i w_i * s_i`` where ``s_i`` is source i standardised *within the
  prompt's group of replies*: ``(x - group mean) / group std`` (population std). A group whose
  replies all tie on a source gives 0 for that source (it says nothing about which reply is
  better); a group of one reply has no spread to measure and is an error, never a silent 0;
* ``conservative``: over N >= 2 sources, the minimum of the z-scored sources (``min``) or
  ``mean - k * std`` across them (``mean_std``, population std). Weights are ignored, except
  that a weight of 0 still drops a source: the point is to score a reply by the source that
  likes it least, so no source may buy its way out.

The z-score is here too, one convention for RL, evaluation and the best-of-n study:
:func:`zscore_stats` measures a source's mean and *population* std (ddof 0: the spread of the
scores at hand, as ``reward_stats.json`` records it, and the same std :func:`standardize_within_groups`
and ``conservative`` use; no sample correction, since the statistics describe a scale, they are
not an estimate reported with an interval), and :func:`standardize` applies them. A source whose
std is at most ``MIN_STD * max(1, |mean|)`` has no spread: it is centred, not scaled (divided by
1), so float noise around a constant is never blown up to +-1 or beyond. The bound is relative
because float32 scores of magnitude ``|mean|`` carry rounding noise of about ``6e-8 * |mean|``;
1e-6 of it is ~16 ulps, below any spread a reward model means.

:class:`crs.rl.combined_reward.CombinedReward` (PPO, GRPO, RLOO, evaluation) and the best-of-n study
(:mod:`crs.eval.bon.instrument`) both call :func:`combine_normalized`, so a strategy means the same
thing in training and in the study. Clipping and the missing-EOS penalty are not here: they
shape the combined score afterwards (``CombinedReward.shape``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from crs.runs import RunError

STRATEGIES = ("sum", "sum_per_prompt", "conservative")
CONSERVATIVE_METHODS = ("min", "mean_std")
MIN_STD = 1e-6  # relative: a std <= MIN_STD * max(1, |mean|) is no spread (centre the source, do not scale it)

Values = TypeVar("Values", torch.Tensor, np.ndarray)


class CombineError(RunError, ValueError):
    """Scores that a strategy cannot combine (a group of one reply, too few sources); one line, naming the source."""


def group_ids(keys: Sequence[Hashable]) -> torch.Tensor:
    """One integer per item, equal for equal keys (numbered in order of first appearance).

    ``keys`` are e.g. each reply's prompt (as a hashable): replies to one prompt form a group.
    """
    first: dict[Hashable, int] = {}
    return torch.tensor([first.setdefault(key, len(first)) for key in keys], dtype=torch.long)


def zscore_stats(values: torch.Tensor | np.ndarray | Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}`` of the finite ``values`` (any shape), population std (ddof 0), in float64.

    The std is the one measured, however small: :func:`standardize` decides what no spread means.
    A :class:`CombineError` when no value is finite.
    """
    flat = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    finite = flat[torch.isfinite(flat)]
    if finite.numel() == 0:
        raise CombineError(f"no finite score among {flat.numel()} to measure a mean and std on")
    return {"mean": float(finite.mean()), "std": float(finite.std(correction=0))}


def has_spread(stats: Mapping[str, Any]) -> bool:
    """Whether ``stats`` (``mean``, ``std``) describe a source with spread: ``std > MIN_STD * max(1, |mean|)``."""
    return float(stats["std"]) > MIN_STD * max(1.0, abs(float(stats["mean"])))


def standardize(values: Values, stats: Mapping[str, Any]) -> Values:
    """``(values - mean) / std`` with ``stats`` (``mean``, ``std``); a source without spread
    (:func:`has_spread`) is centred, not scaled, so a near-constant source stays near 0.

    Works on a torch tensor or a numpy array alike, keeping its type and dtype.
    """
    mean, std = float(stats["mean"]), float(stats["std"])
    return (values - mean) / (std if has_spread(stats) else 1.0)


def standardize_within_groups(
    scores: torch.Tensor, groups: torch.Tensor | Sequence[int], name: str = "scores"
) -> torch.Tensor:
    """``(x - group mean) / group std`` for every item, its group's statistics only (population std).

    ``scores`` (n,) and ``groups`` (n,) one group id per item (any integers; items of a group
    need not be adjacent). A group whose scores all tie gives 0 for each of its items (exactly:
    max == min; a mean of equal floats can differ from them in the last bit); a group whose
    std has no spread by :func:`has_spread` (near-ties, float noise) is centred, not scaled. A
    group of one item is a :class:`CombineError` naming ``name``: one reply has no spread to
    standardise by. Non-finite scores make their whole group non-finite (callers count them).
    """
    scores = torch.as_tensor(scores)
    ids = torch.as_tensor(groups, dtype=torch.long)
    if ids.shape != scores.shape or scores.ndim != 1:
        raise ValueError(
            f"{name}: scores {tuple(scores.shape)} and groups {tuple(ids.shape)} must be vectors of one length"
        )
    _, index, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    if (counts < 2).any():
        alone = int((counts < 2).sum())
        raise CombineError(
            f"reward source {name!r}: {alone} group(s) of one reply; "
            "standardising within a prompt's replies needs >= 2 per prompt"
        )
    size = counts.to(scores.dtype)
    mean = torch.zeros(len(counts), dtype=scores.dtype).index_add_(0, index, scores) / size
    centred = scores - mean[index]
    std = (torch.zeros(len(counts), dtype=scores.dtype).index_add_(0, index, centred**2) / size).sqrt()
    high = torch.full((len(counts),), -torch.inf, dtype=scores.dtype).scatter_reduce(0, index, scores, "amax")
    low = torch.full((len(counts),), torch.inf, dtype=scores.dtype).scatter_reduce(0, index, scores, "amin")
    tied = (high == low)[index]
    # The z-score's guard (:func:`has_spread`), per group: a near-tie is centred, not scaled up to +-1.
    scale = torch.where(std > MIN_STD * mean.abs().clamp(min=1.0), std, torch.ones_like(std))[index]
    return torch.where(tied, torch.zeros_like(scores), centred / scale)


def conservative(z: torch.Tensor | Sequence[torch.Tensor], method: str = "min", k: float = 1.0) -> torch.Tensor:
    """The conservative score of each item over N >= 2 z-scored sources.

    ``z`` is (N, n): source by item (or a sequence of N (n,) tensors). ``min``: the lowest of the
    N z-scores; ``mean_std``: their mean minus ``k`` times their population std. For two
    sources and ``k = 1`` the two agree: mean - |a - b| / 2 = min(a, b).
    """
    stacked = torch.stack(list(z)) if not isinstance(z, torch.Tensor) else z
    if stacked.ndim != 2 or stacked.shape[0] < 2:
        raise CombineError(f"a conservative score needs at least 2 sources (rows), got shape {tuple(stacked.shape)}")
    if method == "min":
        return stacked.min(dim=0).values
    if method == "mean_std":
        return stacked.mean(dim=0) - k * stacked.std(dim=0, correction=0)
    raise ValueError(f"conservative method {method!r}: expected one of {', '.join(CONSERVATIVE_METHODS)}")


def combine_normalized(
    normalized: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    strategy: str = "sum",
    groups: torch.Tensor | Sequence[int] | None = None,
    method: str = "min",
    k: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One combined score per item, and each source's values as they entered the combination.

    ``normalized[name]`` (n,) are the sources' scores on one scale (z-scores; for
    ``sum_per_prompt`` any positive affine transform of the raw scores gives the same result,
    since standardising within a group removes it). ``weights[name]``: a weight of 0 drops the
    source for every strategy; ``conservative`` ignores the others. ``groups`` (n,) one group
    id per item, needed by ``sum_per_prompt`` alone. ``method`` and ``k``: see :func:`conservative`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"combination strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    active = [name for name in normalized if weights[name] != 0]
    if not active:
        raise CombineError("no reward source with a non-zero weight to combine")
    if strategy == "sum_per_prompt":
        if groups is None:
            raise ValueError("sum_per_prompt needs the group (prompt) of every reply")
        terms = {name: standardize_within_groups(normalized[name], groups, name) for name in active}
    else:
        terms = {name: normalized[name] for name in active}
    if strategy == "conservative":
        if len(active) < 2:
            raise CombineError(
                f"conservative combination needs at least 2 sources with a non-zero weight; got {active}"
            )
        return conservative([terms[name] for name in active], method, k), terms
    combined = torch.zeros_like(terms[active[0]])
    for name in active:  # in the sources' order, from 0: the same float sums as before strategies existed
        combined = combined + weights[name] * terms[name]
    return combined, terms


def describe_strategy(strategy: str, method: str = "min", k: float = 1.0) -> str:
    """The strategy as logs and summaries name it: ``sum``, ``sum_per_prompt``, ``conservative (min)``,
    ``conservative (mean - 1 x std)``."""
    if strategy != "conservative":
        return strategy
    return "conservative (min)" if method == "min" else f"conservative (mean - {k:g} x std)"


__all__ = [
    "CONSERVATIVE_METHODS",
    "MIN_STD",
    "STRATEGIES",
    "CombineError",
    "combine_normalized",
    "conservative",
    "describe_strategy",
    "group_ids",
    "has_spread",
    "standardize",
    "standardize_within_groups",
    "zscore_stats",
]
