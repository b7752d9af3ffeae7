"""What a reward-model run trains and validates on: rankings capped to ``rm.max_replies`` (pairwise,
disentangled), absolute rows under-sampled and weighted, or both (joint), and the views of the held-out prompts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from crs.config import ConfigError, CRSConfig, RewardModelConfig
from crs.data import load_examples
from crs.data.loader import group_key
from crs.data.schema import AbsoluteExample, DataError, RankingExample
from crs.rm.reward_losses import absolute_loss_weights, undersample_by_bins

logger = logging.getLogger(__name__)

RANKING_LOSSES = ("pairwise", "disentangled")  # the losses that train on rankings alone


def cap_replies(example: RankingExample, max_replies: int, selection: str = "spread") -> RankingExample:
    """The example with at most ``max_replies`` replies, still best first.

    ``spread`` keeps evenly spaced ranks including the best and the worst reply (so the
    quality range survives the cap); ``top`` keeps the first ``max_replies``.
    """
    k = len(example.replies)
    if k <= max_replies:
        return example
    if max_replies < 2:
        raise ConfigError(f"rm.max_replies must be >= 2, got {max_replies}")
    if selection == "top":
        keep = list(range(max_replies))
    elif selection == "spread":
        keep = sorted({int(i) for i in np.linspace(0, k - 1, max_replies).round()})
    else:
        raise ConfigError(f"rm.reply_selection: unknown {selection!r}; use spread or top")
    scores = [example.scores[i] for i in keep] if example.scores is not None else None
    return RankingExample(example.prompt, [example.replies[i] for i in keep], scores, example.meta)


def absolute_train_rows(
    examples: list[AbsoluteExample], rm: RewardModelConfig, seed: int
) -> list[tuple[AbsoluteExample, float]]:
    """Training rows of the absolute loss: under-sampled (``rm.undersample``) and weighted.

    Weights follow :func:`crs.rm.reward_losses.absolute_loss_weights` over the rows that remain.
    """
    if rm.undersample:
        keep = undersample_by_bins(
            [ex.score for ex in examples], rm.undersample_bins, rm.undersample_max_ratio, np.random.default_rng(seed)
        )
        logger.info("rm.undersample: keeping %d of %d absolute examples", len(keep), len(examples))
        examples = [examples[i] for i in keep]
    weights = absolute_loss_weights(torch.tensor([ex.score for ex in examples]), rm.threshold, rm.loss_weight_strength)
    return list(zip(examples, weights.tolist()))


@dataclass
class ValidationViews:
    """What an RM is validated on: rankings and absolute scores of the validation prompts.

    The RM's own loss fixes one view; the other is filled in where the data source also
    has it for the same prompts (the demo data has both), else it stays empty.
    """

    rankings: list[RankingExample]
    absolutes: list[AbsoluteExample]


def load_validation_views(cfg: CRSConfig, val: list[Any]) -> ValidationViews:
    """The RM's validation examples plus the other view of the same prompts, if any."""

    own_is_ranking = cfg.rm.loss in RANKING_LOSSES
    other_kind = "absolute" if own_is_ranking else "ranking"
    other: list[Any] = []
    if val:
        try:
            train_other, val_other = load_examples(cfg.data, other_kind, cfg.run.seed)
        except (ConfigError, DataError) as err:
            logger.info("no %s view of the validation prompts (%s)", other_kind, err)
        else:
            wanted = {group_key(ex) for ex in val}
            other = [ex for ex in train_other + val_other if group_key(ex) in wanted]
    return ValidationViews(val, other) if own_is_ranking else ValidationViews(other, val)


@dataclass
class TrainingData:
    """What one RM run trains and validates on.

    ``train``: capped rankings and/or weighted absolute rows (the Trainer's dataset);
    ``val``: the run's own validation examples (empty: no validation); ``views``: what it is
    validated on; ``train_views``: the training examples, for statistics when ``val`` is empty.
    """

    train: list[Any]
    val: list[Any]
    views: ValidationViews
    train_views: ValidationViews


def training_data(cfg: CRSConfig) -> TrainingData:
    """The examples ``rm.loss`` trains on (:func:`joint_training_data` for ``joint``)."""
    rm = cfg.rm
    if rm.loss == "joint":
        return joint_training_data(cfg)
    ranked = rm.loss in RANKING_LOSSES
    try:
        train_examples, val_examples = load_examples(cfg.data, "ranking" if ranked else "absolute", cfg.run.seed)
    except (ConfigError, DataError) as err:
        if rm.loss != "disentangled":
            raise
        raise ConfigError(
            "rm.loss=disentangled trains on rankings (the sum of its two heads meets the preferences); "
            f"data.source={cfg.data.source} gives no ranking examples ({str(err).splitlines()[0]}): "
            "use a source with rankings or chosen/rejected pairs, or another rm.loss"
        ) from None
    if ranked:
        train: list[Any] = [cap_replies(ex, rm.max_replies, rm.reply_selection) for ex in train_examples]
        train_views = ValidationViews(train_examples, [])
    else:
        train = absolute_train_rows(train_examples, rm, cfg.run.seed)
        train_views = ValidationViews([], train_examples)
    return TrainingData(train, val_examples, load_validation_views(cfg, val_examples), train_views)


def joint_training_data(cfg: CRSConfig) -> TrainingData:
    """Rankings and absolute rows of the one data source, mixed; both kinds are validated on.

    The two kinds are split into train / validation separately; a prompt held out in
    either is kept out of the other's training too, so validation prompts stay unseen.
    """
    rm, loaded = cfg.rm, {}
    for kind in ("ranking", "absolute"):
        try:
            loaded[kind] = load_examples(cfg.data, kind, cfg.run.seed)
        except (ConfigError, DataError) as err:
            raise ConfigError(
                "rm.loss=joint needs ranking and absolute examples from one data source; "
                f"data.source={cfg.data.source} gives no {kind} examples ({str(err).splitlines()[0]}): "
                "use a source with both (e.g. the crs demo data) or another rm.loss"
            ) from None
    (train_ranked, val_ranked), (train_scored, val_scored) = loaded["ranking"], loaded["absolute"]
    held_out = {group_key(ex) for ex in val_ranked + val_scored}
    train_ranked = [ex for ex in train_ranked if group_key(ex) not in held_out]
    train_scored = [ex for ex in train_scored if group_key(ex) not in held_out]
    if not train_ranked or not train_scored:
        raise ConfigError(
            f"rm.loss=joint: no {'ranking' if not train_ranked else 'absolute'} examples left to train on once the "
            "validation prompts are held out; lower data.val_fraction or add data"
        )
    train = [cap_replies(ex, rm.max_replies, rm.reply_selection) for ex in train_ranked] + absolute_train_rows(
        train_scored, rm, cfg.run.seed
    )
    return TrainingData(
        train,
        val_ranked + val_scored,
        ValidationViews(val_ranked, val_scored),
        ValidationViews(train_ranked, train_scored),
    )
