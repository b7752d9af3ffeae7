"""The configuration: typed sections, YAML subsets, CLI overrides, validation.

``config.yaml`` holds a ``default`` block and named subsets (``sft``, ``rm_preference``,
``rl_crs``, ...). A subset is deep-merged over ``default``, then ``--set key.sub=value``
overrides are applied, then the result is checked against the dataclasses below, which
are the single list of every key, its type and its default (as Hugging Face splits a
*Config* from the *Trainer* that consumes it), and its values against the ranges in
:data:`VALUE_RULES`. A key repeated in a YAML mapping is an error, not "the last wins".
Each field's help text is its ``metadata["help"]``, as in TRL's config dataclasses;
``scripts/render_config_docs.py`` renders the sections, their fields and that help into
``docs/config.md``.

Errors in a config are :class:`ConfigError`; the stage scripts print them as one line
and exit with code 2.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from crs.io import write_text_atomic

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.yaml"


class ConfigError(ValueError):
    """A problem in the user's configuration; the message says what to change."""


# --------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    """Naming, output location, seeding and logging of one stage run."""

    name: str = field(
        default="run",
        metadata={"help": "Run directory name: the run writes to `<run.output_dir>/<run.name><--name_suffix>`. Each subset sets its own."},
    )
    output_dir: str = field(default="outputs", metadata={"help": "Where run directories go."})
    seed: int = field(default=42, metadata={"help": "Seeds python, numpy and torch (and the seeded data splits and samples)."})
    report_to: Literal["none", "tensorboard", "wandb"] = field(
        default="none", metadata={"help": "Where training metrics are also sent: `none`, `tensorboard` or `wandb` (needs that package)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimiser steps (PPO: every N PPO steps)."})
    allow_gold_outside_demo: bool = field(
        default=False,
        metadata={
            "help": "The gold judge and the simulated annotator are the demo dataset's rule set: on other prompts crs refuses "
            "them (their numbers would mean nothing) unless this is true."
        },
    )
    allow_untested_versions: bool = field(
        default=False,
        metadata={
            "help": "A TRL outside the range crs was tested with (pyproject.toml) stops the GRPO, RLOO and DPO stages, which "
            "override private TRL methods; true: try it anyway, with a warning. Other packages out of range only warn."
        },
    )
    keep_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "On a CPU-only Linux machine, glibc keeps freed memory for the next step's tensors instead of returning "
            "it to the OS: the fp32 PPO update 2.7 s instead of 3.0-3.3 s (same peak memory), the demo's SFT 1.15x faster "
            "at ~1.5x the peak memory (7.0 GB against 4.8 GB). false when memory is tight. Setting `MALLOC_MMAP_MAX_` or "
            "`MALLOC_TRIM_THRESHOLD_` yourself also leaves glibc as you set it."
        },
    )


@dataclass
class LoraConfig:
    """LoRA adapter settings (peft)."""

    enabled: bool = field(default=True, metadata={"help": "Train a LoRA adapter; false: full fine-tuning."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: Any = field(
        default="all-linear",
        metadata={"help": "`all-linear` (peft's shorthand: every linear layer except the output head), or a list of module names."},
    )
    merge: bool = field(default=False, metadata={"help": "Also save `<run>/merged`: a plain model with the adapter folded into the base."})


@dataclass
class ModelConfig:
    """Which model to load and how: name, precision, quantization, LoRA."""

    name: str = field(
        default="embedded:smollm2-135m-instruct",
        metadata={
            "help": "An embedded name (`embedded:smollm2-135m-instruct`, `embedded:minilm-l6`: no network needed), a crs run "
            "directory (its `crs_model.json` names base and adapter), a local model directory in the Hugging Face layout, or a hub id."
        },
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata={
            "help": "`auto` picks bf16 where the hardware has fast bf16 (CUDA with bf16, or a CPU with AMX / avx512_bf16) and logs "
            "what it picked, else fp32. With LoRA the frozen base is held in this precision, the trainable parameters in fp32."
        },
    )
    quantization: Literal["none", "8bit", "4bit"] = field(
        default="none",
        metadata={
            "help": "Load the base through bitsandbytes: `8bit`, or `4bit` (NF4 with double quantization: QLoRA). Needs a CUDA GPU; "
            "without one the run stops before training."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where embedded GGUF models are dequantized on first use; null: `$CRS_CACHE_DIR`, else `~/.cache/crs`."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory in training forwards."})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapter settings."})


@dataclass
class DataConfig:
    """Where examples come from and how they are turned into token ids."""

    source: str = field(
        default="embedded:crs-demo",
        metadata={
            "help": "`embedded:crs-demo` (the demo dataset), a local file (.jsonl / .json / .csv / .parquet), or `hub:<dataset id>`."
        },
    )
    adapter: Literal["auto", "canonical", "crs_demo", "instruction", "oasst1", "hh_rlhf", "shp", "ultrafeedback"] = field(
        default="auto",
        metadata={
            "help": "How rows become canonical examples: `auto` picks `crs_demo` for the embedded data and `canonical` for files; "
            "or one of the built-in adapters for public datasets."
        },
    )
    split: str = field(default="train", metadata={"help": "Hub split name; for `embedded:crs-demo` one of `sft`, `rm`, `rl`, `eval`."})
    hub_config: str | None = field(default=None, metadata={"help": "A hub dataset's configuration name, if it has several."})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "Column renames: `{canonical name: column in your file}`."})
    val_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Validation share, split by prompt (all replies of a prompt on one side), seeded; ignored when `val_source` is set."
        },
    )
    val_source: str | None = field(default=None, metadata={"help": "A separate validation source (same forms as `source`)."})
    train_source: str | None = field(
        default=None,
        metadata={
            "help": "Train on this file (canonical rows) instead of `source`, whose held-out `val_fraction` of prompts stays the "
            "validation side (the online loop's refreshed training data); null: train on `source`."
        },
    )
    val_split: str | None = field(default=None, metadata={"help": "Validation from another split of the same source."})
    max_examples: int | None = field(
        default=None, metadata={"help": "Keep the first N examples after a seeded shuffle, for quick runs; null: all."}
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "false: a bad row stops the run naming file and row; true: bad rows are skipped and counted by reason."},
    )
    languages: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "oasst1 language filter."})
    label_weights: dict[str, float] = field(
        default_factory=lambda: {"quality": 1.0},
        metadata={
            "help": "oasst1 absolute score = weighted mean of these per-message labels (a negative weight w adds abs(w) x (1 - value))."
        },
    )
    system_prompt: str | None = field(default=None, metadata={"help": "A system turn prepended to every prompt."})
    fallback_template: str = field(
        default="{role}: {content}\n",
        metadata={"help": "Prompt rendering for tokenizers without a chat template: `{role}` and `{content}` per message."},
    )
    max_length: int = field(default=512, metadata={"help": "Token budget of prompt + reply (replies keep their start)."})
    max_prompt_length: int = field(default=256, metadata={"help": "Prompts longer than this keep their last tokens."})


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


@dataclass
class RewardSourceConfig:
    """One term of the combined reward: weight * normalize(source(prompt, reply))."""

    name: str = field(default="reward", metadata={"help": "The source's name in logs and tables (distinct per list)."})
    path: str = field(
        default="",
        metadata={
            "help": "A reward-model run directory (`rm_train.py` output), `gold` (the demo's simulated annotator's noise-free "
            "utility), or `python:module:function` (a function `f(prompts, replies) -> scores`)."
        },
    )
    weight: float = field(
        default=1.0,
        metadata={"help": "The source's weight; 0 skips loading it. Weights need not sum to 1. (Evaluation scores every source alike.)"},
    )
    normalize: Literal["none", "zscore"] = field(
        default="zscore",
        metadata={
            "help": "`zscore`: (x - mean) / std with the statistics the reward model saved on its validation set "
            "(`reward_stats.json`), or, for sources without them, statistics of the first rollout batch, then frozen; `none`: raw "
            "scores. (Evaluation reports raw and z-scored values; its z-scale falls back to statistics pooled over all predictions.)"
        },
    )


@dataclass
class RLConfig:
    """The RL stage (``rl_train.py``): PPO (crs's own), GRPO / RLOO / DPO (TRL's), and the combined reward; every trick has a key."""

    algorithm: Literal["ppo", "grpo", "rloo", "dpo"] = field(
        default="ppo",
        metadata={
            "help": "The policy optimiser: `ppo` (crs's own PPO, the reference), `grpo` or `rloo` (TRL's online trainers on the same "
            "combined reward), or `dpo` (TRL's offline DPOTrainer on preference pairs from `data.*`). Details: docs/optimisers.md."
        },
    )
    policy: str | None = field(default=None, metadata={"help": "The SFT run to start from; null: `model.name`."})
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "An earlier RL run on the same `policy` whose LoRA adapter (and, with PPO, value head) this run keeps training (the "
            "online loop's next round); the reference stays `policy` (adapter off). null: a fresh adapter."
        },
    )
    rewards: list[RewardSourceConfig] = field(
        default_factory=list, metadata={"help": "The reward sources whose weighted, normalised scores are summed into the combined reward."}
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "Clip the combined score to [-c, c] (the reference study: 4); null: no clipping."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Added to the score when a reply ends without EOS (common: -1); null: none."}
    )
    steps: int = field(
        default=100,
        metadata={"help": "Iterations: PPO, GRPO, RLOO: one batch of sampled replies each (GRPO, RLOO: one optimiser step); DPO: optimiser steps."},
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Per step, over all processes: PPO: prompts, one reply each; GRPO, RLOO: sampled replies (`batch_size / group_size` "
            "prompts); DPO: preference pairs. Equal `steps x batch_size` is an equal budget of sampled replies."
        },
    )
    mini_batch_size: int = field(default=8, metadata={"help": "PPO: rollouts per optimiser step, over all processes."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimiser step (PPO: per mini-batch); must divide the batch among the processes."}
    )
    ppo_epochs: int = field(default=4, metadata={"help": "PPO: passes over each rollout batch (GRPO, RLOO: one pass, TRL's `num_iterations` 1)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_new_tokens: int = field(default=64, metadata={"help": "Reply budget when sampling rollouts."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (0 = the whole vocabulary)."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio (GRPO, RLOO: TRL's `epsilon`)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value update."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the clipped value loss."})
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "Beta of the KL penalty to the SFT policy. PPO and RLOO: `-kl_coef * sum_t (log pi - log pi_ref)` in the reward; "
            "GRPO: TRL's `beta`, `kl_coef` x the per-token k3 estimate added to the loss. GRPO, RLOO with 0: no reference forward, no `kl/sequence`."
        },
    )
    adaptive_kl: bool = field(default=False, metadata={"help": "PPO: adapt beta toward `target_kl`."})
    target_kl: float = field(default=6.0, metadata={"help": "Adaptive KL target, nats per reply."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL horizon."})
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Whiten advantages (PPO; RLOO: TRL's `normalize_advantages`, over the batch)."}
    )
    early_stop_kl: float | None = field(
        default=None, metadata={"help": "Stop a step's PPO epochs when approximate KL exceeds it; null: never."}
    )
    value_model: str = field(
        default="head",
        metadata={"help": "`head` (a scalar head on the policy's last hidden state), or a reward-model run as a separate critic."},
    )
    max_nonfinite_in_row: int = field(
        default=3,
        metadata={"help": "A non-finite loss or reward skips the update with a warning; this many in a row stops the run."},
    )
    save_steps: int = field(default=25, metadata={"help": "Checkpoint every N steps, in `<run>/checkpoints/step_N`."})
    sample_every: int = field(
        default=25, metadata={"help": "Greedy samples on held-out prompts every N steps, in `<run>/samples/step_N.json` (0: never)."}
    )
    num_sample_prompts: int = field(default=4, metadata={"help": "Held-out prompts per sample."})
    eval_prompts: int = field(
        default=32,
        metadata={
            "help": "Held-out prompts (the validation split) answered every `sample_every` steps and at step 0 for the "
            "over-optimisation log `<run>/overoptimization.jsonl`: every reward source, the combined reward, the judge and "
            "the KL to the reference; 0: off."
        },
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge of the over-optimisation log, never optimised: `auto` (`gold` on the demo data, else none), "
            "`none`, or a reward source path (`gold`, `python:module:function`, a reward-model run)."
        },
    )
    logprobs_from_sampling: bool = field(
        default=False,
        metadata={
            "help": "Reuse sampling's log-probs and values as the rollout's (saves a forward; exact in fp32, ~0.04 nats/token off in bf16)."
        },
    )
    old_logprobs_from_update: bool = field(
        default=True,
        metadata={
            "help": "When a rollout batch is one mini-batch of one micro-batch, take the old log-probs and values from the first "
            "update forward (same weights as sampling, so exact) instead of a forward of their own."
        },
    )
    adam_eps: float = field(default=1e-5, metadata={"help": "Adam epsilon: the reference PPO code's (PyTorch's default is 1e-8)."})
    anneal_lr: bool = field(default=False, metadata={"help": "Decay the learning rate linearly to 0 over `rl.steps` (every algorithm)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last N checkpoints (0: all)."})
    group_size: int = field(
        default=4,
        metadata={
            "help": "GRPO, RLOO: replies sampled per prompt (TRL's `num_generations`), the group whose mean (GRPO) or leave-one-out "
            "mean (RLOO) is the baseline; must divide `batch_size`."
        },
    )
    reward_normalization: Literal["crs", "trl"] = field(
        default="crs",
        metadata={
            "help": "GRPO, RLOO: how sources are put on one scale. `crs`: the combined reward exactly as PPO's (each source z-scored "
            "with its saved statistics, weighted, summed, clipped, EOS penalty) is TRL's one reward function. `trl` (GRPO only): "
            "each source is its own reward function, weighted by TRL's `reward_weights` after TRL normalises it within each group "
            "(`multi_objective_aggregation: normalize_then_sum`); no clip; the EOS penalty is one more reward function."
        },
    )
    grpo_scale_rewards: Literal["group", "batch", "none"] = field(
        default="group",
        metadata={
            "help": "GRPO: divide the advantage (reward minus its group mean) by the reward's std in the group (`group`, the GRPO "
            "paper), in the batch (`batch`) or not at all (`none`, Dr. GRPO). TRL's `scale_rewards`."
        },
    )
    dpo_beta: float = field(
        default=0.1, metadata={"help": "DPO: beta of the loss `-log sigmoid(beta x (chosen log-ratio - rejected log-ratio))` (TRL's `beta`)."}
    )
    dpo_signal: Literal["ranking", "absolute"] = field(
        default="ranking",
        metadata={
            "help": "DPO: where pairs come from: `ranking` (data kind `ranking`, replies best first) or `absolute` (data kind "
            "`absolute`: of two replies to one prompt, the higher score wins)."
        },
    )
    dpo_pairs: Literal["best_vs_rest", "all_pairs"] = field(
        default="best_vs_rest",
        metadata={
            "help": "DPO: which pairs of a prompt's replies: `best_vs_rest` (the best against each other one: K-1 pairs) or "
            "`all_pairs` (every ordered pair: K(K-1)/2). Tied replies never make a pair."
        },
    )
    dpo_min_gap: float = field(
        default=0.25,
        metadata={"help": "DPO with `dpo_signal: absolute`: a pair needs a score gap of at least this (scores in [0, 1]; the demo's Likert steps are 0.25)."},
    )

    merged_sampling: bool = field(
        default=True, metadata={"help": "Sample from a copy with the LoRA adapter folded in (faster; one more copy of the weights)."}
    )
    packed_sampling: bool = field(
        default=True,
        metadata={
            "help": "On CPU, that copy's weights are pre-packed for oneDNN and repacked each step: small-batch "
            "matmuls ~2x faster, one more copy of the weights."
        },
    )
    fused_sampling: bool = field(
        default=True,
        metadata={
            "help": "On CPU, a Llama-family copy samples with crs's lean decode-only forward (crs/models/fused_decoder.py: fused q|k|v and "
            "gate|up matmuls, a preallocated KV cache) instead of transformers' (other architectures always use transformers')."
        },
    )


@dataclass
class EvalModelConfig:
    """A model to generate eval predictions with: a name for the tables and a path."""

    name: str = field(default="", metadata={"help": "The model's name in file names and tables."})
    path: str = field(default="", metadata={"help": "Anything `model.name` takes: an embedded name, a crs run, a local dir or a hub id."})


@dataclass
class EvalPredConfig:
    """Prediction generation (``rl_eval_pred.py``)."""

    models: list[EvalModelConfig] = field(
        default_factory=list, metadata={"help": "The models that answer the eval prompts, one predictions file each."}
    )
    do_sample: bool = field(default=False, metadata={"help": "false: greedy decoding; true: sampling."})
    num_runs: int = field(
        default=1, metadata={"help": "Sampling runs per prompt (the reference study: 3 runs, `top_p` 0.9, temperature 0.8)."}
    )
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (0 = the whole vocabulary)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Reply budget."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})


@dataclass
class EvalRewardSourceConfig:
    """A reward source that scores every prediction (z-scored with its saved statistics)."""

    name: str = field(default="reward", metadata={"help": "The scorer's name in tables, and in `combined[].weights`."})
    path: str = field(default="", metadata={"help": "Anything `rl.rewards[].path` takes: a reward-model run, `gold`, `python:module:function`."})


@dataclass
class CombinedScorerConfig:
    """A combined scorer: the very formula PPO optimises (:class:`crs.rl.rewards.CombinedReward`)."""

    name: str = field(default="combined", metadata={"help": "The scorer's name in tables."})
    weights: dict[str, float] = field(
        default_factory=dict, metadata={"help": "Weight per `eval_rewarding.rewards` name, applied to its z-scored score."}
    )
    reward_clip: float | None = field(default=None, metadata={"help": "As `rl.reward_clip`: clip the weighted sum; null: no clip."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "As `rl.missing_eos_penalty`: added when a reply did not end with EOS; null: none."}
    )


@dataclass
class EvalRewardingConfig:
    """Scoring and comparison of predictions (``rl_eval_rewarding.py``)."""

    predictions_dir: str = field(default="", metadata={"help": "An `rl_eval_pred.py` run directory."})
    rewards: list[EvalRewardSourceConfig] = field(
        default_factory=list,
        metadata={
            "help": "The reward sources that score every prediction, each on the z-scale of its saved statistics (pooled over "
            "the predictions when it has none)."
        },
    )
    combined: list[CombinedScorerConfig] = field(
        default_factory=list,
        metadata={
            "help": "Named combinations of `rewards`, e.g. `{name: crs_0.25, weights: {preference_rm: 0.25, absolute_rm: 0.75}}`, "
            "computed with PPO's own formula (z-score, weights, clip, EOS penalty)."
        },
    )
    score_with_training_reward: bool = field(
        default=True,
        metadata={
            "help": "Also score every model with the training reward of each RL run being evaluated (its `rl.rewards`, clip and "
            "EOS penalty, read from its run directory): scorers `reward of <model>`."
        },
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "`auto` (`gold` when every prompt is the demo dataset's, else `none`), `gold` (the demo annotator's "
            "noise-free utility; refused on other prompts, see `run.allow_gold_outside_demo`), `none` (then the first reward "
            "source is the reference scorer), or a file or glob of an external judge's pairwise verdicts: AlpacaEval annotations (`.json`) or a CSV "
            "`prompt_id,model_a,model_b,preference` (`.csv`); formats in docs/evaluation.md."
        },
    )
    reference_model: str | None = field(
        default=None,
        metadata={
            "help": "The leaderboard's baseline (AlpacaEval's reference); null: the first model. A name without predictions "
            "stops the run."
        },
    )
    allow_missing_models: bool = field(
        default=False,
        metadata={
            "help": "false: a model listed in the prediction run's `eval_pred.models` without a predictions file stops the run, "
            "naming it; true: score the models that have one (with a warning)."
        },
    )
    human_rankings: str | None = field(
        default=None,
        metadata={
            "help": "Optional file of rankings by people: `{prompt_id: [[model, ...] best first, ...]}` (`.json`; a list inside a "
            "ballot is a tie), or an annotation tool's ballots, one per prompt and annotator with a rank per response slot, "
            "the slot -> model map and a group (`.jsonl` or `.csv`; docs/evaluation.md). Checked before any scoring."
        },
    )
    tie_break: Literal["support", "candidate_order"] = field(
        default="support",
        metadata={
            "help": "How Tideman's ranked pairs settles ties: `support` (a pair with margin 0 stays unlocked; unbeaten models "
            "go by total pairwise support, then name) or `candidate_order` (a margin-0 pair is locked for the model listed "
            "first in `eval_pred.models`; ties go by that order). Worked example in docs/evaluation.md."
        },
    )
    group_by: Literal["auto", "category", "dataset"] = field(
        default="auto",
        metadata={
            "help": "What the per-category tables (agreement, win rate vs the reference) group prompts by: the predictions' "
            "`category` or `dataset`; `auto`: category where the predictions carry one, else dataset."
        },
    )
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals."})
    batch_size: int = field(default=32, metadata={"help": "Replies per reward-model batch."})


@dataclass
class SweepConfig:
    """A study over reward weights and seeds (``crs sweep``): RL, predictions and scoring per run."""

    base_subset: str = field(default="rl_crs", metadata={"help": "The RL subset every run of the sweep starts from."})
    preference_source: str = field(default="preference", metadata={"help": "The base subset's `rl.rewards` name that gets weight w."})
    absolute_source: str = field(default="absolute", metadata={"help": "The base subset's `rl.rewards` name that gets weight 1 - w."})
    weights: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0],
        metadata={"help": "Preference weights w (the reference study's grid and both ends)."},
    )
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Training seeds (`run.seed`) per weight."})
    jobs: int = field(default=1, metadata={"help": "RL runs side by side, each with its share of the CPU cores."})
    eval_subset: str = field(default="eval_pred", metadata={"help": "The subset whose data and `eval_pred` settings make the predictions."})
    reference: EvalModelConfig = field(
        default_factory=lambda: EvalModelConfig(name="sft", path="outputs/sft"),
        metadata={"help": "The model every run is compared with (win rates against it)."},
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge: a reward source path (`gold`, `python:module:function`, an RM run), or `auto`: `gold` when every "
            "eval prompt is the demo dataset's, else the first of `sweep.rewards`."
        },
    )
    rewards: list[EvalRewardSourceConfig] = field(
        default_factory=list, metadata={"help": "Reward models that judge the runs too (the same curve under each)."}
    )
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap rounds (seeds, then prompts) for the 95% intervals."})


@dataclass
class OnlineConfig:
    """Iterated online RLHF (``crs online``): sample, label, refresh both reward models, continue RL; round by round."""

    base_subset: str = field(default="rl_crs", metadata={"help": "The RL subset of every round (algorithm, rewards, sampling)."})
    preference_rm_subset: str = field(default="rm_preference", metadata={"help": "The subset that trained the preference reward model."})
    absolute_rm_subset: str = field(default="rm_absolute", metadata={"help": "The subset that trained the absolute-score reward model."})
    preference_source: str = field(default="preference", metadata={"help": "The base subset's `rl.rewards` name of the preference RM."})
    absolute_source: str = field(default="absolute", metadata={"help": "The base subset's `rl.rewards` name of the absolute RM."})
    rounds: int = field(default=3, metadata={"help": "Rounds in all; round 0 is an ordinary RL run on the original reward models."})
    rl_steps: int = field(default=12, metadata={"help": "RL steps (`rl.steps`) per round."})
    prompts_per_round: int = field(default=32, metadata={"help": "M: fresh prompts (never labelled before) whose replies are labelled each round."})
    replies_per_prompt: int = field(default=4, metadata={"help": "K: replies sampled per prompt from the current policy, ranked and scored."})
    probe_prompts: int = field(
        default=16,
        metadata={"help": "Further fresh prompts per round, answered K times and judged only: the reward models' accuracy on the policy's replies."},
    )
    labeller: Literal["simulated", "file"] = field(
        default="simulated",
        metadata={
            "help": "`simulated`: crs's annotator (rankings with its noise, 1-5 scores from its rater panel); `file`: crs writes "
            "`round_N/to_label.jsonl` and reads `round_N/labels/rankings.jsonl` and `scores.jsonl` that you provide."
        },
    )
    ranking_noise: float = field(default=0.05, metadata={"help": "The simulated annotator's ranking noise (the demo data's)."})
    label_wait_minutes: float = field(
        default=0.0, metadata={"help": "`file` labeller: wait this long for the label files (polling); 0: stop and say what to write."}
    )
    rm_epochs: float = field(default=2.0, metadata={"help": "Epochs of each reward model's continued training per round, over new + replayed labels."})
    replay_ratio: float = field(
        default=1.0,
        metadata={"help": "Earlier labelled examples replayed per new one (seeded draw from the original training data and earlier rounds); 0: none."},
    )
    baseline: bool = field(
        default=True,
        metadata={
            "help": "Also run the fair baseline: the same number of labels, from the original distribution, given to the round-0 reward "
            "models up front, then one RL run from the start for the loop's total steps."
        },
    )
    baseline_split: str = field(default="sft", metadata={"help": "The data split whose labelled replies the baseline spends (never seen by the RMs)."})
    eval_subset: str = field(default="eval_pred", metadata={"help": "The subset whose data and `eval_pred` settings make the predictions."})
    reference: EvalModelConfig = field(
        default_factory=lambda: EvalModelConfig(name="sft", path="outputs/sft"),
        metadata={"help": "The model every round is compared with (win rates against it)."},
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge of win rates and RM accuracy: a reward source path (`gold`, `python:module:function`, an RM run), "
            "or `auto`: `gold` when every prompt is the demo dataset's (else name one)."
        },
    )
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap rounds for the 95% intervals."})


@dataclass
class CRSConfig:
    """The whole resolved configuration of one stage run."""

    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Naming, output location, seeding and logging."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model a stage trains or loads."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The stage's data source and token budgets."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimiser and schedule of SFT and reward-model training."})
    rm: RewardModelConfig = field(default_factory=RewardModelConfig, metadata={"help": "Reward-model losses."})
    rl: RLConfig = field(default_factory=RLConfig, metadata={"help": "The RL stage (PPO, GRPO, RLOO, DPO) and the combined reward."})
    eval_pred: EvalPredConfig = field(default_factory=EvalPredConfig, metadata={"help": "Prediction generation."})
    eval_rewarding: EvalRewardingConfig = field(default_factory=EvalRewardingConfig, metadata={"help": "Scoring and comparison."})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "Sweeps over reward weights and seeds."})
    online: OnlineConfig = field(default_factory=OnlineConfig, metadata={"help": "Iterated online RLHF: rounds of labelling and training."})
    subset: str = field(default="", metadata={"help": "Filled in by `load_config` from `--config_subset`; not set in YAML."})
    name_suffix: str = field(default="", metadata={"help": "Filled in by `load_config` from `--name_suffix`; not set in YAML."})
    config_path: str = field(default="", metadata={"help": "Filled in by `load_config`: the YAML file read; not set in YAML."})

    @property
    def run_name(self) -> str:
        """The run's name: ``run.name`` plus the CLI's ``--name_suffix``."""
        return f"{self.run.name}{self.name_suffix}"

    @property
    def run_dir(self) -> Path:
        """Where this run writes everything."""
        return Path(self.run.output_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.resolved.yaml`` holds)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error when that fails."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    try:
        check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("default", {}), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'default' block and named subsets")
    return data


def check_unique_keys(node: yaml.Node | None, path: str | Path) -> None:
    """Refuse a mapping that repeats a key (plain YAML keeps the last one, silently).

    Works on the composed node tree, before merge keys (``<<: *anchor``) are applied:
    a key that overrides a merged-in one is not a duplicate.
    """
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node | None, where: list[str]) -> None:
        if node is None or id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, [*where[:-1], f"{where[-1]}[{index}]"] if where else [f"[{index}]"])
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    walk(value_node, where)
                    continue
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
                line = key_node.start_mark.line + 1
                if (key_node.tag, key) in first:
                    what = f"subset {key!r}" if not where else f"key {'.'.join([*where, key])!r}"
                    raise ConfigError(
                        f"{path}, line {line}: duplicate {what} (first at line {first[key_node.tag, key]}); "
                        "YAML would keep only the last one: rename or merge them"
                    )
                first[key_node.tag, key] = line
                walk(value_node, [*where, key])

    walk(node, [])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` key by key; lists are replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"rl.kl_coef=0.1"`` -> (["rl", "kl_coef"], 0.1); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[p0][p1]... = value`` in place, creating intermediate dicts."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(
    subset: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    name_suffix: str = "",
) -> CRSConfig:
    """Resolve ``default`` + ``subset`` + ``--set`` overrides into a validated CRSConfig."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    raw = read_yaml(path)
    subsets = sorted(k for k in raw if k != "default")
    if subset == "default" or subset not in raw:
        raise ConfigError(
            f"unknown config subset {subset!r} in {path}; valid subsets: {', '.join(subsets)}"
        )
    subset_block = raw[subset] or {}
    if not isinstance(subset_block, dict):
        raise ConfigError(f"{path}: subset {subset!r} must be a mapping")
    merged = deep_merge(raw.get("default") or {}, subset_block)
    for text in overrides or []:
        parts, value = parse_override(text)
        apply_override(merged, parts, value)
    config = build_dataclass(CRSConfig, merged, "")
    config.subset = subset
    config.name_suffix = name_suffix
    config.config_path = str(path)
    validate_values(config)
    return config


def save_resolved_config(config: CRSConfig, path: str | Path) -> None:
    """Write the fully resolved config (reload it with ``--config PATH --config_subset <subset>``)."""
    data = config.to_dict()
    subset = data.pop("subset")
    data.pop("name_suffix")
    data.pop("config_path")
    text = yaml.safe_dump({"default": {}, subset: data}, sort_keys=False)
    write_text_atomic(path, text)


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (lightly coerced)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue  # try the next member; the message below names them all
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads 5e-5 as a string; accept numeric strings for float keys.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")  # a bug in this module


def build_dataclass(cls: type, data: dict[str, Any], path: str) -> Any:
    """Build ``cls`` from ``data``, naming unknown keys (with the closest valid one) and bad types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key_path}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key_path)
    return cls(**kwargs)


# --------------------------------------------------------------------------- values


Predicate = Callable[[Any, "CRSConfig"], bool]


def _at_least(low: float) -> Predicate:
    return lambda v, c: math.isfinite(v) and v >= low


def _above(low: float) -> Predicate:
    return lambda v, c: math.isfinite(v) and v > low


def _within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Predicate:
    def ok(v: Any, c: CRSConfig) -> bool:
        return math.isfinite(v) and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return ok


def _or_null(pred: Predicate) -> Predicate:
    return lambda v, c: v is None or pred(v, c)


def _finite(v: Any, c: CRSConfig) -> bool:
    return math.isfinite(v)


_UNIT = _within(0, 1)
_FRACTION = _within(0, 1, open_high=True)
_PROBABILITY = _within(0, 1, open_low=True)

# Every value that type checks alone let through, with the range it must lie in:
# (key path, predicate(value, config), valid range). ``[*]`` stands for every list item.
# Checked by :func:`validate_values` once the config is built, before any run starts.
VALUE_RULES: list[tuple[str, Predicate, str]] = [
    ("run.logging_steps", _at_least(1), "an integer >= 1"),
    ("model.lora.r", _at_least(1), "an integer >= 1"),
    ("model.lora.alpha", _at_least(1), "an integer >= 1"),
    ("model.lora.dropout", _FRACTION, "in [0, 1)"),
    ("data.val_fraction", _FRACTION, "in [0, 1)"),
    ("data.max_examples", _or_null(_at_least(1)), "an integer >= 1, or null (all)"),
    ("data.max_prompt_length", _at_least(1), "an integer >= 1"),
    ("data.max_length", lambda v, c: v > c.data.max_prompt_length, "above data.max_prompt_length (room for a reply)"),
    ("data.label_weights", lambda v, c: all(math.isfinite(w) for w in v.values()), "finite numbers"),
    ("train.learning_rate", _at_least(0), "a finite number >= 0"),
    ("train.num_epochs", lambda v, c: c.train.max_steps > 0 or _above(0)(v, c), "> 0 (or set train.max_steps > 0)"),
    ("train.batch_size", _at_least(1), "an integer >= 1"),
    ("train.eval_batch_size", _at_least(1), "an integer >= 1"),
    ("train.gradient_accumulation_steps", _at_least(1), "an integer >= 1"),
    ("train.warmup_ratio", _FRACTION, "in [0, 1)"),
    ("train.weight_decay", _at_least(0), "a finite number >= 0"),
    ("train.max_grad_norm", _at_least(0), "a finite number >= 0 (0: no clipping)"),
    ("train.eval_steps", _at_least(0), "an integer >= 0 (0: no validation during training)"),
    ("train.save_steps", _at_least(1), "an integer >= 1"),
    ("train.save_total_limit", _at_least(0), "an integer >= 0 (0: keep all)"),
    ("rm.max_replies", _at_least(2), "an integer >= 2"),
    ("rm.l2_coef", _at_least(0), "a finite number >= 0"),
    ("rm.margin_scale", _at_least(0), "a finite number >= 0"),
    ("rm.threshold", _UNIT, "in [0, 1]"),
    ("rm.loss_weight_strength", _at_least(0), "a finite number >= 0"),
    ("rm.undersample_bins", _at_least(1), "an integer >= 1"),
    ("rm.undersample_max_ratio", _at_least(1), "a finite number >= 1"),
    ("rl.rewards[*].weight", _at_least(0), "a finite number >= 0 (0: the source is not loaded)"),
    ("rl.reward_clip", _or_null(_above(0)), "a finite number > 0, or null (no clipping)"),
    ("rl.missing_eos_penalty", _or_null(_finite), "a finite number, or null"),
    ("rl.steps", _at_least(1), "an integer >= 1"),
    ("rl.batch_size", _at_least(1), "an integer >= 1"),
    ("rl.mini_batch_size", lambda v, c: c.rl.algorithm != "ppo" or (v >= 1 and c.rl.batch_size % v == 0),
     "an integer >= 1 that divides rl.batch_size"),
    ("rl.gradient_accumulation_steps", _at_least(1), "an integer >= 1"),
    ("rl.ppo_epochs", _at_least(1), "an integer >= 1"),
    ("rl.learning_rate", _at_least(0), "a finite number >= 0"),
    ("rl.max_grad_norm", _above(0), "a finite number > 0"),
    ("rl.max_new_tokens", _at_least(1), "an integer >= 1"),
    ("rl.temperature", _above(0), "a finite number > 0"),
    ("rl.top_p", _PROBABILITY, "in (0, 1]"),
    ("rl.gamma", _UNIT, "in [0, 1]"),
    ("rl.lam", _UNIT, "in [0, 1]"),
    ("rl.cliprange", _above(0), "a finite number > 0"),
    ("rl.cliprange_value", _above(0), "a finite number > 0"),
    ("rl.vf_coef", _at_least(0), "a finite number >= 0"),
    ("rl.kl_coef", _at_least(0), "a finite number >= 0"),
    ("rl.target_kl", _above(0), "a finite number > 0"),
    ("rl.kl_horizon", _at_least(1), "an integer >= 1"),
    ("rl.early_stop_kl", _or_null(_at_least(0)), "a finite number >= 0, or null (never)"),
    ("rl.max_nonfinite_in_row", _at_least(1), "an integer >= 1"),
    ("rl.save_steps", _at_least(0), "an integer >= 0 (0: no checkpoints)"),
    ("rl.sample_every", _at_least(0), "an integer >= 0 (0: never)"),
    ("rl.num_sample_prompts", _at_least(0), "an integer >= 0"),
    ("rl.adam_eps", _above(0), "a finite number > 0"),
    ("rl.save_total_limit", _at_least(0), "an integer >= 0 (0: keep all)"),
    ("rl.group_size", lambda v, c: v >= 2 and (c.rl.algorithm not in ("grpo", "rloo") or c.rl.batch_size % v == 0),
     "an integer >= 2 that divides rl.batch_size (GRPO and RLOO sample rl.group_size replies per prompt)"),
    ("rl.reward_normalization", lambda v, c: v == "crs" or c.rl.algorithm == "grpo",
     "crs, or trl with rl.algorithm: grpo (TRL's RLOO trainer has no per-reward normalisation)"),
    ("rl.adaptive_kl", lambda v, c: not v or c.rl.algorithm == "ppo", "false unless rl.algorithm is ppo (TRL's GRPO and RLOO keep beta fixed)"),
    ("rl.dpo_beta", _above(0), "a finite number > 0"),
    ("rl.dpo_min_gap", _at_least(0), "a finite number >= 0"),
    ("eval_pred.num_runs", _at_least(1), "an integer >= 1"),
    ("eval_pred.temperature", _above(0), "a finite number > 0 (for greedy decoding set eval_pred.do_sample: false)"),
    ("eval_pred.top_p", _PROBABILITY, "in (0, 1]"),
    ("eval_pred.max_new_tokens", _at_least(1), "an integer >= 1"),
    ("eval_pred.batch_size", _at_least(1), "an integer >= 1"),
    ("eval_rewarding.combined[*].weights",
     lambda v, c: all(math.isfinite(w) and w >= 0 for w in v.values()) and any(v.values()) and set(v) <= {r.name for r in c.eval_rewarding.rewards},
     "finite weights >= 0, at least one > 0, each naming a source of eval_rewarding.rewards"),
    ("eval_rewarding.combined[*].reward_clip", _or_null(_above(0)), "a finite number > 0, or null (no clipping)"),
    ("eval_rewarding.combined[*].missing_eos_penalty", _or_null(_finite), "a finite number, or null"),
    ("eval_rewarding.judge", lambda v, c: v in ("auto", "gold", "none") or v.lower().endswith((".json", ".csv")),
     "auto, gold, none, or a path or glob of AlpacaEval annotations (.json) or a verdict CSV (.csv)"),
    ("eval_rewarding.n_boot", _at_least(1), "an integer >= 1"),
    ("sweep.weights[*]", _UNIT, "in [0, 1] (the preference source's weight; the absolute source gets 1 - w)"),
    ("sweep.jobs", _at_least(1), "an integer >= 1"),
    ("sweep.n_boot", _at_least(1), "an integer >= 1"),
    ("eval_rewarding.batch_size", _at_least(1), "an integer >= 1"),
    ("rl.init_adapter", lambda v, c: v is None or c.model.lora.enabled, "null unless model.lora.enabled (it continues a LoRA adapter)"),
    ("online.rounds", _at_least(1), "an integer >= 1 (round 0 is the first)"),
    ("online.rl_steps", _at_least(1), "an integer >= 1"),
    ("online.prompts_per_round", _at_least(1), "an integer >= 1"),
    ("online.replies_per_prompt", _at_least(2), "an integer >= 2 (a ranking needs two replies)"),
    ("online.probe_prompts", _at_least(0), "an integer >= 0"),
    ("online.ranking_noise", _at_least(0), ">= 0"),
    ("online.label_wait_minutes", _at_least(0), ">= 0"),
    ("online.rm_epochs", _above(0), "> 0"),
    ("online.replay_ratio", _at_least(0), ">= 0"),
    ("online.n_boot", _at_least(1), "an integer >= 1"),
]


def _values_at(config: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(concrete key path, value) for a rule's path; ``name[*]`` yields every item of a list."""
    nodes: list[tuple[str, Any]] = [("", config)]
    for part in path.split("."):
        name, many = (part[:-3], True) if part.endswith("[*]") else (part, False)
        step = []
        for prefix, node in nodes:
            key = f"{prefix}.{name}" if prefix else name
            value = getattr(node, name)
            step += [(f"{key}[{i}]", item) for i, item in enumerate(value)] if many else [(key, value)]
        nodes = step
    yield from nodes


def validate_values(config: CRSConfig) -> None:
    """Raise one ConfigError naming every value outside its range (see :data:`VALUE_RULES`)."""
    problems = [
        f"{key}={value!r}: must be {valid}"
        for path, ok, valid in VALUE_RULES
        for key, value in _values_at(config, path)
        if not ok(value, config)
    ]
    if problems:
        raise ConfigError("; ".join(problems))
