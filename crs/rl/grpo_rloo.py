"""The RL stage on TRL's trainers: GRPO and RLOO (on-policy, on crs's combined reward).

``rl_train.py --config_subset rl_grpo_crs`` (``rl.algorithm: grpo``, or ``rloo``) runs
:func:`run_grpo_rloo_stage`. TRL does the algorithm (sampling groups of replies, the baseline,
the clipped update, the KL term); crs supplies what makes the run comparable with a PPO run:

* the policy: the SFT run (``rl.policy`` or ``model.name``) with a fresh LoRA adapter of
  ``model.lora`` (TRL wraps it from a peft config), so the reference is the SFT policy with
  the adapter switched off, no second copy;
* the prompts, tokenized by crs's one path (:func:`crs.models.formatting.encode_prompt`: chat
  template, the last ``data.max_prompt_length`` tokens), as PPO sees them; TRL samples the
  replies with the policy, or with vLLM (``rl.vllm``: :mod:`crs.rl.vllm_sampling`);
* the reward: :class:`crs.rl.combined_reward.CombinedReward` (same sources, weights, z-scores, clip and
  missing-EOS penalty as PPO) as one TRL reward function, or each source as its own function
  for TRL's per-reward normalisation (``rl.reward_normalization``). ``rl.combine:
  sum_per_prompt`` standardises each source within TRL's groups of ``rl.group_size`` replies;
  a group may straddle processes, so the reward function gathers the whole batch's raw scores
  first (:meth:`crs.rl.trl_reward.TRLRewardBridge.score_in_groups`); RLOO's leave-one-out baseline
  and GRPO's group baseline then act on that sum;
* the outputs: ``metrics.jsonl`` with PPO's column names where the meaning is the same
  (:data:`GRPO_RLOO_COLUMNS`; every other TRL metric as ``trl/<name>``), ``checkpoints/checkpoint-N``
  sealed like every Trainer stage's (with the reward statistics), ``adapter/`` +
  ``crs_model.json``, and ``run_state.json`` with a summary.

The plumbing every TRL stage shares is :mod:`crs.rl.trl_common`. Several processes (``torchrun``,
``accelerate launch``) are the Trainer's own; only the main process writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from crs.config import ConfigError, CRSConfig
from crs.data import load_examples
from crs.data.schema import Messages, last_user_text
from crs.io import write_json_atomic
from crs.models.formatting import encode_prompt
from crs.models.hf_trainer import SealCheckpointCallback
from crs.models.loading import load_tokenizer
from crs.models.precision import resolve_dtype
from crs.rl.combined_reward import REWARD_STATE_FILE, CombinedReward
from crs.rl.reward_sources import check_gold_sources
from crs.rl.trl_common import (
    METRICS_FILE,
    StepMetricsCallback,
    continue_adapter,
    finish,
    load_policy,
    per_device_batch,
    plain_policy_base,
    quiet_progress_bar,
    require_trl,
    require_trl_metrics,
    start_or_resume,
    trainer_arguments,
)
from crs.rl.trl_reward import trl_reward_func, trl_reward_funcs_per_source
from crs.rl.vllm_sampling import require_vllm, vllm_arguments
from crs.runs import set_seed

logger = logging.getLogger(__name__)

# TRL's logged name -> PPO's column name, where the meaning is the same. Columns crs computes
# itself (reward/*, kl/sequence, time/step) arrive under their own names.
GRPO_RLOO_COLUMNS = {
    "learning_rate": "learning_rate",
    "completions/mean_length": "reply/length",
    "loss": "loss/policy",
    "entropy": "policy/entropy",
    "clip_ratio/region_mean": "policy/clipfrac",
    "grad_norm": "policy/grad_norm",
    "kl": "kl/token",  # TRL's per-token mean: k3 (GRPO) or k1 (RLOO); kl/sequence is PPO's measure
}


class RewardStateCallback(TrainerCallback):
    """Saves the reward's normalisation statistics into each checkpoint (before it is sealed).

    Sources without saved statistics are z-scored with those of their first batch; a resumed
    run must keep that scale, as PPO's checkpoints keep it.
    """

    def __init__(self, reward: CombinedReward) -> None:
        self.reward = reward

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_json_atomic(folder / REWARD_STATE_FILE, self.reward.state_dict())


def _grpo_rloo_trainer_class(algorithm: str) -> type:
    """TRL's GRPOTrainer or RLOOTrainer with crs's prompt tokenization and PPO's ``kl/sequence``."""
    from trl import GRPOTrainer, RLOOTrainer

    base = GRPOTrainer if algorithm == "grpo" else RLOOTrainer

    class CRSGRPORLOOTrainer(base):  # type: ignore[misc, valid-type]
        crs_max_prompt_length = 256
        crs_fallback_template = "{role}: {content}\n"

        def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
            # crs's one prompt path (chat template, the last max_prompt_length tokens), as in PPO.
            if prompts and not isinstance(prompts[0], list):
                return super()._tokenize_prompts(prompts)
            ids = [
                encode_prompt(self.processing_class, p, self.crs_max_prompt_length, self.crs_fallback_template)
                for p in prompts
            ]
            return ids, None, {}

        def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if kwargs.get("compute_entropy"):
                self._crs_train_logps = out[0]  # the update's forward (GRPO's loss)
            elif getattr(self, "_crs_scoring_logps", None) is not None:
                self._crs_scoring_logps.append(out[0])  # RLOO scoring: old policy, then reference
            return out

        def _log_sequence_kl(self, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> None:
            # PPO's kl/sequence: the k1 estimate summed over each reply's tokens, mean over all processes' replies.
            kl = ((logps.detach() - ref_logps) * mask).sum(-1)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["kl/sequence"].append(self.accelerator.gather(kl).float().mean().item())

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            self._crs_scoring_logps = [] if algorithm == "rloo" and self.args.beta != 0.0 else None
            try:
                output = super()._generate_and_score_completions(inputs)
            finally:
                calls, self._crs_scoring_logps = self._crs_scoring_logps, None
            if calls is not None and len(calls) == 2:
                self._log_sequence_kl(calls[0], calls[1], output["completion_mask"])
            return output

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
            self._crs_train_logps = None
            loss = super()._compute_loss(model, inputs)
            if algorithm == "grpo" and "ref_per_token_logps" in inputs and self._crs_train_logps is not None:
                mask = (
                    inputs["completion_mask"] * inputs["tool_mask"]
                    if "tool_mask" in inputs
                    else inputs["completion_mask"]
                )
                self._log_sequence_kl(self._crs_train_logps, inputs["ref_per_token_logps"], mask)
            return loss

    CRSGRPORLOOTrainer.__name__ = CRSGRPORLOOTrainer.__qualname__ = f"CRS{base.__name__}"
    return CRSGRPORLOOTrainer


def grpo_rloo_config(cfg: CRSConfig, run_dir: Path, dtype: torch.dtype, reward_weights: list[float]) -> Any:
    """GRPOConfig / RLOOConfig from ``rl.*`` (see docs/optimisers.md for each key's TRL name)."""
    from trl import GRPOConfig, RLOOConfig

    rl = cfg.rl
    kwargs = trainer_arguments(cfg, run_dir, dtype, per_device_batch(cfg, "(sampled replies per step)"))
    kwargs.update(
        num_generations=rl.group_size,
        max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=rl.top_k,
        beta=rl.kl_coef,
        epsilon=rl.cliprange,
        num_iterations=1,
        reward_weights=reward_weights,
        remove_unused_columns=False,
        log_completions=False,
        **vllm_arguments(cfg),
    )
    if rl.algorithm == "grpo":
        kwargs.update(
            scale_rewards=rl.grpo_scale_rewards,
            multi_objective_aggregation="normalize_then_sum"
            if rl.reward_normalization == "trl"
            else "sum_then_normalize",
        )
        return GRPOConfig(**kwargs)
    return RLOOConfig(normalize_advantages=rl.whiten_advantages, **kwargs)


def _check_grpo_rloo(cfg: CRSConfig) -> None:
    rl = cfg.rl
    if not cfg.model.lora.enabled and rl.kl_coef != 0:
        raise ConfigError(
            f"rl.algorithm={rl.algorithm} with full fine-tuning (model.lora.enabled: false) and rl.kl_coef > 0: "
            "TRL would load the reference from the base model's name, not the SFT policy; use LoRA (the reference "
            "is then the SFT policy with the adapter off) or rl.kl_coef: 0"
        )
    if rl.reward_normalization == "trl":
        from trl import GRPOConfig

        if "multi_objective_aggregation" not in GRPOConfig.__dataclass_fields__:
            raise ConfigError(
                "rl.reward_normalization=trl needs TRL's GRPOConfig.multi_objective_aggregation (trl>=1.0): "
                "pip install -U trl"
            )
        if rl.reward_clip is not None:
            logger.warning(
                "rl.reward_clip=%s is not applied with rl.reward_normalization=trl (TRL normalises each source)",
                rl.reward_clip,
            )
    ignored = [
        k
        for k, default in (("adaptive_kl", False), ("value_model", "head"), ("early_stop_kl", None))
        if getattr(rl, k) != default
    ]
    if ignored:
        logger.warning("rl.%s: PPO only, ignored by %s", ", rl.".join(ignored), rl.algorithm)


def prompt_dataset(prompts: list[Messages]) -> Any:
    """TRL's conversational prompt dataset (one ``prompt`` column of chat messages)."""
    from datasets import Dataset

    if not prompts:
        raise ConfigError("no training prompts (check data.source / data.split)")
    return Dataset.from_list([{"prompt": p} for p in prompts])


def reward_functions(
    cfg: CRSConfig, reward: CombinedReward, eos_ids: list[int] | None
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """TRL's reward functions on ``reward`` and their weights (which do not depend on ``eos_ids``)."""
    if cfg.rl.reward_normalization == "trl":
        return trl_reward_funcs_per_source(reward, eos_ids)
    # group_size: sum_per_prompt standardises within TRL's groups, gathered whole across processes
    return [trl_reward_func(reward, eos_ids, group_size=cfg.rl.group_size)], [1.0]


def build_grpo_rloo_trainer(
    cfg: CRSConfig,
    run_dir: Path,
    model: Any,
    peft_config: Any,
    tokenizer: Any,
    reward: CombinedReward,
    prompts: list[Messages],
    args: Any = None,
) -> tuple[Any, StepMetricsCallback]:
    """TRL's GRPO or RLOO trainer (``rl.algorithm``) on ``reward``, with crs's callbacks; and its metrics callback.

    ``model`` is the policy (wrapped in a fresh adapter by TRL from ``peft_config``; None: full
    fine-tuning), ``tokenizer`` the policy's (left padding). ``args``: the stage's GRPOConfig /
    RLOOConfig, when it was made before the policy loaded (:func:`run_grpo_rloo_stage`); None: made here.
    """
    rl = cfg.rl
    # TRL's completions end at their first EOS: the model's and the tokenizer's (as TRL takes them).
    declared = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = {tokenizer.eos_token_id, *(declared if isinstance(declared, list) else [declared])} - {None}
    funcs, weights = reward_functions(cfg, reward, sorted(eos_ids))
    metrics_cb = StepMetricsCallback(
        run_dir / METRICS_FILE,
        GRPO_RLOO_COLUMNS,
        {"kl/coef": rl.kl_coef},
        ("reward/combined", "kl/sequence", "reply/length", "time/step"),
        cfg.run.logging_steps,
    )
    trainer_class = _grpo_rloo_trainer_class(rl.algorithm)
    trainer_class.crs_max_prompt_length = cfg.data.max_prompt_length
    trainer_class.crs_fallback_template = cfg.data.fallback_template
    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=args if args is not None else grpo_rloo_config(cfg, run_dir, resolve_dtype(cfg.model.dtype), weights),
        train_dataset=prompt_dataset(prompts),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_cb, RewardStateCallback(reward), SealCheckpointCallback()],
    )
    require_trl_metrics(trainer)
    quiet_progress_bar(trainer)
    continue_adapter(trainer, cfg)
    if trainer.accelerator.num_processes > 1:
        reward.gather = (
            trainer.accelerator.gather
        )  # first-batch statistics (and sum_per_prompt's groups) from every process's replies
        reward.process_index = trainer.accelerator.process_index  # this process's rows in what gather returns
    return trainer, metrics_cb


def run_grpo_rloo_stage(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train the SFT policy with TRL's GRPO or RLOO on crs's combined reward; returns the summary."""
    require_trl(cfg, "GRPOTrainer" if cfg.rl.algorithm == "grpo" else "RLOOTrainer")
    require_vllm(cfg)
    _check_grpo_rloo(cfg)
    rl = cfg.rl
    run_dir = Path(run_dir)
    set_seed(cfg.run.seed)
    train_examples, _ = load_examples(cfg.data, kind="prompts", seed=cfg.run.seed)
    check_gold_sources(
        rl.rewards, [last_user_text(ex.prompt) for ex in train_examples], "rl.rewards", cfg.run.allow_gold_outside_demo
    )
    plain_base = plain_policy_base(cfg)
    reward = CombinedReward.for_rl(cfg)  # its reward models load whole on every process
    # Made before the policy loads: under ZeRO-3 its DeepSpeed config makes the policy load partitioned.
    args = grpo_rloo_config(cfg, run_dir, resolve_dtype(cfg.model.dtype), reward_functions(cfg, reward, None)[1])
    policy = load_policy(cfg, plain_base)
    tokenizer = load_tokenizer(policy.name, cfg.model.cache_dir, padding_side="left")
    prompts = [ex.prompt for ex in train_examples]
    trainer, metrics_cb = build_grpo_rloo_trainer(
        cfg, run_dir, policy.model, policy.peft_config, tokenizer, reward, prompts, args
    )
    is_main = trainer.is_world_process_zero()
    checkpoint = start_or_resume(run_dir, resume, is_main)
    if checkpoint is not None and (checkpoint / REWARD_STATE_FILE).is_file():
        reward.load_state_dict(json.loads((checkpoint / REWARD_STATE_FILE).read_text()))
    if is_main:
        logger.info(
            "%s: %d prompts, %d steps x %d replies (%d per prompt) on %d process(es), "
            "reward normalisation %s, combination %s, rewards %s",
            rl.algorithm.upper(),
            len(train_examples),
            rl.steps,
            rl.batch_size,
            rl.group_size,
            trainer.accelerator.num_processes,
            rl.reward_normalization,
            reward.strategy_name,
            reward.describe(),
        )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    last = metrics_cb.last_row
    summary = {
        "algorithm": rl.algorithm,
        "steps": trainer.state.global_step,
        "final": {
            k: last[k] for k in ("reward/combined", "kl/sequence", "reply/length", "reward/ended_with_eos") if k in last
        },
        "rewards": reward.describe(),
        "reward_normalization": rl.reward_normalization,
        "train_runtime": metrics_cb.train_summary.get("train_runtime"),
    }
    return finish(trainer, tokenizer, cfg, run_dir, policy, summary)
