"""The ``train`` section: the optimiser and schedule of the supervised stages (SFT, reward models)."""

from __future__ import annotations

from dataclasses import dataclass, field

from crs.config.fields import FRACTION, Rule, above, at_least


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
            "help": "Examples per device batch (SFT: pairs; pairwise RM: prompts with their replies; absolute RM: "
            "replies).",
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
        metadata={
            "help": "Share of the total steps spent warming the learning rate up.",
            "rule": Rule(FRACTION, "in [0, 1)"),
        },
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "AdamW weight decay.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    max_grad_norm: float = field(
        default=1.0,
        metadata={
            "help": "Gradient clipping norm.",
            "rule": Rule(at_least(0), "a finite number >= 0 (0: no clipping)"),
        },
    )
    lr_scheduler: str = field(
        default="cosine", metadata={"help": "transformers' `lr_scheduler_type` (`cosine`, `linear`, `constant`, ...)."}
    )
    eval_steps: int = field(
        default=50,
        metadata={
            "help": "Validate every N optimiser steps.",
            "rule": Rule(at_least(0), "an integer >= 0 (0: no validation during training)"),
        },
    )
    save_steps: int = field(
        default=100,
        metadata={
            "help": "Checkpoint every N optimiser steps, in `<run>/checkpoints/`.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    save_total_limit: int = field(
        default=2,
        metadata={"help": "Keep the last N checkpoints.", "rule": Rule(at_least(0), "an integer >= 0 (0: keep all)")},
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch examples of similar length together (shuffled groups of 50 batches, sorted within; a new "
            "order each epoch, from run.seed): less padding, so faster training, at a less random batch composition."
        },
    )
