"""Evaluating reward models: validation metrics of the RM being trained (its own view and the
other one, a joint RM's combined and separate heads, a disentangled RM's quality head beside its
length head and their sum), its reward statistics, and finished RM runs compared on other data
(:func:`evaluate_runs`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crs.config import ConfigError, DataConfig, RewardModelConfig
from crs.data import load_examples
from crs.data.schema import AbsoluteExample, DataError, RankingExample
from crs.rm.collators import flat_scores
from crs.rm.disentangled_heads import LENGTH_OUTPUT, QUALITY_OUTPUT, reply_lengths
from crs.rm.joint_heads import JointHeads
from crs.rm.metrics import (
    absolute_metrics,
    pair_agreement,
    pearson,
    ranking_metrics,
    ranking_pairs,
    reward_stats,
    spearman,
)
from crs.rm.reward_losses import absolute_loss, disentangled_terms, joint_loss, ranking_loss, ranking_options
from crs.rm.scorer import RewardScorer, load_reward_scorers
from crs.rm.training_data import RANKING_LOSSES, ValidationViews


def _ranking_inputs(rankings: list[RankingExample]) -> tuple[list[Any], list[str]]:
    """(prompt, reply) of every reply of ``rankings``, flattened."""
    return [ex.prompt for ex in rankings for _ in ex.replies], [r for ex in rankings for r in ex.replies]


def _absolute_inputs(absolutes: list[AbsoluteExample]) -> tuple[list[Any], list[str]]:
    return [ex.prompt for ex in absolutes], [ex.reply for ex in absolutes]


def view_metrics(
    views: ValidationViews, ranking_rewards: Tensor, absolute_rewards: Tensor, prefix: str = ""
) -> dict[str, float | None]:
    """Ranking metrics of ``ranking_rewards`` on the rankings, and Pearson / Spearman of
    ``absolute_rewards`` with the scores."""
    metrics: dict[str, float | None] = {}
    if views.rankings:
        groups = ranking_rewards.split([len(ex.replies) for ex in views.rankings])
        metrics.update(ranking_metrics([g.tolist() for g in groups], [ex.scores for ex in views.rankings]))
    if views.absolutes:
        targets = [ex.score for ex in views.absolutes]
        metrics["pearson"] = pearson(absolute_rewards.tolist(), targets)
        metrics["spearman"] = spearman(absolute_rewards.tolist(), targets)
    return {prefix + key: value for key, value in metrics.items()}


def evaluate_reward_model(
    scorer: RewardScorer, views: ValidationViews, rm: RewardModelConfig, head_weight: Tensor | None = None
) -> tuple[dict[str, float | None], Tensor]:
    """Validation metrics of one RM, and its rewards on its own validation replies.

    Every RM kind gets the ranking metrics (``pairwise_accuracy``, ``best_vs_worst_accuracy``,
    ``mean_margin``) on the rankings and ``pearson`` / ``spearman`` of reward vs score
    on the absolute view; an absolute RM also gets the regression errors of
    ``sigmoid(reward)`` (``mse``, ``mae``, per bucket around ``rm.threshold``). ``loss``
    is the RM's own (unweighted) loss on its own view. A joint RM: :func:`evaluate_joint`;
    a disentangled one: :func:`evaluate_disentangled` (``head_weight``: its output layer's weight).
    """
    if rm.loss == "joint":
        return evaluate_joint(scorer, views, rm)
    if rm.loss == "disentangled":
        return evaluate_disentangled(scorer, views, rm, head_weight)
    ranked = scorer(*_ranking_inputs(views.rankings)) if views.rankings else torch.zeros(0)
    scored = scorer(*_absolute_inputs(views.absolutes)) if views.absolutes else torch.zeros(0)
    metrics = view_metrics(views, ranked, scored)
    own_rewards = torch.zeros(0)
    if rm.loss == "pairwise" and views.rankings:
        sizes = [len(ex.replies) for ex in views.rankings]
        metrics["loss"] = float(ranking_loss(ranked, sizes, **ranking_options(rm, flat_scores(views.rankings))))
        own_rewards = ranked
    if rm.loss == "absolute" and views.absolutes:
        targets = torch.tensor([ex.score for ex in views.absolutes])
        metrics.update(absolute_metrics(torch.sigmoid(scored).tolist(), targets.tolist(), rm.threshold))
        metrics["loss"] = float(absolute_loss(scored, targets, rm.abs_loss))
        own_rewards = scored
    return metrics, own_rewards


def evaluate_joint(
    scorer: RewardScorer, views: ValidationViews, rm: RewardModelConfig
) -> tuple[dict[str, float | None], Tensor]:
    """A joint RM's validation metrics, and its raw heads (``[N, 2]``) on every validation reply
    (rankings', then absolute).

    The combined reward (``rm.joint_preference_weight``, each head z-scored on these very
    replies, as the saved statistics will be) gets the metrics of :func:`view_metrics`;
    each head alone gets them too, prefixed ``preference_head_`` / ``absolute_head_``, and
    the absolute head the regression errors of ``sigmoid(output 1)``. ``loss`` is the joint loss.
    """
    ranked = scorer.score_heads(*_ranking_inputs(views.rankings))
    scored = scorer.score_heads(*_absolute_inputs(views.absolutes))
    heads = torch.cat([ranked, scored])
    if not len(heads):
        return {}, heads
    joint = JointHeads.fit(heads, rm.joint_preference_weight)
    metrics = view_metrics(views, joint.combine(ranked), joint.combine(scored))
    for output, prefix in enumerate(("preference_head_", "absolute_head_")):
        metrics.update(view_metrics(views, ranked[:, output], scored[:, output], prefix))
    targets = torch.tensor([ex.score for ex in views.absolutes], dtype=torch.float32)
    if views.absolutes:
        errors = absolute_metrics(torch.sigmoid(scored[:, 1]).tolist(), targets.tolist(), rm.threshold)
        metrics.update({f"absolute_head_{key}": value for key, value in errors.items()})
    sizes = [len(ex.replies) for ex in views.rankings]
    loss = joint_loss(
        heads,
        len(ranked),
        sizes,
        targets,
        absolute_weight=rm.joint_absolute_weight,
        abs_kind=rm.abs_loss,
        **ranking_options(rm, flat_scores(views.rankings)),
    )
    metrics["loss"] = float(loss)
    return metrics, heads


def evaluate_disentangled(
    scorer: RewardScorer, views: ValidationViews, rm: RewardModelConfig, head_weight: Tensor | None
) -> tuple[dict[str, float | None], Tensor]:
    """A disentangled RM's validation metrics, and its quality head's rewards on the rankings' replies.

    The quality head, the reward the run saves, gets the metrics of :func:`view_metrics`
    unprefixed; the length head and the sum of both (what the ranking loss trained) get them
    prefixed ``length_head_`` / ``sum_``. Each also gets ``length_pearson``, its Pearson
    correlation with the replies' length over the rankings' replies. ``loss`` is the
    weighted objective over all those replies as one batch, ``loss_<term>`` each term
    unweighted (:class:`~crs.rm.reward_losses.DisentangledTerms`).
    """
    prompts, replies = _ranking_inputs(views.rankings)
    ranked = scorer.score_heads(prompts, replies)
    scored = scorer.score_heads(*_absolute_inputs(views.absolutes))
    if not len(ranked):
        return {}, ranked[:, QUALITY_OUTPUT]
    lengths = reply_lengths(replies)
    metrics: dict[str, float | None] = {}
    for prefix, pick in (
        ("", lambda heads: heads[:, QUALITY_OUTPUT]),
        ("length_head_", lambda heads: heads[:, LENGTH_OUTPUT]),
        ("sum_", lambda heads: heads.sum(dim=1)),
    ):
        metrics.update(view_metrics(views, pick(ranked), pick(scored), prefix))
        metrics[f"{prefix}length_pearson"] = pearson(pick(ranked).tolist(), lengths.tolist())
    sizes = [len(ex.replies) for ex in views.rankings]
    with torch.no_grad():  # head_weight is the trained model's own parameter
        terms = disentangled_terms(
            ranked, sizes, lengths, head_weight, **ranking_options(rm, flat_scores(views.rankings))
        )
    metrics["loss"] = float(terms.total(rm))
    metrics.update(terms.as_metrics())
    return metrics, ranked[:, QUALITY_OUTPUT]


def view_rewards(scorer: RewardScorer, views: ValidationViews, rm: RewardModelConfig) -> Tensor:
    """What ``reward_stats.json`` is computed from: the RM's rewards on its own view.

    A joint RM: both heads on both views.
    """
    if rm.loss == "joint":
        return torch.cat(
            [
                scorer.score_heads(*_ranking_inputs(views.rankings)),
                scorer.score_heads(*_absolute_inputs(views.absolutes)),
            ]
        )
    ranked = rm.loss in RANKING_LOSSES  # a disentangled RM scores with its quality head (output 0)
    return scorer(*(_ranking_inputs(views.rankings) if ranked else _absolute_inputs(views.absolutes)))


def reward_stats_record(rewards: Tensor, rm: RewardModelConfig, split: str) -> tuple[dict[str, Any], JointHeads | None]:
    """``reward_stats.json``: ``mean`` / ``std`` / quantiles of the reward the scorer returns,
    and the split they come from.

    A joint RM's ``rewards`` are its raw heads; the file then also keeps each head's
    statistics and their correlation (:meth:`JointHeads.saved`), returned as :class:`JointHeads`.
    """
    if rm.loss != "joint":
        return {**reward_stats(rewards.tolist()), "split": split}, None
    joint = JointHeads.fit(rewards, rm.joint_preference_weight)
    return {**reward_stats(joint.combine(rewards).tolist()), **joint.saved(), "split": split}, joint


def evaluate_runs(run_dirs: list[str], data: DataConfig) -> dict[str, dict[str, float | None]]:
    """Ranking metrics and score correlations of each RM run on all of ``data``, and the
    pairwise agreement of every two runs (``scripts/eval_reward_models.py``).

    Every RM is scored as a ranker (its own loss is left out), so preference and
    absolute RMs compare on the same pairs; keys are the run dirs' names.
    """

    rankings, _ = load_examples(data, "ranking", seed=0)
    try:
        absolutes, _ = load_examples(data, "absolute", seed=0)
    except (ConfigError, DataError):  # a source with rankings only
        absolutes = []
    views = ValidationViews(rankings, absolutes)
    scorers = dict(zip((Path(run).name for run in run_dirs), load_reward_scorers(run_dirs)))  # one copy per shared base
    results: dict[str, dict[str, float | None]] = {}
    for name, scorer in scorers.items():
        # Scored as a ranker either way; an absolute RM's own loss is left out (threshold-free).
        metrics, _ = evaluate_reward_model(scorer, views, RewardModelConfig(loss="pairwise"))
        metrics.pop("loss", None)
        results[name] = {**metrics, "n_prompts": float(len(rankings))}
    pairs = ranking_pairs(rankings)
    for (name_a, a), (name_b, b) in itertools.combinations(scorers.items(), 2):
        results[f"{name_a} ~ {name_b}"] = {"agreement": pair_agreement(a, b, pairs)}
    return results
