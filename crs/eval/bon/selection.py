"""Best-of-n on a fixed pool of replies: exact selection probabilities, curves, agreement and paired bootstrap.

Each of P prompts has a pool of m candidate replies. A *scorer* (a reward model, or a weighted
mix of reward models) scores every reply and a *judge* (e.g. a gold utility) values it.
Best-of-n draws n of a prompt's m replies without replacement and keeps the one the scorer
rates highest, breaking scorer ties uniformly at random.

Rather than simulating draws, we average over all C(m, n) subsets exactly. With the pool sorted
by score (ascending, 1-based position i), the reply at position i is a subset's maximum exactly
when it is in the subset and the other n - 1 members come from the i - 1 replies below it, which
happens with probability C(i - 1, n - 1) / C(m, n). Replies whose scores tie share the average of
the probabilities of the positions they occupy: a random tie-break is a uniformly random order
within the tie group, so each member is equally likely to sit at each of those positions. The
expected judge value of best-of-n is then the weighted mean of the pool's values. This is the
idea behind the overoptimization curves of Gao et al. (2022, "Scaling laws for reward model
overoptimization"): reuse one pool of samples for every n, plotting the judge's value of the
scorer's pick against the distance from the base policy, for which they use
KL_bon = log n - (n - 1) / n. Beirami et al. (2024, "Theoretical guarantees on the best-of-n
alignment policy") show that this quantity is an upper bound on the actual KL divergence of
best-of-n from the base policy (not its exact value), so it should be read as a ceiling on the
x-axis rather than the measured divergence.

Intervals come from a bootstrap over prompts. Every scorer (or weight) is resampled with the same
prompt indices, so differences between scorers are paired: the prompt-to-prompt variation they
share cancels, which is what makes small differences between similar scorers detectable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from crs.eval.hierarchical import interval

__all__ = [
    "TIE_EPS",
    "best_of_n_values",
    "best_of_n_win_rates",
    "best_weight",
    "bootstrap_counts",
    "difference",
    "interval",
    "kendall_tau_b",
    "kl_bon",
    "paired_bootstrap_means",
    "pairwise_accuracy",
    "pairwise_credit",
    "pooled_ratio",
    "powers_of_two_up_to",
    "selection_weights",
]

# Two values within TIE_EPS of each other are tied, the judge's and a scorer's alike, in the
# win rates (the judge's side), the pairwise agreement and Kendall's tau; as crs.eval's win rates.
# Best-of-n's selection itself breaks exact scorer ties only (a "within tie_eps" chain is not transitive).
TIE_EPS = 1e-9


def kl_bon(n: int) -> float:
    """``log n - (n - 1) / n``: the usual x-axis of best-of-n curves.

    It is an upper bound on the KL divergence of the best-of-n policy from the base policy
    (Beirami et al. 2024), so curves drawn against it place each n at most this far from the base.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def powers_of_two_up_to(m: int) -> list[int]:
    """``[1, 2, 4, ..., 2**k <= m]`` plus ``m`` itself when it is not a power of two.

    The n's of a best-of-n curve: evenly spaced in log n (KL_bon grows like log n), and ending at
    the whole pool so the largest n the pool supports is always included.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    ns = [1 << k for k in range(m.bit_length()) if 1 << k <= m]
    if ns[-1] != m:
        ns.append(m)
    return ns


@lru_cache(maxsize=4096)
def _position_probabilities(m: int, n: int) -> np.ndarray:
    # Exact integer binomials: Python's int / int is correctly rounded even for C(256, 128) ~ 1e75,
    # so no log-gamma cancellation errors; positions below n can never be a subset's maximum.
    total = math.comb(m, n)
    probs = np.array([math.comb(i - 1, n - 1) / total for i in range(1, m + 1)])
    probs.setflags(write=False)  # cached and shared between calls
    return probs


def _check_ns(ns: Sequence[int], m: int) -> list[int]:
    checked = [int(n) for n in ns]
    for n, original in zip(checked, ns):
        if n != original or not 1 <= n <= m:
            raise ValueError(f"best-of-n needs an integer 1 <= n <= m = {m}, got {original}")
    return checked


def _weights_matrix(scores: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """(len(ns), m) selection probabilities of one prompt's replies, in the replies' own order."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores of one prompt must be a non-empty vector, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    m = scores.size
    ns = _check_ns(ns, m)
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    # Tie groups are runs of equal sorted scores; each member gets the group's mean probability.
    group = np.concatenate([[0], np.cumsum(ranked[1:] != ranked[:-1])])
    sizes = np.bincount(group)
    weights = np.empty((len(ns), m))
    for row, n in enumerate(ns):
        sums = np.bincount(group, weights=_position_probabilities(m, n))
        weights[row, order] = (sums / sizes)[group]
    return weights


def selection_weights(scores: np.ndarray, n: int) -> np.ndarray:
    """Probability that each reply of one prompt (``scores`` shape (m,)) is the one best-of-n keeps.

    Exact over all n-subsets with uniform random tie-breaking (see the module docstring), so the
    curves have no Monte Carlo noise and every n reuses the same pool. Sums to 1.
    """
    return _weights_matrix(scores, [n])[0]


def _check_pool(scores: np.ndarray, other: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    other = np.asarray(other, dtype=float)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a (prompts, replies) matrix, got shape {scores.shape}")
    if other.shape != scores.shape:
        raise ValueError(f"{name} shape {other.shape} does not match scores shape {scores.shape}")
    return scores, other


def best_of_n_values(scores: np.ndarray, values: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """(P, len(ns)) expected judge value of the reply best-of-n keeps, per prompt and n.

    ``scores`` and ``values`` are (P, m): the scorer's scores and the judge's values of each reply.
    Averaging these over prompts gives the best-of-n curve; keeping prompts separate lets the
    bootstrap resample them.
    """
    scores, values = _check_pool(scores, values, "values")
    out = np.empty((scores.shape[0], len(ns)))
    for p in range(scores.shape[0]):
        out[p] = _weights_matrix(scores[p], ns) @ values[p]
    return out


def _beats(judge: np.ndarray, tie_eps: float) -> np.ndarray:
    # beats[j] = P(reply j beats a uniform draw from the pool) by the judge, ties within tie_eps count half.
    diff = judge[:, None] - judge[None, :]
    return np.where(np.abs(diff) <= tie_eps, 0.5, (diff > 0).astype(float)).mean(axis=1)


def best_of_n_win_rates(
    scores: np.ndarray, judge: np.ndarray, ns: Sequence[int], tie_eps: float = TIE_EPS
) -> np.ndarray:
    """(P, len(ns)) probability that the best-of-n reply beats a uniform draw from the same pool, by the judge.

    The opponent is any of the m replies (the pick itself included, a tie), judge ties within
    ``tie_eps`` count half; so n = 1 is exactly 0.5. A win rate is free of the judge's scale,
    which makes curves of different judges comparable.
    """
    scores, judge = _check_pool(scores, judge, "judge")
    out = np.empty((scores.shape[0], len(ns)))
    for p in range(scores.shape[0]):
        out[p] = _weights_matrix(scores[p], ns) @ _beats(judge[p], tie_eps)
    return out


def _pair_signs(row: np.ndarray, tie_eps: float) -> np.ndarray:
    # Signs of all within-prompt differences i < j (upper triangle); 0 for a tie, |difference| <= tie_eps.
    i, j = np.triu_indices(row.size, k=1)
    diff = row[i] - row[j]
    return np.where(np.abs(diff) <= tie_eps, 0.0, np.sign(diff))


def pairwise_credit(scorer: np.ndarray, judge: np.ndarray, tie_eps: float = TIE_EPS) -> tuple[np.ndarray, np.ndarray]:
    """(P,) credits and (P,) counts of the within-prompt pairs the judge separates, per prompt.

    A pair the judge separates earns 1 when the scorer orders it the judge's way, 0.5 when the
    scorer ties it (a coin flip), 0 otherwise; pairs the judge ties carry no preference and are
    not counted. Ties on either side: |difference| <= ``tie_eps`` (the rule :func:`kendall_tau_b`
    uses). :func:`pairwise_accuracy` pools them; the ranked-group metrics use the same credits.
    """
    scorer, judge = _check_pool(scorer, judge, "judge")
    credit, pairs = np.zeros(scorer.shape[0]), np.zeros(scorer.shape[0])
    for p in range(scorer.shape[0]):
        sx, sy = _pair_signs(scorer[p], tie_eps), _pair_signs(judge[p], tie_eps)
        kept = sy != 0
        credit[p] = float(np.sum((sx[kept] * sy[kept] + 1.0) / 2.0))  # +1 agree, 0 scorer tie, -1 disagree
        pairs[p] = float(kept.sum())
    return credit, pairs


def pairwise_accuracy(scorer: np.ndarray, judge: np.ndarray, tie_eps: float = TIE_EPS) -> float:
    """How often the scorer picks the judge's choice between two replies to one prompt: pooled
    over every within-prompt pair the judge separates (:func:`pairwise_credit`), so a prompt
    weighs by its number of such pairs. NaN when the judge separates no pair at all."""
    return pooled_ratio(*pairwise_credit(scorer, judge, tie_eps))


def kendall_tau_b(scorer: np.ndarray, judge: np.ndarray, tie_eps: float = TIE_EPS) -> np.ndarray:
    """(P,) Kendall's tau-b between scorer and judge within each prompt; NaN where undefined.

    (concordant - discordant) / sqrt((pairs - scorer ties) * (pairs - judge ties)): a rank
    correlation corrected for ties, so a scorer that ties a lot is not penalised as if it
    disagreed. Ties as in :func:`pairwise_credit`: |difference| <= ``tie_eps``, either side.
    Undefined (NaN) when either side ties every pair. A correlation is per prompt (rankings of
    different prompts are not comparable); the study reports its mean over prompts.
    """
    scorer, judge = _check_pool(scorer, judge, "judge")
    out = np.full(scorer.shape[0], np.nan)
    for p in range(scorer.shape[0]):
        sx, sy = _pair_signs(scorer[p], tie_eps), _pair_signs(judge[p], tie_eps)
        # sx @ sx counts pairs untied by the scorer; sx @ sy = concordant - discordant.
        denominator = math.sqrt(float(sx @ sx) * float(sy @ sy))
        if denominator > 0:
            out[p] = float(sx @ sy) / denominator
    return out


def pooled_ratio(credit: np.ndarray, pairs: np.ndarray) -> float:
    """``sum(credit) / sum(pairs)``, NaN when there are no pairs: a pooled fraction (or its subset's)."""
    total = float(np.sum(pairs))
    return float(np.sum(credit)) / total if total > 0 else math.nan


def paired_bootstrap_means(per_prompt: Mapping[str, np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap means over prompts, with one shared set of resampled prompt indices for every key.

    Each array has first axis P (the prompts; (P,) or (P, k)). Returns per key the (n_boot, ...)
    nanmeans over the resampled prompts. Sharing the draws makes the rounds of different scorers
    paired, so a difference of two keys round by round has the paired (narrower) spread.
    """
    arrays = {key: np.asarray(value, dtype=float) for key, value in per_prompt.items()}
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(f"every array needs the same non-zero number of prompts on its first axis, got {sizes}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    (n_prompts,) = sizes
    indices = np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))
    with warnings.catch_warnings():
        # A round that draws only NaN prompts has no mean: NaN is the right answer, not a warning.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return {key: np.nanmean(array[indices], axis=1) for key, array in arrays.items()}


def bootstrap_counts(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_prompts): how often each prompt (or cluster) is drawn in each round of the bootstrap
    :func:`paired_bootstrap_means` makes with the same ``seed`` (the same generator call, so the same draws).
    For pooled figures that are not a mean over prompts (a correlation over replies, a ratio)."""
    if n_boot < 1 or n_prompts < 1:
        raise ValueError(f"need n_boot >= 1 and at least one prompt, got {n_boot} and {n_prompts}")
    draws = np.random.default_rng(seed).integers(0, n_prompts, size=(n_boot, n_prompts))
    counts = np.zeros((n_boot, n_prompts))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_prompts), draws.ravel()), 1.0)
    return counts


def difference(
    boot_a: np.ndarray, boot_b: np.ndarray, point_a: float, point_b: float, alpha: float = 0.05
) -> dict[str, float]:
    """``a - b`` with its interval from paired bootstrap rounds (same rounds for both, see
    :func:`paired_bootstrap_means`)."""
    return interval(np.asarray(boot_a) - np.asarray(boot_b), point_a - point_b, alpha)


def best_weight(boot_values: Mapping[float, np.ndarray], alpha: float = 0.05) -> dict[str, Any]:
    """Which preference weight maximises a metric, with the bootstrap's uncertainty about it.

    ``boot_values[w]`` are the (n_boot,) bootstrap rounds of the headline metric at weight ``w``
    (the same rounds for every weight). Per round the best weight wins (the smaller one on exact
    ties); returns ``{"counts": {w: rounds won}, "interval": [low, high]}``, the alpha/2 and
    1 - alpha/2 quantiles of the winning weight. The interval says how precisely the data pin
    down the optimum, which a single argmax of the means hides.
    """
    weights = sorted(boot_values)
    if not weights:
        raise ValueError("best_weight needs at least one weight")
    rounds = np.stack([np.asarray(boot_values[w], dtype=float) for w in weights])
    if rounds.ndim != 2 or not np.all(np.isfinite(rounds)):
        raise ValueError("every weight needs the same number of finite (n_boot,) bootstrap rounds")
    winners = np.asarray(weights, dtype=float)[np.argmax(rounds, axis=0)]
    counts = {w: int(np.sum(winners == w)) for w in weights}
    # inverted_cdf: the interval's ends are weights of the grid, not points between them
    low, high = np.quantile(winners, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return {"counts": counts, "interval": [float(low), float(high)]}
