"""The evaluation sections: ``eval_pred`` (prediction generation) and ``eval_rewarding`` (scoring and comparison)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from crs.config.fields import PROBABILITY, Rule, above, at_least, finite, or_null
from crs.config.length_keys import length_calibration_field, length_tokenizer_field, length_unit_field


@dataclass
class EvalModelConfig:
    """A model to generate eval predictions with: a name for the tables and a path."""

    name: str = field(default="", metadata={"help": "The model's name in file names and tables."})
    path: str = field(
        default="",
        metadata={"help": "Anything `model.name` takes: an embedded name, a crs run, a local dir or a hub id."},
    )


@dataclass
class EvalPredConfig:
    """Prediction generation (``rl_eval_pred.py``)."""

    models: list[EvalModelConfig] = field(
        default_factory=list, metadata={"help": "The models that answer the eval prompts, one predictions file each."}
    )
    do_sample: bool = field(default=False, metadata={"help": "false: greedy decoding; true: sampling."})
    num_runs: int = field(
        default=1,
        metadata={
            "help": "Sampling runs per prompt (the reference study: 3 runs, `top_p` 0.9, temperature 0.8).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    temperature: float = field(
        default=0.8,
        metadata={
            "help": "Sampling temperature.",
            "rule": Rule(above(0), "a finite number > 0 (for greedy decoding set eval_pred.do_sample: false)"),
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling threshold (1 = off).", "rule": Rule(PROBABILITY, "in (0, 1]")},
    )
    top_k: int = field(
        default=0,
        metadata={
            "help": "Sample among the k most likely tokens (0 = the whole vocabulary).",
            "rule": Rule(at_least(0), "an integer >= 0"),
        },
    )
    max_new_tokens: int = field(
        default=128,
        metadata={"help": "Reply budget.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    batch_size: int = field(
        default=16,
        metadata={"help": "Prompts per generation batch.", "rule": Rule(at_least(1), "an integer >= 1")},
    )


@dataclass
class EvalRewardSourceConfig:
    """A reward source that scores every prediction (z-scored with its saved statistics)."""

    name: str = field(default="reward", metadata={"help": "The scorer's name in tables, and in `combined[].weights`."})
    path: str = field(
        default="",
        metadata={
            "help": "Anything `rl.rewards[].path` takes: a reward-model run, `gold`, `length`, "
            "`python:module:function`."
        },
    )
    length_unit: Literal["characters", "tokens"] = length_unit_field()
    length_tokenizer: str | None = length_tokenizer_field()
    length_calibration: str = length_calibration_field()


def _combined_weights_ok(weights: dict[str, float], config: Any) -> bool:
    """Finite weights, not all 0, each naming a source of ``eval_rewarding.rewards`` (the whole config)."""
    sources = {r.name for r in config.eval_rewarding.rewards}
    return all(math.isfinite(w) for w in weights.values()) and any(weights.values()) and set(weights) <= sources


@dataclass
class CombinedScorerConfig:
    """A combined scorer: the very formula PPO optimises (:class:`crs.rl.combined_reward.CombinedReward`)."""

    name: str = field(default="combined", metadata={"help": "The scorer's name in tables."})
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Weight per `eval_rewarding.rewards` name, applied to its z-scored score (negative: subtracted, "
            "e.g. `{preference_rm: 1, length: -0.25}`).",
            "rule": Rule(
                _combined_weights_ok,
                "finite weights, at least one non-zero, each naming a source of eval_rewarding.rewards",
            ),
        },
    )
    reward_clip: float | None = field(
        default=None,
        metadata={
            "help": "As `rl.reward_clip`: clip the weighted sum; null: no clip.",
            "rule": Rule(or_null(above(0)), "a finite number > 0, or null (no clipping)"),
        },
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "As `rl.missing_eos_penalty`: added when a reply did not end with EOS; null: none.",
            "rule": Rule(or_null(finite), "a finite number, or null"),
        },
    )


@dataclass
class EvalRewardingConfig:
    """Scoring and comparison of predictions (``rl_eval_rewarding.py``)."""

    predictions_dir: str = field(default="", metadata={"help": "An `rl_eval_pred.py` run directory."})
    rewards: list[EvalRewardSourceConfig] = field(
        default_factory=list,
        metadata={
            "help": "The reward sources that score every prediction, each on the z-scale of its saved statistics "
            "(pooled over the predictions when it has none)."
        },
    )
    combined: list[CombinedScorerConfig] = field(
        default_factory=list,
        metadata={
            "help": "Named combinations of `rewards`, e.g. "
            "`{name: crs_0.25, weights: {preference_rm: 0.25, absolute_rm: 0.75}}`, computed with PPO's own formula "
            "(z-score, weights, clip, EOS penalty)."
        },
    )
    score_with_training_reward: bool = field(
        default=True,
        metadata={
            "help": "Also score every model with the training reward of each RL run being evaluated (its `rl.rewards`, "
            "clip and EOS penalty, read from its run directory): scorers `reward of <model>`."
        },
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "`auto` (`gold` when every prompt is the demo dataset's, else `none`), `gold` (the demo "
            "annotator's noise-free utility; refused on other prompts, see `run.allow_gold_outside_demo`), `none` "
            "(then the first reward source is the reference scorer), or a file or glob of an external judge's pairwise "
            "verdicts: AlpacaEval annotations (`.json`) or a CSV `prompt_id,model_a,model_b,preference` (`.csv`); "
            "formats in docs/evaluation.md.",
            "rule": Rule(
                lambda v, c: v in ("auto", "gold", "none") or v.lower().endswith((".json", ".csv")),
                "auto, gold, none, or a path or glob of AlpacaEval annotations (.json) or a verdict CSV (.csv)",
            ),
        },
    )
    reference_model: str | None = field(
        default=None,
        metadata={
            "help": "The leaderboard's baseline (AlpacaEval's reference); null: the first model. A name without "
            "predictions stops the run."
        },
    )
    allow_missing_models: bool = field(
        default=False,
        metadata={
            "help": "false: a model listed in the prediction run's `eval_pred.models` without a predictions file stops "
            "the run, naming it; true: score the models that have one (with a warning)."
        },
    )
    human_rankings: str | None = field(
        default=None,
        metadata={
            "help": "Optional file of rankings by people: `{prompt_id: [[model, ...] best first, ...]}` (`.json`; a "
            "list inside a ballot is a tie), or an annotation tool's ballots, one per prompt and annotator with a rank "
            "per response slot, the slot -> model map and a group (`.jsonl` or `.csv`; docs/evaluation.md). Checked "
            "before any scoring."
        },
    )
    tie_break: Literal["support", "candidate_order"] = field(
        default="support",
        metadata={
            "help": "How Tideman's ranked pairs settles ties: `support` (a pair with margin 0 stays unlocked; unbeaten "
            "models go by total pairwise support, then name) or `candidate_order` (a margin-0 pair is locked for the "
            "model listed first in `eval_pred.models`; ties go by that order). Worked example in docs/evaluation.md."
        },
    )
    group_by: Literal["auto", "category", "dataset"] = field(
        default="auto",
        metadata={
            "help": "What the per-category tables (agreement, win rate vs the reference) group prompts by: the "
            "predictions' `category` or `dataset`; `auto`: category where the predictions carry one, else dataset."
        },
    )
    n_boot: int = field(
        default=1000,
        metadata={"help": "Bootstrap resamples for the 95% intervals.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    batch_size: int = field(
        default=32,
        metadata={"help": "Replies per reward-model batch.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
