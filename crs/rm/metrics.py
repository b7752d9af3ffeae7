"""Reward-model metrics: ranking accuracy, regression error, correlations, agreement.

Pure functions on plain numbers (the scoring happens in :mod:`crs.rm.training`).
Conventions:

* A *ranking* is one prompt's rewards listed best first (the data's order); pair
  ``i < j`` is correct when ``r_i > r_j``, and a reward tie counts as half correct.
* A metric that is undefined on the given data (a correlation of a constant, a bucket
  with no rows) is ``None`` rather than a made-up number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import torch

from crs.data.schema import Messages, RankingExample

Scorer = Callable[[list[Messages], list[str]], torch.Tensor]
Pair = tuple[Messages, str, str]  # (prompt, reply_a, reply_b)


def _pair_credit(better: float, worse: float) -> float:
    """1 when the better reply got the higher reward, 0.5 on a tie, else 0."""
    return 1.0 if better > worse else 0.5 if better == worse else 0.0


def ranking_metrics(
    rankings: Sequence[Sequence[float]], scores: Sequence[Sequence[float] | None] | None = None
) -> dict[str, float | None]:
    """Accuracy and margin of rewards on rankings (each a list of rewards, best first).

    Returns ``pairwise_accuracy`` (over all pairs of all prompts, pooled),
    ``best_vs_worst_accuracy`` (per prompt: first vs last), ``mean_margin`` (mean of
    ``r_better - r_worse`` over all pairs), ``n_pairs`` and ``n_prompts``. Where
    ``scores[g]`` is given, pairs with equal scores are ties and are skipped.
    """
    credits, margins, best_worst = [], [], []
    for g, rewards in enumerate(rankings):
        prompt_scores = scores[g] if scores is not None else None

        def tied(i: int, j: int, prompt_scores: Sequence[float] | None = prompt_scores) -> bool:
            return prompt_scores is not None and prompt_scores[i] == prompt_scores[j]

        for i, j in combinations(range(len(rewards)), 2):
            if not tied(i, j):
                credits.append(_pair_credit(rewards[i], rewards[j]))
                margins.append(rewards[i] - rewards[j])
        last = len(rewards) - 1
        if last > 0 and not tied(0, last):
            best_worst.append(_pair_credit(rewards[0], rewards[last]))
    return {
        "pairwise_accuracy": float(np.mean(credits)) if credits else None,
        "best_vs_worst_accuracy": float(np.mean(best_worst)) if best_worst else None,
        "mean_margin": float(np.mean(margins)) if margins else None,
        "n_pairs": len(credits),
        "n_prompts": len(rankings),
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either side is constant (or fewer than 2 points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 0..n-1 of ``x``, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=float)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=ranks)[inverse] / counts[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks), or None when undefined."""
    if len(x) < 2:
        return None
    return pearson(average_ranks(x), average_ranks(y))


def absolute_metrics(predicted: Sequence[float], targets: Sequence[float], threshold: float) -> dict[str, float | None]:
    """Regression quality of predicted scores in [0, 1] against true scores.

    ``mse`` and ``mae`` overall and per bucket (``low_*``: true score <= threshold,
    ``high_*``: above; ``low_n`` / ``high_n`` count them), and ``pearson`` / ``spearman``
    between prediction and truth.
    """
    pred, true = np.asarray(predicted, dtype=float), np.asarray(targets, dtype=float)
    err = pred - true
    out: dict[str, float | None] = {
        "mse": float(np.mean(err**2)) if len(err) else None,
        "mae": float(np.mean(np.abs(err))) if len(err) else None,
    }
    for bucket, rows in (("low", true <= threshold), ("high", true > threshold)):
        out[f"{bucket}_n"] = int(rows.sum())
        out[f"{bucket}_mse"] = float(np.mean(err[rows] ** 2)) if rows.any() else None
        out[f"{bucket}_mae"] = float(np.mean(np.abs(err[rows]))) if rows.any() else None
    out["pearson"] = pearson(pred, true)
    out["spearman"] = spearman(pred, true)
    return out


def reward_stats(rewards: Sequence[float]) -> dict[str, float | dict[str, float]]:
    """Mean, std and the 5/25/50/75/95 % quantiles of a reward model's rewards.

    The RL stage z-scores each reward source with ``mean`` and ``std``.
    """
    values = np.asarray(rewards, dtype=float)
    if len(values) == 0:
        raise ValueError("reward_stats needs at least one reward")
    percents = (5, 25, 50, 75, 95)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": {str(p): float(q) for p, q in zip(percents, np.percentile(values, percents))},
        "n": int(len(values)),
    }


def ranking_pairs(rankings: Sequence[RankingExample]) -> list[Pair]:
    """Every (prompt, reply_a, reply_b) pair of replies to the same prompt, in ranking order."""
    return [(ex.prompt, a, b) for ex in rankings for a, b in combinations(ex.replies, 2)]


def pair_agreement(scorer_a: Scorer, scorer_b: Scorer, pairs: Sequence[Pair]) -> float:
    """How often two scorers order the replies of each (prompt, reply_a, reply_b) pair alike.

    A pair counts 1 when both prefer the same reply, 0 when they disagree, and 0.5
    when either scores the two replies equally. Any callable
    ``(prompts, replies) -> Tensor`` is a scorer (e.g. a :class:`~crs.rm.scorer.RewardScorer`).
    """
    if not pairs:
        raise ValueError("pair_agreement needs at least one pair")
    prompts = [p for p, _, _ in pairs]
    firsts, seconds = [a for _, a, _ in pairs], [b for _, _, b in pairs]
    diff_a = (scorer_a(prompts, firsts) - scorer_a(prompts, seconds)).sign()
    diff_b = (scorer_b(prompts, firsts) - scorer_b(prompts, seconds)).sign()
    credit = torch.where((diff_a == 0) | (diff_b == 0), 0.5, (diff_a == diff_b).float())
    return float(credit.mean())
