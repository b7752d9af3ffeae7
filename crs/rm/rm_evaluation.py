"""Evaluating reward models: validation metrics of the RM being trained (its own view and the
other one, a joint RM's combined and separate heads, a disentangled RM's quality head beside its
length head and their sum; how much of its ranking accuracy is length), its reward statistics, and
finished RM runs compared on other data (:func:`evaluate_runs`)."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crs.config import ConfigError, DataConfig, RewardModelConfig, load_config, read_yaml
from crs.data import load_examples
from crs.data.schema import AbsoluteExample, DataError, RankingExample
from crs.rm.collators import flat_scores
from crs.rm.disentangled_heads import LENGTH_OUTPUT, QUALITY_OUTPUT
from crs.rm.joint_heads import JointHeads
from crs.rm.length_calibration import RUN_CALIBRATION_SET, LengthCalibration, fit_length_calibration
from crs.rm.length_metrics import (
    Preferences,
    bootstrap_rounds,
    information_beyond_length,
    preferences,
    reply_lengths,
    subset_counts,
)
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
from crs.rm.training_data import RANKING_LOSSES, ValidationViews, training_data

logger = logging.getLogger(__name__)


def _ranking_inputs(rankings: list[RankingExample]) -> tuple[list[Any], list[str]]:
    """(prompt, reply) of every reply of ``rankings``, flattened."""
    return [ex.prompt for ex in rankings for _ in ex.replies], [r for ex in rankings for r in ex.replies]


def _absolute_inputs(absolutes: list[AbsoluteExample]) -> tuple[list[Any], list[str]]:
    return [ex.prompt for ex in absolutes], [ex.reply for ex in absolutes]


BEYOND_LENGTH_KEYS = {  # validation metric -> the field of crs.rm.length_metrics.BeyondLength it shows
    "beyond_length_lr": "lr",
    "beyond_length_p": "p_lr",
    "beyond_length_coef": "coef",
    "beyond_length_coef_ci_low": "ci_low",
    "beyond_length_coef_ci_high": "ci_high",
    "beyond_length_p_robust": "p_robust",
    "beyond_length_cv_log_loss_length": "cv_log_loss_length",
    "beyond_length_cv_log_loss_with_scorer": "cv_log_loss_with_scorer",
}


def ranking_preferences(rankings: list[RankingExample]) -> Preferences:
    """Every pair of each ranking as a preference, the earlier reply preferred (a pair the data score equal: a tie,
    left out, as :func:`crs.rm.metrics.ranking_metrics` skips it); replies flattened, one cluster per ranking."""
    lengths, clusters, first, second, outcomes = [], [], [], [], []
    for index, ex in enumerate(rankings):
        start = len(lengths)
        lengths += reply_lengths(ex.replies).tolist()
        clusters += [index] * len(ex.replies)
        for i, j in itertools.combinations(range(len(ex.replies)), 2):
            first.append(start + i)
            second.append(start + j)
            outcomes.append(0.5 if ex.scores is not None and ex.scores[i] == ex.scores[j] else 1.0)
    return preferences(lengths, clusters, first, second, outcomes, len(rankings))


def length_view_metrics(prefs: Preferences, rewards: list[float]) -> dict[str, float | None]:
    """How much of a reward's ranking accuracy is length (:mod:`crs.rm.length_metrics`, point values, reward ties
    half): accuracy where the preferred reply is the shorter one and on length-matched pairs with their counts,
    Spearman with length, and information beyond length (``beyond_length_*``: the naive likelihood-ratio test, the
    coefficient with its prompt-robust interval and p-value, the held-out log-loss of the length model and of the
    model with the reward). A non-finite reward (a diverged model) gives None for each rather than an error."""
    counts = subset_counts(prefs)
    metrics: dict[str, float | None] = {
        "n_shorter_preferred": counts["n_shorter_preferred"],
        "n_length_matched": counts["n_length_matched"],
    }
    point_keys = ("shorter_preferred_accuracy", "length_matched_accuracy", "length_spearman")
    if not all(math.isfinite(r) for r in rewards):
        return {**metrics, **dict.fromkeys(point_keys), **dict.fromkeys(BEYOND_LENGTH_KEYS)}
    points = bootstrap_rounds(prefs, rewards)
    beyond = information_beyond_length(prefs, rewards).as_dict()
    return {
        **metrics,
        **{key: points[key][0] for key in point_keys},
        **{key: beyond[field] for key, field in BEYOND_LENGTH_KEYS.items()},
    }


def length_only_metrics(views: ValidationViews) -> dict[str, float | None]:
    """The length-only scorer (prefers the longer reply) on the same rankings: ``length_only_pairwise_accuracy`` and
    ``length_only_length_matched_accuracy``, the numbers a reward model's must beat (empty without rankings)."""
    if not views.rankings:
        return {}
    prefs = ranking_preferences(views.rankings)
    points = bootstrap_rounds(prefs, prefs.lengths)
    return {
        "length_only_pairwise_accuracy": points["accuracy"][0],
        "length_only_length_matched_accuracy": points["length_matched_accuracy"][0],
    }


def view_metrics(
    views: ValidationViews, ranking_rewards: Tensor, absolute_rewards: Tensor, prefix: str = ""
) -> dict[str, float | None]:
    """Ranking metrics of ``ranking_rewards`` on the rankings with their length-aware ones
    (:func:`length_view_metrics`), and Pearson / Spearman of ``absolute_rewards`` with the scores."""
    metrics: dict[str, float | None] = {}
    if views.rankings:
        groups = ranking_rewards.split([len(ex.replies) for ex in views.rankings])
        metrics.update(ranking_metrics([g.tolist() for g in groups], [ex.scores for ex in views.rankings]))
        metrics.update(length_view_metrics(ranking_preferences(views.rankings), ranking_rewards.tolist()))
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
    ``mean_margin``, and how much of the accuracy is length: :func:`length_view_metrics`, beside
    the length-only scorer's :func:`length_only_metrics`) on the rankings and ``pearson`` /
    ``spearman`` of reward vs score on the absolute view; an absolute RM also gets the regression errors of
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
    metrics = {**view_metrics(views, ranked, scored), **length_only_metrics(views)}
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
    metrics = {**view_metrics(views, joint.combine(ranked), joint.combine(scored)), **length_only_metrics(views)}
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
    lengths = torch.from_numpy(reply_lengths(replies)).float()
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


def view_replies(views: ValidationViews, rm: RewardModelConfig) -> list[str]:
    """The replies :func:`view_rewards` scores (and :func:`evaluate_reward_model` returns the rewards of), in order."""
    ranked, scored = _ranking_inputs(views.rankings)[1], _absolute_inputs(views.absolutes)[1]
    if rm.loss == "joint":
        return ranked + scored
    return ranked if rm.loss in RANKING_LOSSES else scored


def own_length_calibration(
    scorer: RewardScorer, rewards: Tensor, replies: list[str], split: str
) -> LengthCalibration | None:
    """A reward-model run's own length calibration: the reward it gives (a joint RM's combined heads, once
    ``scorer.joint`` is set) on its ``split`` replies, against their length; None, with a warning, for fewer
    than 2 replies."""
    reward = scorer.joint.combine(rewards) if scorer.joint is not None else rewards
    if len(replies) < 2:
        logger.warning("%d %s replies: no length calibration fitted", len(replies), split)
        return None
    calibration_set = RUN_CALIBRATION_SET.format(split=split)
    return fit_length_calibration(reply_lengths(replies), reward.float().numpy(), calibration_set, scorer.name)


def refit_own_length_calibration(run_dir: str | Path) -> LengthCalibration:
    """A finished reward-model run's own length calibration, fitted now as ``crs rm`` fits it at the end of training:
    the run's config (``config.resolved.yaml``) rebuilds its validation replies (its training replies when it had no
    validation split), the run scores them. For runs trained before crs fitted one; relative data paths resolve
    against the current directory, as when the run trained."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.resolved.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: no config.resolved.yaml, so its validation replies are unknown; fit from a file")
    subsets = [key for key in read_yaml(saved) if key != "default"]
    if len(subsets) != 1:
        raise ConfigError(f"{saved}: expected one subset beside default, found {subsets}")
    cfg = load_config(subsets[0], saved)
    scorer = load_reward_scorers([str(run_dir)], cfg.model)[0]  # refuses a run that is no reward model
    data = training_data(cfg)
    views, split = (data.views, "val") if data.val else (data.train_views, "train")
    rewards = view_rewards(scorer, views, cfg.rm)
    calibration = own_length_calibration(scorer, rewards, view_replies(views, cfg.rm), split)
    if calibration is None:
        raise ConfigError(f"{run_dir}: fewer than 2 {split} replies to fit a length calibration on; fit from a file")
    return calibration


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
