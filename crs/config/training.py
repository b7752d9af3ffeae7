"""The supervised stages' sections: ``train`` (optimiser and schedule) and ``rm`` (reward-model losses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crs.config.fields import FRACTION, UNIT, Rule, above, at_least


@dataclass
class TrainConfig:
    """Optimisation settings for the supervised stages (SFT and reward models)."""

    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "Peak learning rate.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    num_epochs: float = field(
        default=1.0,
        metadata={
            "help": "Passes over the training data (may be fractional).",
            "rule": Rule(lambda v, c: c.train.max_steps > 0 or above(0)(v, c), "> 0 (or set train.max_steps > 0)"),
        },
    )
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; > 0 overrides `num_epochs`."})
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Examples per device batch (SFT: pairs; pairwise RM: prompts with their replies; absolute RM: replies).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    eval_batch_size: int = field(
        default=16,
        metadata={"help": "Examples per validation batch.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "Batches per optimiser step.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata={"help": "Share of the total steps spent warming the learning rate up.", "rule": Rule(FRACTION, "in [0, 1)")},
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "AdamW weight decay.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    max_grad_norm: float = field(
        default=1.0,
        metadata={"help": "Gradient clipping norm.", "rule": Rule(at_least(0), "a finite number >= 0 (0: no clipping)")},
    )
    lr_scheduler: str = field(
        default="cosine", metadata={"help": "transformers' `lr_scheduler_type` (`cosine`, `linear`, `constant`, ...)."}
    )
    eval_steps: int = field(
        default=50,
        metadata={"help": "Validate every N optimiser steps.", "rule": Rule(at_least(0), "an integer >= 0 (0: no validation during training)")},
    )
    save_steps: int = field(
        default=100,
        metadata={"help": "Checkpoint every N optimiser steps, in `<run>/checkpoints/`.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    save_total_limit: int = field(
        default=2,
        metadata={"help": "Keep the last N checkpoints.", "rule": Rule(at_least(0), "an integer >= 0 (0: keep all)")},
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch examples of similar length together (shuffled groups of 50 batches, sorted within; a new order each "
            "epoch, from run.seed): less padding, so faster training, at a less random batch composition."
        },
    )


@dataclass
class RewardModelConfig:
    """Reward-model loss settings (``rm_train.py``)."""

    loss: Literal["pairwise", "absolute"] = field(
        default="pairwise",
        metadata={
            "help": "`pairwise` (data kind `ranking`): Bradley-Terry over all C(K,2) ordered pairs of a ranking, averaged per prompt. "
            "`absolute` (data kind `absolute`): regression of sigmoid(logit) onto a score in [0, 1]."
        },
    )
    max_replies: int = field(
        default=4,
        metadata={"help": "Caps K, the replies per prompt of a ranking.", "rule": Rule(at_least(2), "an integer >= 2")},
    )
    reply_selection: Literal["spread", "top"] = field(
        default="spread",
        metadata={
            "help": "Which replies a longer ranking keeps: `spread` (evenly spaced ranks, best and worst included: keeps the quality "
            "range) or `top` (the first `max_replies`)."
        },
    )
    l2_coef: float = field(
        default=0.0,
        metadata={"help": "`l2_coef x mean(r^2)`: a small L2 penalty on rewards keeps them centred.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    margin_scale: float = field(
        default=0.0,
        metadata={"help": "Pairwise margin = `margin_scale x` score gap, where rankings carry scores.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    abs_loss: Literal["bce", "mse"] = field(
        default="bce", metadata={"help": "Absolute loss: `bce` (BCE on soft labels, the reference study's best) or `mse`."}
    )
    init_bias_to_mean: bool = field(
        default=True,
        metadata={
            "help": "Start the head's bias at logit(mean training score), so sigmoid(bias) = mean. From 0 the output takes ~1/lr "
            "steps to reach the typical score, and until then training fits the level of the scores rather than their order. "
            "Heads without a bias (e.g. Llama's) are left as they are."
        },
    )
    threshold: float = field(
        default=0.4,
        metadata={"help": "Scores <= threshold are the under-represented low-score bucket.", "rule": Rule(UNIT, "in [0, 1]")},
    )
    loss_weight_strength: float = field(
        default=0.0,
        metadata={
            "help": "> 0 turns on low-score weighting: rows in that bucket get weight `strength x N / N_below`, the others 1.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    undersample: bool = field(default=False, metadata={"help": "Stratified under-sampling of over-represented score bins."})
    undersample_bins: int = field(
        default=5,
        metadata={"help": "Number of score bins for under-sampling.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    undersample_max_ratio: float = field(
        default=2.0,
        metadata={"help": "Under-sampling: a bin keeps at most ratio x the smallest bin's rows.", "rule": Rule(at_least(1), "a finite number >= 1")},
    )
