"""The ``rm`` section: the reward model's loss and how it trains (``rm_train.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crs.config.fields import UNIT, Rule, at_least


@dataclass
class RewardModelConfig:
    """Reward-model loss settings (``rm_train.py``)."""

    loss: Literal["pairwise", "absolute", "joint", "disentangled"] = field(
        default="pairwise",
        metadata={
            "help": "`pairwise` (data kind `ranking`): Bradley-Terry over all C(K,2) ordered pairs of a ranking, "
            "averaged per prompt. `absolute` (data kind `absolute`): regression of sigmoid(logit) onto a score in "
            "[0, 1]. `joint` (both kinds, from the one data source): one encoder with two heads (a 2-output "
            "classifier: output 0 the preference head, output 1 the absolute head) trained together, the ranking loss "
            "on output 0 over the rankings plus `joint_absolute_weight x` the absolute loss on output 1 over the "
            "absolute rows; a batch mixes both (`train.batch_size` counts a ranking and an absolute row as one example "
            "each). Its reward: see `joint_preference_weight`. Plain loading: "
            "`AutoPeftModelForSequenceClassification.from_pretrained(<run>/adapter, num_labels=2, "
            "ignore_mismatched_sizes=True)`. `disentangled` (data kind `ranking`; ODIN, Chen et al. 2024): one encoder "
            "with two heads, a quality head (output 0) and a length head (output 1), whose sum is trained with the "
            "ranking loss while the length head is pushed to carry the replies' length in characters and the quality "
            "head to carry none of it (`disentangled_length_weight`, `disentangled_quality_weight`, "
            "`disentangled_orthogonality_weight`). The run saves the quality head alone, as a one-output RM: it loads "
            "and scores like a `pairwise` one (`num_labels=1`)."
        },
    )
    init_from: str = field(
        default="",
        metadata={
            "help": "Sequential training: a finished RM run (rm_train.py) on the same `model.name` whose weights (LoRA "
            "adapter or full model, head included) this run starts from, then trains with its own `loss` (e.g. an "
            "absolute run continued with the ranking loss, or the reverse); the result is an ordinary RM run on "
            "`model.name`, and `metrics.json` records the run it started from (`init_from`). A LoRA run continues with "
            "this run's `model.lora` settings (they must match the earlier run's); a full-model run needs "
            "`model.lora.enabled: false`. A joint run only continues a joint run, and the reverse (the head has two "
            "outputs). `init_bias_to_mean` is not applied (the head is trained); under `--resume` a checkpoint "
            'wins. "": a fresh start. Not with `loss: disentangled` (its two heads start fresh).',
            "rule": Rule(
                lambda v, c: not v or c.rm.loss != "disentangled",
                '"" with rm.loss=disentangled (its two heads start fresh; a saved RM has one)',
            ),
        },
    )
    max_replies: int = field(
        default=4,
        metadata={"help": "Caps K, the replies per prompt of a ranking.", "rule": Rule(at_least(2), "an integer >= 2")},
    )
    reply_selection: Literal["spread", "top"] = field(
        default="spread",
        metadata={
            "help": "Which replies a longer ranking keeps: `spread` (evenly spaced ranks, best and worst included: "
            "keeps the quality range) or `top` (the first `max_replies`)."
        },
    )
    l2_coef: float = field(
        default=0.0,
        metadata={
            "help": "`l2_coef x mean(r^2)`: a small L2 penalty on rewards keeps them centred.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    margin_scale: float = field(
        default=0.0,
        metadata={
            "help": "Pairwise margin = `margin_scale x` score gap, where rankings carry scores.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    pair_strength: Literal["none", "scaled", "margin"] = field(
        default="none",
        metadata={
            "help": "Preference strength of a ranking pair (i above j in the capped K-wise ranking): its rank distance "
            "j - i. `scaled`: each pair's loss is multiplied by its strength, normalised so a prompt's pairs have mean "
            "weight 1 (far pairs count more, the prompt's total weight is unchanged); `margin`: "
            "`-log sigmoid(r_i - r_j - strength_scale x (j - i))`; `none`: every pair alike. Adds to the score-gap "
            "`margin_scale`; applies to the `pairwise`, `joint` and `disentangled` (its sum of heads) losses."
        },
    )
    strength_scale: float = field(
        default=1.0,
        metadata={
            "help": "Reward units per rank of distance in the `pair_strength: margin` margin (unused by `scaled` and "
            "`none`).",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    joint_absolute_weight: float = field(
        default=1.0,
        metadata={
            "help": "`loss: joint`: weight of the absolute loss (output 1) beside the ranking loss (output 0, weight "
            "1).",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    joint_preference_weight: float = field(
        default=0.5,
        metadata={
            "help": "`loss: joint`: the reward a joint RM gives is `w x z(head 0) + (1 - w) x z(head 1)`, each head "
            "z-scored with its own statistics on the validation replies saved at training (`reward_stats.json`: "
            "`heads`). 1: the preference head alone; 0: the absolute head alone. Fixed at training and saved in "
            "`rm_format.json` (`joint_preference_weight`): edit it there to score with another weight (the saved "
            "statistics of the reward are then derived for it). Validation metrics are given for the combined reward "
            "and per head (`preference_head_*`, `absolute_head_*`).",
            "rule": Rule(UNIT, "in [0, 1] (the preference head's share; the absolute head gets 1 - w)"),
        },
    )
    disentangled_length_weight: float = field(
        default=1.0,
        metadata={
            "help": "`loss: disentangled`: weight of the length term, `-Pearson(length head, reply length)` over each "
            "batch's replies: it rewards a length head that follows the length in characters.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    disentangled_quality_weight: float = field(
        default=1.0,
        metadata={
            "help": "`loss: disentangled`: weight of the decorrelation term, `|cov(quality head, z(reply length))|` "
            "over each batch's replies (length z-scored over the batch: the absolute Pearson correlation times the "
            "head's spread): it penalises a quality head that follows length either way. A covariance rather than the "
            "correlation itself, whose gradient would also inflate whatever else the head carries.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    disentangled_orthogonality_weight: float = field(
        default=1.0,
        metadata={
            "help": "`loss: disentangled`: weight of the orthogonality term, `|w_q . w_l|`, the dot product of the two "
            "heads' weight vectors: it keeps the heads reading different directions of the shared representation.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    abs_loss: Literal["bce", "mse"] = field(
        default="bce",
        metadata={"help": "Absolute loss: `bce` (BCE on soft labels, the reference study's best) or `mse`."},
    )
    init_bias_to_mean: bool = field(
        default=True,
        metadata={
            "help": "Start the head's bias at logit(mean training score), so sigmoid(bias) = mean. From 0 the output "
            "takes ~1/lr steps to reach the typical score, and until then training fits the level of the scores rather "
            "than their order. Heads without a bias (e.g. Llama's) are left as they are. `joint`: output 1's bias (the "
            "absolute head). Never applied with `init_from`."
        },
    )
    threshold: float = field(
        default=0.4,
        metadata={
            "help": "Scores <= threshold are the under-represented low-score bucket.",
            "rule": Rule(UNIT, "in [0, 1]"),
        },
    )
    loss_weight_strength: float = field(
        default=0.0,
        metadata={
            "help": "> 0 turns on low-score weighting: rows in that bucket get weight `strength x N / N_below`, the "
            "others 1.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    undersample: bool = field(
        default=False, metadata={"help": "Stratified under-sampling of over-represented score bins."}
    )
    undersample_bins: int = field(
        default=5,
        metadata={"help": "Number of score bins for under-sampling.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    undersample_max_ratio: float = field(
        default=2.0,
        metadata={
            "help": "Under-sampling: a bin keeps at most ratio x the smallest bin's rows.",
            "rule": Rule(at_least(1), "a finite number >= 1"),
        },
    )
