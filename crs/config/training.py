"""The supervised stages' sections: ``train`` (optimiser and schedule) and ``rm`` (reward-model losses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TrainConfig:
    """Optimisation settings for the supervised stages (SFT and reward models)."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    num_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data (may be fractional)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; > 0 overrides `num_epochs`."})
    batch_size: int = field(
        default=8,
        metadata={"help": "Examples per device batch (SFT: pairs; pairwise RM: prompts with their replies; absolute RM: replies)."},
    )
    eval_batch_size: int = field(default=16, metadata={"help": "Examples per validation batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser step."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of the total steps spent warming the learning rate up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    lr_scheduler: str = field(
        default="cosine", metadata={"help": "transformers' `lr_scheduler_type` (`cosine`, `linear`, `constant`, ...)."}
    )
    eval_steps: int = field(default=50, metadata={"help": "Validate every N optimiser steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N optimiser steps, in `<run>/checkpoints/`."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last N checkpoints."})
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
    max_replies: int = field(default=4, metadata={"help": "Caps K, the replies per prompt of a ranking."})
    reply_selection: Literal["spread", "top"] = field(
        default="spread",
        metadata={
            "help": "Which replies a longer ranking keeps: `spread` (evenly spaced ranks, best and worst included: keeps the quality "
            "range) or `top` (the first `max_replies`)."
        },
    )
    l2_coef: float = field(default=0.0, metadata={"help": "`l2_coef x mean(r^2)`: a small L2 penalty on rewards keeps them centred."})
    margin_scale: float = field(
        default=0.0, metadata={"help": "Pairwise margin = `margin_scale x` score gap, where rankings carry scores."}
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
    threshold: float = field(default=0.4, metadata={"help": "Scores <= threshold are the under-represented low-score bucket."})
    loss_weight_strength: float = field(
        default=0.0,
        metadata={"help": "> 0 turns on low-score weighting: rows in that bucket get weight `strength x N / N_below`, the others 1."},
    )
    undersample: bool = field(default=False, metadata={"help": "Stratified under-sampling of over-represented score bins."})
    undersample_bins: int = field(default=5, metadata={"help": "Number of score bins for under-sampling."})
    undersample_max_ratio: float = field(
        default=2.0, metadata={"help": "Under-sampling: a bin keeps at most ratio x the smallest bin's rows."}
    )
