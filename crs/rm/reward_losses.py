"""Every objective of reward-model training: the ranking and absolute-score losses, and how absolute data is
re-balanced.

The K-wise ranking (Bradley-Terry / Plackett-Luce) loss with margins, preference strength and L2; the
absolute-score (BCE / MSE) loss with its per-row weights and bin under-sampling.

Ranking batches arrive *flattened*: the replies of prompt 0 (best first), then those of
prompt 1, and so on; ``group_sizes[g]`` says how many replies prompt ``g`` has. The
ranking loss turns that into a padded ``[G, K]`` matrix with a validity mask, so prompts
with different numbers of replies share one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crs.config import RewardModelConfig

AbsoluteLossKind = Literal["bce", "mse"]
PairStrength = Literal["none", "scaled", "margin"]


def pad_groups(values: Tensor, group_sizes: Tensor | Sequence[int], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Flattened per-reply values -> (``[G, K_max]`` padded values, ``[G, K_max]`` bool mask).

    Row ``g`` holds the ``group_sizes[g]`` values of prompt ``g`` in their original order;
    the remaining slots hold ``fill`` and are False in the mask.
    """
    sizes = torch.as_tensor(group_sizes, dtype=torch.long, device=values.device)
    if int(sizes.sum()) != values.shape[0]:
        raise ValueError(f"group sizes add up to {int(sizes.sum())}, but there are {values.shape[0]} values")
    k_max = int(sizes.max())
    mask = torch.arange(k_max, device=values.device)[None, :] < sizes[:, None]
    padded = values.new_full((len(sizes), k_max), fill)
    padded[mask] = values  # boolean indexing is row-major, i.e. the flattening order
    return padded, mask


def ranking_loss(
    rewards: Tensor,
    group_sizes: Tensor | Sequence[int],
    l2_coef: float = 0.0,
    scores: Tensor | None = None,
    margin_scale: float = 0.0,
    pair_strength: PairStrength = "none",
    strength_scale: float = 1.0,
) -> Tensor:
    """Bradley-Terry loss over every ordered pair of each prompt's ranked replies.

    For a prompt whose K replies are listed best first, every pair ``i < j`` says
    "reply i beats reply j" and costs ``-log sigmoid(r_i - r_j - m_ij)``. The pair losses
    are averaged within each prompt, then over prompts (so a prompt with many replies
    does not outweigh one with two), and ``l2_coef * mean(r**2)`` over all real replies
    is added (it keeps rewards centred near 0, which the RL stage likes).

    Args:
        rewards: ``[N]`` flattened rewards (see the module docstring), or ``[G, K_max]``
            already padded; padded slots are ignored whatever they hold.
        group_sizes: ``[G]`` number of real replies per prompt.
        l2_coef: weight of the reward L2 penalty.
        scores: optional per-reply quality scores, same layout as ``rewards``; NaN where
            a reply has none. Where both replies of a pair have scores, the margin
            includes ``margin_scale * (s_i - s_j)`` and a pair with *equal* scores is a tie
            and is left out (it says nothing about the order).
        margin_scale: see ``scores``.
        pair_strength: the preference strength of pair ``(i, j)`` is its rank distance
            ``j - i`` (positions in the ranking as given, i.e. after any cap).
            ``scaled``: each pair's loss is multiplied by ``(j - i) / mean(j - i)``, the
            mean over that prompt's counted pairs, so the mean weight of a prompt's pairs
            is 1 and the per-prompt average keeps its scale; ``margin``: the margin also
            includes ``strength_scale * (j - i)``; ``none``: neither. Both add to the
            score-gap margin.
        strength_scale: see ``pair_strength`` (``margin`` only).

    Returns:
        The scalar loss. Prompts with fewer than two real replies contribute no pairs.
    """
    if pair_strength not in ("none", "scaled", "margin"):
        raise ValueError(f"unknown pair_strength {pair_strength!r}; use none, scaled or margin")
    sizes = torch.as_tensor(group_sizes, dtype=torch.long, device=rewards.device)
    if rewards.dim() == 1:
        r, valid = pad_groups(rewards, sizes)
        s = pad_groups(scores.to(rewards.dtype), sizes, fill=math.nan)[0] if scores is not None else None
    else:
        valid = torch.arange(rewards.shape[1], device=rewards.device)[None, :] < sizes[:, None]
        r, s = rewards, scores
    r = torch.where(valid, r, torch.zeros_like(r))  # padded garbage never reaches the loss

    pair_loss, pairs = _pair_losses(r, valid, s, margin_scale, pair_strength, strength_scale)
    n_pairs = pairs.sum(dim=(1, 2))
    has_pairs = n_pairs > 0
    if has_pairs.any():
        per_prompt = pair_loss.sum(dim=(1, 2))[has_pairs] / n_pairs[has_pairs]
        loss = per_prompt.mean()
    else:
        loss = r.sum() * 0.0  # keeps the graph, so backward() still works
    if l2_coef:
        loss = loss + l2_coef * r[valid].pow(2).mean()
    return loss


def _pair_losses(
    r: Tensor, valid: Tensor, s: Tensor | None, margin_scale: float, pair_strength: PairStrength, strength_scale: float
) -> tuple[Tensor, Tensor]:
    """``[G, K, K]`` loss of each pair ``(i, j)`` (0 where no pair) and the mask of counted pairs."""
    k = r.shape[1]
    position = torch.arange(k, device=r.device)
    upper = position[:, None] < position[None, :]  # i < j: i is better
    pairs = upper[None] & valid[:, :, None] & valid[:, None, :]
    diff = r[:, :, None] - r[:, None, :]
    if s is not None:
        gap = s[:, :, None] - s[:, None, :]  # NaN where either score is missing
        pairs = pairs & ~(gap == 0)
        if margin_scale:
            diff = diff - margin_scale * torch.nan_to_num(gap, nan=0.0)
    distance = (position[None, :] - position[:, None]).to(r.dtype)  # [i, j] = j - i, the rank distance
    if pair_strength == "margin":
        diff = diff - strength_scale * distance
    pair_loss = torch.where(pairs, F.softplus(-diff), torch.zeros_like(diff))  # softplus(-x) = -log sigmoid(x)
    if pair_strength == "scaled":
        strength = torch.where(pairs, distance.expand_as(pair_loss), torch.zeros_like(pair_loss))
        # Normalised per prompt over the pairs that count (ties excluded): mean weight 1,
        # so strength shifts weight between a prompt's pairs, not between prompts.
        mean = strength.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
        pair_loss = pair_loss * strength / mean.clamp(min=1e-12)[:, None, None]
    return pair_loss, pairs


def absolute_loss(
    logits: Tensor, targets: Tensor, kind: AbsoluteLossKind = "bce", weights: Tensor | None = None
) -> Tensor:
    """Regression of ``sigmoid(logit)`` onto scores in [0, 1].

    * ``bce``: binary cross-entropy with logits against the *soft* target (its minimum
      is the target's entropy, not 0, but its gradient ``sigmoid(logit) - target`` does
      not vanish when the logit saturates, unlike MSE's);
    * ``mse``: ``(sigmoid(logit) - target)**2``.

    With ``weights`` the result is the weighted mean ``sum(w * loss) / sum(w)``.
    """
    logits, targets = logits.float(), targets.float()
    if kind == "bce":
        per_row = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif kind == "mse":
        per_row = (torch.sigmoid(logits) - targets).pow(2)
    else:
        raise ValueError(f"unknown absolute loss {kind!r}; use bce or mse")
    if weights is None:
        return per_row.mean()
    weights = weights.float()
    return (per_row * weights).sum() / weights.sum()


def joint_loss(
    heads: Tensor,
    n_ranking: int,
    group_sizes: Tensor | Sequence[int],
    targets: Tensor,
    *,
    absolute_weight: float = 1.0,
    abs_kind: AbsoluteLossKind = "bce",
    weights: Tensor | None = None,
    **ranking_kwargs: Any,
) -> Tensor:
    """One encoder, two heads: the ranking loss on output 0 plus ``absolute_weight x`` the absolute loss on output 1.

    ``heads`` is ``[N, 2]``: its first ``n_ranking`` rows are the flattened replies of the
    rankings (``group_sizes``), the rest the absolute rows (``targets``, ``weights``). A
    batch may lack either kind; that term is then left out. ``ranking_kwargs`` go to
    :func:`ranking_loss` (l2, score margins, pair strength).
    """
    loss = heads.sum() * 0.0  # keeps the graph when a term is missing
    if n_ranking:
        loss = loss + ranking_loss(heads[:n_ranking, 0], group_sizes, **ranking_kwargs)
    if n_ranking < heads.shape[0] and absolute_weight:
        loss = loss + absolute_weight * absolute_loss(heads[n_ranking:, 1], targets, abs_kind, weights)
    return loss


def absolute_loss_weights(targets: Tensor, threshold: float, strength: float) -> Tensor:
    """Per-row loss weights that lift the under-represented low-score bucket.

    With N rows of which N_below have ``target <= threshold``, those rows get weight
    ``strength * N / N_below`` and all others weight 1. The low bucket's total weight is
    then ``strength * N``: ``strength = 1`` gives it about as much pull as the whole rest
    of the data. ``strength <= 0``, or no row at or below the threshold, gives all ones.
    """
    weights = torch.ones_like(targets, dtype=torch.float32)
    below = targets <= threshold
    n_below = int(below.sum())
    if strength > 0 and n_below > 0:
        weights[below] = strength * len(targets) / n_below
    return weights


def undersample_by_bins(
    scores: Sequence[float] | np.ndarray, bins: int, max_ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices kept by stratified under-sampling of over-represented score bins.

    Scores in [0, 1] fall into ``bins`` equal-width bins (a score of 1.0 goes to the last
    one). Let ``m`` be the size of the smallest non-empty bin: every bin keeps at most
    ``ceil(max_ratio * m)`` rows, drawn uniformly with ``rng``; smaller bins keep all.
    Returns the kept indices in increasing order.
    """
    if bins < 1 or max_ratio < 1:
        raise ValueError(f"undersample needs bins >= 1 and max_ratio >= 1, got {bins} and {max_ratio}")
    scores = np.asarray(scores, dtype=float)
    bin_of = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(bin_of, minlength=bins)
    cap = math.ceil(max_ratio * counts[counts > 0].min()) if len(scores) else 0
    kept = []
    for b in range(bins):
        members = np.flatnonzero(bin_of == b)
        if len(members) > cap:
            members = rng.choice(members, size=cap, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept)) if kept else np.array([], dtype=int)


def ranking_options(rm: RewardModelConfig, scores: Tensor | None) -> dict[str, Any]:
    """The keyword arguments of :func:`ranking_loss` that ``rm.*`` sets.

    One place, so training and validation agree.
    """
    return {
        "l2_coef": rm.l2_coef,
        "scores": scores,
        "margin_scale": rm.margin_scale,
        "pair_strength": rm.pair_strength,
        "strength_scale": rm.strength_scale,
    }
