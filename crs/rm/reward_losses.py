"""Every objective of reward-model training: the ranking and absolute-score losses, the joint and the
disentangled two-head objectives, and how absolute data is re-balanced.

The K-wise ranking (Bradley-Terry / Plackett-Luce) loss with margins, preference strength and L2; the
absolute-score (BCE / MSE) loss with its per-row weights and bin under-sampling; the disentangled RM's
terms (ranking loss of the heads' sum, length correlation, quality-length covariance, head orthogonality).

Ranking batches arrive *flattened*: the replies of prompt 0 (best first), then those of
prompt 1, and so on; ``group_sizes[g]`` says how many replies prompt ``g`` has. The
ranking loss turns that into a padded ``[G, K]`` matrix with a validity mask, so prompts
with different numbers of replies share one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crs.config import RewardModelConfig
from crs.rm.disentangled_heads import LENGTH_OUTPUT, QUALITY_OUTPUT

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


def _standardised(lengths: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``lengths`` z-scored over the batch (population std), or None when they are all equal or fewer than 2."""
    lengths = lengths.to(dtype)
    spread = lengths.std(unbiased=False) if lengths.numel() > 1 else lengths.new_zeros(())
    if float(spread) == 0.0:
        return None
    return (lengths - lengths.mean()) / spread


def batch_pearson(values: Tensor, lengths: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of ``values`` with ``lengths`` over one batch, differentiable in ``values``.

    ``eps`` under the square root keeps the gradient finite where ``values`` has no spread.
    Fewer than two values, or lengths that are all equal, say nothing about length: 0 (with
    the graph kept, so ``backward()`` still works).
    """
    z = _standardised(lengths, values.dtype)
    if z is None:
        return values.sum() * 0.0
    centred = values - values.mean()
    return (centred * z).mean() / (centred.pow(2).mean() + eps).sqrt()


def length_covariance(values: Tensor, lengths: Tensor) -> Tensor:
    """Covariance of ``values`` with ``lengths`` z-scored over the batch: how far ``values`` moves, in its
    own units, per standard deviation of length.

    It is the Pearson correlation times the spread of ``values``, so it is 0 exactly when
    the correlation is; unlike the correlation it does not fall when ``values`` spreads out
    for other reasons, so its gradient can only remove the part of ``values`` that follows
    length. 0 (graph kept) when the lengths are all equal or fewer than two.
    """
    z = _standardised(lengths, values.dtype)
    if z is None:
        return values.sum() * 0.0
    return ((values - values.mean()) * z).mean()


@dataclass
class DisentangledTerms:
    """The disentangled RM's objective (``rm.loss: disentangled``), term by term, unweighted.

    ``ranking``: the ranking loss of the sum of the quality and the length head (what the
    preferences see); ``length_correlation``: Pearson of the length head with reply length
    (rewarded); ``quality_covariance``: the absolute covariance of the quality head with the
    standardised reply length (penalised; :func:`length_covariance`); ``orthogonality``:
    ``|w_q . w_l|``, the dot product of the two heads' weight vectors (penalised).
    Validation reports each as ``loss_<term>``.

    Why a covariance for the quality head and not its absolute Pearson correlation: the
    correlation does not depend on the head's scale, so lowering it also rewards inflating
    whatever else the head carries; from a random start that amplified the content the
    quality head happened to read first, with either sign, before the ranking loss could
    set it. The covariance's gradient only takes the length out.
    """

    ranking: Tensor
    length_correlation: Tensor
    quality_covariance: Tensor
    orthogonality: Tensor

    def total(self, rm: RewardModelConfig) -> Tensor:
        """The loss trained on: the terms weighted by ``rm.disentangled_*_weight``."""
        return (
            self.ranking
            - rm.disentangled_length_weight * self.length_correlation
            + rm.disentangled_quality_weight * self.quality_covariance
            + rm.disentangled_orthogonality_weight * self.orthogonality
        )

    def as_metrics(self) -> dict[str, float]:
        """``loss_<term>`` for each term, as plain numbers."""
        return {f"loss_{name}": float(value) for name, value in vars(self).items()}


def disentangled_terms(
    heads: Tensor,
    group_sizes: Tensor | Sequence[int],
    lengths: Tensor,
    head_weight: Tensor | None,
    **ranking_kwargs: Any,
) -> DisentangledTerms:
    """The terms of the disentangled objective on one batch of flattened rankings.

    ``heads`` is ``[N, 2]`` (the quality and the length output), ``lengths`` the ``[N]``
    reply lengths, ``head_weight`` the ``[2, hidden]`` weight of the output layer (None: no
    orthogonality term, e.g. where only scores are at hand). The length terms are taken
    over all the batch's replies. ``ranking_kwargs`` go to :func:`ranking_loss`.
    """
    quality, length = heads[:, QUALITY_OUTPUT], heads[:, LENGTH_OUTPUT]
    orthogonality = (
        (head_weight[QUALITY_OUTPUT].float() * head_weight[LENGTH_OUTPUT].float()).sum().abs()
        if head_weight is not None
        else heads.sum() * 0.0
    )
    return DisentangledTerms(
        ranking=ranking_loss(quality + length, group_sizes, **ranking_kwargs),
        length_correlation=batch_pearson(length, lengths),
        quality_covariance=length_covariance(quality, lengths).abs(),
        orthogonality=orthogonality,
    )


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
