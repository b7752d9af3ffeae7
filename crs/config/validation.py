"""Value checks: every value that type checks alone let through, against its valid range.

Run by :func:`crs.config.loading.load_config` once the config is built, before any run
starts; every value outside its range is named in one :class:`ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from crs.config.errors import ConfigError
from crs.config.fields import FRACTION, PROBABILITY, UNIT, Predicate, above, at_least, finite, or_null
from crs.config.root import CRSConfig

# Every value that type checks alone let through, with the range it must lie in:
# (key path, predicate(value, config), valid range). ``[*]`` stands for every list item.
# Checked by :func:`validate_values` once the config is built, before any run starts.
VALUE_RULES: list[tuple[str, Predicate, str]] = [
    ("run.logging_steps", at_least(1), "an integer >= 1"),
    ("model.lora.r", at_least(1), "an integer >= 1"),
    ("model.lora.alpha", at_least(1), "an integer >= 1"),
    ("model.lora.dropout", FRACTION, "in [0, 1)"),
    ("data.val_fraction", FRACTION, "in [0, 1)"),
    ("data.max_examples", or_null(at_least(1)), "an integer >= 1, or null (all)"),
    ("data.max_prompt_length", at_least(1), "an integer >= 1"),
    ("data.max_length", lambda v, c: v > c.data.max_prompt_length, "above data.max_prompt_length (room for a reply)"),
    ("data.label_weights", lambda v, c: all(math.isfinite(w) for w in v.values()), "finite numbers"),
    ("train.learning_rate", at_least(0), "a finite number >= 0"),
    ("train.num_epochs", lambda v, c: c.train.max_steps > 0 or above(0)(v, c), "> 0 (or set train.max_steps > 0)"),
    ("train.batch_size", at_least(1), "an integer >= 1"),
    ("train.eval_batch_size", at_least(1), "an integer >= 1"),
    ("train.gradient_accumulation_steps", at_least(1), "an integer >= 1"),
    ("train.warmup_ratio", FRACTION, "in [0, 1)"),
    ("train.weight_decay", at_least(0), "a finite number >= 0"),
    ("train.max_grad_norm", at_least(0), "a finite number >= 0 (0: no clipping)"),
    ("train.eval_steps", at_least(0), "an integer >= 0 (0: no validation during training)"),
    ("train.save_steps", at_least(1), "an integer >= 1"),
    ("train.save_total_limit", at_least(0), "an integer >= 0 (0: keep all)"),
    ("rm.max_replies", at_least(2), "an integer >= 2"),
    ("rm.l2_coef", at_least(0), "a finite number >= 0"),
    ("rm.margin_scale", at_least(0), "a finite number >= 0"),
    ("rm.threshold", UNIT, "in [0, 1]"),
    ("rm.loss_weight_strength", at_least(0), "a finite number >= 0"),
    ("rm.undersample_bins", at_least(1), "an integer >= 1"),
    ("rm.undersample_max_ratio", at_least(1), "a finite number >= 1"),
    ("rl.rewards[*].weight", at_least(0), "a finite number >= 0 (0: the source is not loaded)"),
    ("rl.reward_clip", or_null(above(0)), "a finite number > 0, or null (no clipping)"),
    ("rl.missing_eos_penalty", or_null(finite), "a finite number, or null"),
    ("rl.steps", at_least(1), "an integer >= 1"),
    ("rl.batch_size", at_least(1), "an integer >= 1"),
    ("rl.mini_batch_size", lambda v, c: c.rl.algorithm != "ppo" or (v >= 1 and c.rl.batch_size % v == 0),
     "an integer >= 1 that divides rl.batch_size"),
    ("rl.gradient_accumulation_steps", at_least(1), "an integer >= 1"),
    ("rl.ppo_epochs", at_least(1), "an integer >= 1"),
    ("rl.learning_rate", at_least(0), "a finite number >= 0"),
    ("rl.max_grad_norm", above(0), "a finite number > 0"),
    ("rl.max_new_tokens", at_least(1), "an integer >= 1"),
    ("rl.temperature", above(0), "a finite number > 0"),
    ("rl.top_p", PROBABILITY, "in (0, 1]"),
    ("rl.gamma", UNIT, "in [0, 1]"),
    ("rl.lam", UNIT, "in [0, 1]"),
    ("rl.cliprange", above(0), "a finite number > 0"),
    ("rl.cliprange_value", above(0), "a finite number > 0"),
    ("rl.vf_coef", at_least(0), "a finite number >= 0"),
    ("rl.kl_coef", at_least(0), "a finite number >= 0"),
    ("rl.target_kl", above(0), "a finite number > 0"),
    ("rl.kl_horizon", at_least(1), "an integer >= 1"),
    ("rl.early_stop_kl", or_null(at_least(0)), "a finite number >= 0, or null (never)"),
    ("rl.max_nonfinite_in_row", at_least(1), "an integer >= 1"),
    ("rl.save_steps", at_least(0), "an integer >= 0 (0: no checkpoints)"),
    ("rl.sample_every", at_least(0), "an integer >= 0 (0: never)"),
    ("rl.num_sample_prompts", at_least(0), "an integer >= 0"),
    ("rl.adam_eps", above(0), "a finite number > 0"),
    ("rl.save_total_limit", at_least(0), "an integer >= 0 (0: keep all)"),
    ("rl.group_size", lambda v, c: v >= 2 and (c.rl.algorithm not in ("grpo", "rloo") or c.rl.batch_size % v == 0),
     "an integer >= 2 that divides rl.batch_size (GRPO and RLOO sample rl.group_size replies per prompt)"),
    ("rl.reward_normalization", lambda v, c: v == "crs" or c.rl.algorithm == "grpo",
     "crs, or trl with rl.algorithm: grpo (TRL's RLOO trainer has no per-reward normalisation)"),
    ("rl.adaptive_kl", lambda v, c: not v or c.rl.algorithm == "ppo", "false unless rl.algorithm is ppo (TRL's GRPO and RLOO keep beta fixed)"),
    ("rl.dpo_beta", above(0), "a finite number > 0"),
    ("rl.dpo_min_gap", at_least(0), "a finite number >= 0"),
    ("eval_pred.num_runs", at_least(1), "an integer >= 1"),
    ("eval_pred.temperature", above(0), "a finite number > 0 (for greedy decoding set eval_pred.do_sample: false)"),
    ("eval_pred.top_p", PROBABILITY, "in (0, 1]"),
    ("eval_pred.max_new_tokens", at_least(1), "an integer >= 1"),
    ("eval_pred.batch_size", at_least(1), "an integer >= 1"),
    ("eval_rewarding.combined[*].weights",
     lambda v, c: all(math.isfinite(w) and w >= 0 for w in v.values()) and any(v.values()) and set(v) <= {r.name for r in c.eval_rewarding.rewards},
     "finite weights >= 0, at least one > 0, each naming a source of eval_rewarding.rewards"),
    ("eval_rewarding.combined[*].reward_clip", or_null(above(0)), "a finite number > 0, or null (no clipping)"),
    ("eval_rewarding.combined[*].missing_eos_penalty", or_null(finite), "a finite number, or null"),
    ("eval_rewarding.judge", lambda v, c: v in ("auto", "gold", "none") or v.lower().endswith((".json", ".csv")),
     "auto, gold, none, or a path or glob of AlpacaEval annotations (.json) or a verdict CSV (.csv)"),
    ("eval_rewarding.n_boot", at_least(1), "an integer >= 1"),
    ("sweep.weights[*]", UNIT, "in [0, 1] (the preference source's weight; the absolute source gets 1 - w)"),
    ("sweep.jobs", at_least(1), "an integer >= 1"),
    ("sweep.n_boot", at_least(1), "an integer >= 1"),
    ("eval_rewarding.batch_size", at_least(1), "an integer >= 1"),
    ("rl.init_adapter", lambda v, c: v is None or c.model.lora.enabled, "null unless model.lora.enabled (it continues a LoRA adapter)"),
    ("online.rounds", at_least(1), "an integer >= 1 (round 0 is the first)"),
    ("online.rl_steps", at_least(1), "an integer >= 1"),
    ("online.prompts_per_round", at_least(1), "an integer >= 1"),
    ("online.replies_per_prompt", at_least(2), "an integer >= 2 (a ranking needs two replies)"),
    ("online.probe_prompts", at_least(0), "an integer >= 0"),
    ("online.ranking_noise", at_least(0), ">= 0"),
    ("online.label_wait_minutes", at_least(0), ">= 0"),
    ("online.rm_epochs", above(0), "> 0"),
    ("online.replay_ratio", at_least(0), ">= 0"),
    ("online.n_boot", at_least(1), "an integer >= 1"),
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
