"""The ``rl`` section: the RL stage's algorithm, its settings and the combined reward's sources.

A user writes every RL key flat under ``rl:``, whatever the algorithm. In code the keys are
grouped by the algorithms that read them, and :class:`RLConfig` joins the groups into that
one flat section:

* :class:`RLCommon`: keys more than one algorithm reads;
* :class:`PPOSettings`: crs's own PPO loop only;
* :class:`GroupSettings`: TRL's GRPO and RLOO, which sample a group of replies per prompt;
* :class:`DPOSettings`: TRL's offline DPO.

A rule that depends on the algorithm (``rl.mini_batch_size`` divides the batch only for
PPO) reads ``rl.algorithm`` from the whole config, its second argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from crs.config.fields import PROBABILITY, UNIT, Rule, above, at_least, finite, or_null
from crs.config.length_keys import length_calibration_field, length_tokenizer_field, length_unit_field


@dataclass
class RewardSourceConfig:
    """One term of the combined reward: weight * normalize(source(prompt, reply))."""

    name: str = field(default="reward", metadata={"help": "The source's name in logs and tables (distinct per list)."})
    path: str = field(
        default="",
        metadata={
            "help": "A reward-model run directory (`rm_train.py` output), `gold` (the demo's simulated annotator's "
            "noise-free utility), `length` (the reply's length: `length_unit`), or `python:module:function` (a "
            "function `f(prompts, replies) -> scores`)."
        },
    )
    weight: float = field(
        default=1.0,
        metadata={
            "help": "The source's weight; 0 skips loading it; a negative weight subtracts it (`{name: length, path: "
            "length, weight: -0.25}` beside an RM: RM minus length). Weights need not sum to 1. (Evaluation scores "
            "every source alike.)",
            "rule": Rule(finite, "a finite number (0: the source is not loaded; negative: subtracted)"),
        },
    )
    normalize: Literal["none", "zscore"] = field(
        default="zscore",
        metadata={
            "help": "`zscore`: (x - mean) / std with the statistics the reward model saved on its validation set "
            "(`reward_stats.json`), or, for sources without them, statistics of the first rollout batch, then frozen; "
            "`none`: raw scores. (Evaluation reports raw and z-scored values; its z-scale falls back to statistics "
            "pooled over all predictions.)"
        },
    )
    length_unit: Literal["characters", "tokens"] = length_unit_field()
    length_tokenizer: str | None = length_tokenizer_field()
    length_calibration: str = length_calibration_field()


def _combine_fits(strategy: str, rl: Any) -> bool:
    """Whether ``rl.combine`` fits the algorithm and the sources (see its help); ``rl`` is the whole
    :class:`RLConfig`."""
    if strategy == "sum_per_prompt" and rl.algorithm == "ppo":
        return False  # PPO samples one reply per prompt: no group to standardise within
    if strategy != "sum" and rl.algorithm == "grpo" and rl.reward_normalization == "trl":
        return False
    active = sum(1 for r in rl.rewards if r.weight != 0)
    if strategy == "conservative" and any(r.weight < 0 for r in rl.rewards):
        return False  # it ignores the weights: a source meant to be subtracted would count as added
    # No sources at all is another key's error (and a stage that reads no reward)
    return strategy != "conservative" or active == 0 or active >= 2


@dataclass
class RLCommon:
    """Keys more than one algorithm reads: the start, the combined reward, the budget, the optimiser, sampling,
    checkpoints."""

    algorithm: Literal["ppo", "grpo", "rloo", "dpo"] = field(
        default="ppo",
        metadata={
            "help": "The policy optimiser: `ppo` (crs's own PPO, the reference), `grpo` or `rloo` (TRL's on-policy "
            "trainers on the same combined reward), or `dpo` (TRL's offline DPOTrainer on preference pairs from "
            "`data.*`). Details: docs/optimisers.md."
        },
    )
    policy: str | None = field(default=None, metadata={"help": "The SFT run to start from; null: `model.name`."})
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "An earlier RL run on the same `policy` whose LoRA adapter (and, with PPO, value head) this run "
            "keeps training (the online loop's next round); the reference stays `policy` (adapter off). null: a fresh "
            "adapter.",
            "rule": Rule(
                lambda v, c: v is None or c.model.lora.enabled,
                "null unless model.lora.enabled (it continues a LoRA adapter)",
            ),
        },
    )
    rewards: list[RewardSourceConfig] = field(
        default_factory=list,
        metadata={
            "help": "The reward sources whose normalised scores are combined (`rl.combine`; by default weighted and "
            "summed) into the combined reward."
        },
    )
    combine: Literal["sum", "sum_per_prompt", "conservative"] = field(
        default="sum",
        metadata={
            "help": "How the sources make one score (then `reward_clip` and `missing_eos_penalty`, as always). `sum`: "
            "sum_i w_i x z_i, each source z-scored on its fixed scale (`normalize`). `sum_per_prompt` (GRPO, RLOO): "
            "each source standardised within the group of replies to the same prompt ((x - group mean) / group std, "
            "population std; a group tied on a source gives 0), then weighted and summed; replaces `normalize`; PPO "
            "samples one reply per prompt, so it is refused there. `conservative`: over >= 2 sources, the minimum of "
            "the z-scores, or their mean - k x std (`rl.conservative`); source weights are ignored, except that 0 "
            "still drops a source (and a negative one is refused). With `reward_normalization: trl` only `sum` (TRL "
            "combines the sources itself).",
            "rule": Rule(
                lambda v, c: _combine_fits(v, c.rl),
                "sum; sum_per_prompt with rl.algorithm grpo or rloo (PPO samples one reply per prompt: use sum or "
                "conservative); conservative with at least 2 rl.rewards of non-zero weight and none negative (it "
                "ignores weights); only sum with rl.reward_normalization: trl",
            ),
        },
    )
    conservative: Literal["min", "mean_std"] = field(
        default="min",
        metadata={
            "help": "With `combine: conservative`: `min` (the lowest z-score of the sources) or `mean_std` (their mean "
            "minus `conservative_k` x their population std across sources; for two sources and k = 1 this equals "
            "`min`)."
        },
    )
    conservative_k: float = field(
        default=1.0,
        metadata={
            "help": "k of `conservative: mean_std` (0: the plain mean of the z-scores). The best-of-n study's "
            "`mean-<k>std` scorer uses it too.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    reward_clip: float | None = field(
        default=None,
        metadata={
            "help": "Clip the combined score to [-c, c] (the reference study: 4); null: no clipping.",
            "rule": Rule(or_null(above(0)), "a finite number > 0, or null (no clipping)"),
        },
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Added to the score when a reply ends without EOS (common: -1); null: none.",
            "rule": Rule(or_null(finite), "a finite number, or null"),
        },
    )
    reward_model_quantization: Literal["none", "8bit", "4bit"] = field(
        default="none",
        metadata={
            "help": "How reward models (and an RM judge) load during RL: `none`: in `model.dtype`, not quantized, "
            "whatever `model.quantization` does to the policy (a quantized scorer gives a slightly different reward); "
            "`8bit` / `4bit`: through bitsandbytes (CUDA only), to save memory on a large reward model."
        },
    )
    steps: int = field(
        default=100,
        metadata={
            "help": "Iterations: PPO, GRPO, RLOO: one batch of sampled replies each (GRPO, RLOO: one optimiser step); "
            "DPO: optimiser steps.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "Per step, over all processes: PPO: prompts, one reply each; GRPO, RLOO: sampled replies "
            "(`batch_size / group_size` prompts); DPO: preference pairs. Equal `steps x batch_size` is an equal budget "
            "of sampled replies.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "Micro-batches per optimiser step (PPO: per mini-batch); must divide the batch among the "
            "processes.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "Adam learning rate.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    max_grad_norm: float = field(
        default=1.0,
        metadata={"help": "Gradient clipping norm.", "rule": Rule(above(0), "a finite number > 0")},
    )
    max_new_tokens: int = field(
        default=64,
        metadata={"help": "Reply budget when sampling rollouts.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    temperature: float = field(
        default=0.8,
        metadata={"help": "Sampling temperature.", "rule": Rule(above(0), "a finite number > 0")},
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
    cliprange: float = field(
        default=0.2,
        metadata={
            "help": "Clip range of the policy ratio (GRPO, RLOO: TRL's `epsilon`).",
            "rule": Rule(above(0), "a finite number > 0"),
        },
    )
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "Beta of the KL penalty to the SFT policy. PPO and RLOO: `-kl_coef * sum_t (log pi - log pi_ref)` "
            "in the reward; GRPO: TRL's `beta`, `kl_coef` x the per-token k3 estimate added to the loss. GRPO, RLOO "
            "with 0: no reference forward, no `kl/sequence`.",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Whiten advantages (PPO; RLOO: TRL's `normalize_advantages`, over the batch)."}
    )
    save_steps: int = field(
        default=25,
        metadata={
            "help": "Checkpoint every N steps, in `<run>/checkpoints/step_N`, and at the last step (0: none; a "
            "finished run then cannot be extended with `--resume`).",
            "rule": Rule(at_least(0), "an integer >= 0 (0: no checkpoints)"),
        },
    )
    adam_eps: float = field(
        default=1e-5,
        metadata={
            "help": "Adam epsilon: the reference PPO code's (PyTorch's default is 1e-8).",
            "rule": Rule(above(0), "a finite number > 0"),
        },
    )
    anneal_lr: bool = field(
        default=False, metadata={"help": "Decay the learning rate linearly to 0 over `rl.steps` (every algorithm)."}
    )
    save_total_limit: int = field(
        default=2,
        metadata={
            "help": "Keep the last N checkpoints (0: all).",
            "rule": Rule(at_least(0), "an integer >= 0 (0: keep all)"),
        },
    )


@dataclass
class PPOSettings:
    """crs's own PPO loop only: mini-batches, GAE, the value head, adaptive KL, samples and the over-optimisation log,
    fast sampling."""

    mini_batch_size: int = field(
        default=8,
        metadata={
            "help": "PPO: rollouts per optimiser step, over all processes.",
            "rule": Rule(
                lambda v, c: c.rl.algorithm != "ppo" or (v >= 1 and c.rl.batch_size % v == 0),
                "an integer >= 1 that divides rl.batch_size",
            ),
        },
    )
    ppo_epochs: int = field(
        default=4,
        metadata={
            "help": "PPO: passes over each rollout batch (GRPO, RLOO: one pass, TRL's `num_iterations` 1).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    gamma: float = field(
        default=1.0,
        metadata={"help": "GAE discount.", "rule": Rule(UNIT, "in [0, 1]")},
    )
    lam: float = field(
        default=0.95,
        metadata={"help": "GAE lambda.", "rule": Rule(UNIT, "in [0, 1]")},
    )
    cliprange_value: float = field(
        default=0.2,
        metadata={"help": "Clip range of the value update.", "rule": Rule(above(0), "a finite number > 0")},
    )
    vf_coef: float = field(
        default=0.1,
        metadata={"help": "Weight of the clipped value loss.", "rule": Rule(at_least(0), "a finite number >= 0")},
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={
            "help": "PPO: adapt beta toward `target_kl`.",
            "rule": Rule(
                lambda v, c: not v or c.rl.algorithm == "ppo",
                "false unless rl.algorithm is ppo (TRL's GRPO and RLOO keep beta fixed)",
            ),
        },
    )
    target_kl: float = field(
        default=6.0,
        metadata={"help": "Adaptive KL target, nats per reply.", "rule": Rule(above(0), "a finite number > 0")},
    )
    kl_horizon: int = field(
        default=10000,
        metadata={"help": "Adaptive KL horizon.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    early_stop_kl: float | None = field(
        default=None,
        metadata={
            "help": "Stop a step's PPO epochs when approximate KL exceeds it; null: never.",
            "rule": Rule(or_null(at_least(0)), "a finite number >= 0, or null (never)"),
        },
    )
    value_model: str = field(
        default="head",
        metadata={
            "help": "`head` (a scalar head on the policy's last hidden state), or a reward-model run as a separate "
            "critic."
        },
    )
    max_nonfinite_in_row: int = field(
        default=3,
        metadata={
            "help": "A non-finite loss or reward skips the update with a warning; this many in a row stops the run.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    sample_every: int = field(
        default=25,
        metadata={
            "help": "Greedy samples on held-out prompts every N steps, in `<run>/samples/step_N.json` (0: never).",
            "rule": Rule(at_least(0), "an integer >= 0 (0: never)"),
        },
    )
    num_sample_prompts: int = field(
        default=4,
        metadata={"help": "Held-out prompts per sample.", "rule": Rule(at_least(0), "an integer >= 0")},
    )
    eval_prompts: int = field(
        default=32,
        metadata={
            "help": "Held-out prompts (the validation split) answered every `sample_every` steps and at step 0 for the "
            "over-optimisation log `<run>/overoptimization.jsonl`: every reward source, the combined reward, the judge "
            "and the KL to the reference; 0: off.",
            "rule": Rule(at_least(0), "an integer >= 0 (0: off)"),
        },
    )
    judge: str = field(
        default="auto",
        metadata={
            "help": "The judge of the over-optimisation log, never optimised: `auto` (`gold` on the demo data, else "
            "none), `none`, or a reward source path (`gold`, `python:module:function`, a reward-model run)."
        },
    )
    logprobs_from_sampling: bool = field(
        default=False,
        metadata={
            "help": "Reuse sampling's log-probs and values as the rollout's (saves a forward; exact in fp32, slightly "
            "off in bf16: docs/results.md)."
        },
    )
    old_logprobs_from_update: bool = field(
        default=True,
        metadata={
            "help": "When a rollout batch is one mini-batch of one micro-batch, take the old log-probs and values from "
            "the first update forward (same weights as sampling, so exact) instead of a forward of their own."
        },
    )
    merged_sampling: bool = field(
        default=True,
        metadata={
            "help": "Sample from a copy with the LoRA adapter folded in (faster; one more copy of the weights). PPO "
            "runs data-parallel only: under DeepSpeed or FSDP (where no process holds the whole weights to copy) it "
            "stops before training."
        },
    )
    packed_sampling: bool = field(
        default=True,
        metadata={
            "help": "On CPU, that copy's weights are pre-packed for oneDNN and repacked each step: faster small-batch "
            "matmuls (docs/results.md), one more copy of the weights."
        },
    )
    fused_sampling: bool = field(
        default=True,
        metadata={
            "help": "On CPU, a Llama-family copy samples with crs's lean decode-only forward "
            "(crs/models/fused_decoder.py: fused q|k|v and gate|up matmuls, a preallocated KV cache) instead of "
            "transformers' (other architectures always use transformers')."
        },
    )


@dataclass
class GroupSettings:
    """TRL's GRPO and RLOO: the group of replies sampled per prompt, how their rewards are scaled, and whether vLLM
    samples them."""

    group_size: int = field(
        default=4,
        metadata={
            "help": "GRPO, RLOO: replies sampled per prompt (TRL's `num_generations`), the group whose mean (GRPO) or "
            "leave-one-out mean (RLOO) is the baseline; must divide `batch_size`.",
            "rule": Rule(
                lambda v, c: v >= 2 and (c.rl.algorithm not in ("grpo", "rloo") or c.rl.batch_size % v == 0),
                "an integer >= 2 that divides rl.batch_size (GRPO and RLOO sample rl.group_size replies per prompt)",
            ),
        },
    )
    reward_normalization: Literal["crs", "trl"] = field(
        default="crs",
        metadata={
            "help": "GRPO, RLOO: how sources are put on one scale. `crs`: the combined reward exactly as PPO's (each "
            "source z-scored with its saved statistics, weighted, summed, clipped, EOS penalty) is TRL's one reward "
            "function. `trl` (GRPO only): each source is its own reward function, weighted by TRL's `reward_weights` "
            "after TRL normalises it within each group (`multi_objective_aggregation: normalize_then_sum`); no clip; "
            "the EOS penalty is one more reward function; `rl.combine` must be `sum` (close to, not the same as, "
            "`combine: sum_per_prompt`: docs/optimisers.md).",
            "rule": Rule(
                lambda v, c: v == "crs" or c.rl.algorithm == "grpo",
                "crs, or trl with rl.algorithm: grpo (TRL's RLOO trainer has no per-reward normalisation)",
            ),
        },
    )
    grpo_scale_rewards: Literal["group", "batch", "none"] = field(
        default="group",
        metadata={
            "help": "GRPO: divide the advantage (reward minus its group mean) by the reward's std in the group "
            "(`group`, the GRPO paper), in the batch (`batch`) or not at all (`none`, Dr. GRPO). TRL's `scale_rewards`."
        },
    )
    vllm: Literal["none", "colocate", "server"] = field(
        default="none",
        metadata={
            "help": "GRPO, RLOO: who samples the replies. `none`: the policy itself, through transformers. `colocate`: "
            "a vLLM engine inside each training process, sharing its GPU (`vllm_gpu_memory_utilization`). `server`: a "
            "vLLM server started beforehand on other GPUs (`trl vllm-serve`; `vllm_server_url`). TRL's `use_vllm` and "
            "`vllm_mode`; it pushes the policy's weights (LoRA merged in) to vLLM after every update. Needs vLLM "
            "installed, in the range TRL supports: docs/optimisers.md#sampling-with-vllm.",
            "rule": Rule(
                lambda v, c: v == "none" or c.rl.algorithm in ("grpo", "rloo"),
                "none unless rl.algorithm is grpo or rloo (TRL samples their replies with vLLM; crs's PPO samples "
                "with transformers and DPO samples nothing)",
            ),
        },
    )
    vllm_gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": "With `vllm: colocate`: the fraction of each GPU's total memory vLLM takes for its weights and KV "
            "cache; the policy, its optimiser and the reward models must fit in the rest. null: TRL's default (0.3). A "
            "server sets its own (`trl vllm-serve --gpu_memory_utilization`).",
            "rule": Rule(
                lambda v, c: v is None or (c.rl.vllm == "colocate" and PROBABILITY(v, c)),
                "null, or in (0, 1] with rl.vllm: colocate (a server sets its own with trl vllm-serve "
                "--gpu_memory_utilization)",
            ),
        },
    )
    vllm_server_url: str | None = field(
        default=None,
        metadata={
            "help": "With `vllm: server`: the server's base URL (`http://host:8000`). null: TRL's default, port 8000 "
            "on this machine. TRL's `vllm_server_base_url`.",
            "rule": Rule(
                lambda v, c: v is None or (c.rl.vllm == "server" and v.startswith(("http://", "https://"))),
                "null, or an http:// or https:// URL with rl.vllm: server (colocate and none start no server)",
            ),
        },
    )


@dataclass
class DPOSettings:
    """TRL's DPO: the preference pairs and the loss's beta."""

    dpo_beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO: beta of the loss `-log sigmoid(beta x (chosen log-ratio - rejected log-ratio))` (TRL's "
            "`beta`).",
            "rule": Rule(above(0), "a finite number > 0"),
        },
    )
    dpo_signal: Literal["ranking", "absolute"] = field(
        default="ranking",
        metadata={
            "help": "DPO: where pairs come from: `ranking` (data kind `ranking`, replies best first) or `absolute` "
            "(data kind `absolute`: of two replies to one prompt, the higher score wins)."
        },
    )
    dpo_pairs: Literal["best_vs_rest", "all_pairs"] = field(
        default="best_vs_rest",
        metadata={
            "help": "DPO: which pairs of a prompt's replies: `best_vs_rest` (the best against each other one: K-1 "
            "pairs) or `all_pairs` (every ordered pair: K(K-1)/2). Tied replies never make a pair."
        },
    )
    dpo_min_gap: float = field(
        default=0.25,
        metadata={
            "help": "DPO with `dpo_signal: absolute`: a pair needs a score gap of at least this (scores in [0, 1]; the "
            "demo's Likert steps are 0.25).",
            "rule": Rule(at_least(0), "a finite number >= 0"),
        },
    )


# One flat section, as a user writes it (``rl.kl_coef``, ``rl.group_size``, ``rl.dpo_beta``).
# Dataclass fields are collected from the last base to the first, hence the bases in reverse:
# the keys come common first, then PPO's, GRPO / RLOO's and DPO's (docs/config.md's order).
@dataclass
class RLConfig(DPOSettings, GroupSettings, PPOSettings, RLCommon):
    """The RL stage (``rl_train.py``): PPO (crs's own), GRPO / RLOO / DPO (TRL's), and the combined reward; every
    trick has a key."""
