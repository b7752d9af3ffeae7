"""The RL stage on TRL's trainers: GRPO and RLOO (online, on crs's combined reward).

``rl_train.py --config_subset rl_grpo_crs`` (``rl.algorithm: grpo``, or ``rloo``) runs
:func:`run_online_stage`. TRL does the algorithm (sampling groups of replies, the baseline,
the clipped update, the KL term); crs supplies what makes the run comparable with a PPO run:

* the policy: the SFT run (``rl.policy`` or ``model.name``) with a fresh LoRA adapter of
  ``model.lora`` (TRL wraps it from a peft config), so the reference is the SFT policy with
  the adapter switched off, no second copy;
* the prompts, tokenized by crs's one path (:func:`crs.models.formatting.encode_prompt`: chat
  template, the last ``data.max_prompt_length`` tokens), as PPO sees them;
* the reward: :class:`crs.rl.rewards.CombinedReward` (same sources, weights, z-scores, clip and
  missing-EOS penalty as PPO) as one TRL reward function, or each source as its own function
  for TRL's per-reward normalisation (``rl.reward_normalization``);
* the outputs: ``metrics.jsonl`` with PPO's column names where the meaning is the same
  (:data:`ONLINE_COLUMNS`; every other TRL metric as ``trl/<name>``), ``checkpoints/checkpoint-N``
  sealed like every Trainer stage's (with the reward statistics), ``adapter/`` +
  ``crs_model.json``, and ``run_state.json`` with a summary.

:mod:`crs.rl.dpo` (offline DPO) shares the helpers here. Several processes (``torchrun``,
``accelerate launch``) are the Trainer's own; only the main process writes.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from crs.config import ConfigError, CRSConfig
from crs.data import load_examples
from crs.data.schema import Messages, last_user_text
from crs.dependencies import installed_version, require_tested, tested_ranges
from crs.io import append_jsonl, truncate_jsonl, write_json_atomic
from crs.models.formatting import encode_prompt
from crs.models.loading import load_adapter_weights, load_causal_lm, load_tokenizer, resolve_dtype, save_run_model
from crs.models.trainer import CHECKPOINT_DIR, SealCheckpointCallback, resume_checkpoint
from crs.rl.rewards import REWARD_STATE_FILE, CombinedReward, check_gold_sources
from crs.runs import checkpoint_step, mark_finished, set_seed

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"

# TRL's logged name -> PPO's column name, where the meaning is the same. Columns crs computes
# itself (reward/*, kl/sequence, time/step) arrive under their own names.
ONLINE_COLUMNS = {
    "learning_rate": "learning_rate",
    "completions/mean_length": "reply/length",
    "loss": "loss/policy",
    "entropy": "policy/entropy",
    "clip_ratio/region_mean": "policy/clipfrac",
    "grad_norm": "policy/grad_norm",
    "kl": "kl/token",  # TRL's per-token mean: k3 (GRPO) or k1 (RLOO); kl/sequence is PPO's measure
}


# --------------------------------------------------------------------------- shared with DPO


# The private TRL methods crs overrides, with the parameters it relies on. TRL calls them
# itself, so a rename would raise nothing: the override would just stop being called.
# Why each stays (TRL 1.16 has no public way to do the same): docs/optimisers.md#trl-internals.
_ONLINE_OVERRIDES = {
    "_tokenize_prompts": ("prompts",),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep", "compute_entropy"),
    "_generate_and_score_completions": ("inputs",),
    "_compute_loss": ("model", "inputs"),
}
TRL_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "GRPOTrainer": _ONLINE_OVERRIDES,
    "RLOOTrainer": _ONLINE_OVERRIDES,
    "DPOTrainer": {"_prepare_dataset": ("dataset", "processing_class", "args", "dataset_name")},
}


def require_trl(cfg: CRSConfig, trainer_name: str) -> str:
    """TRL's version, once it is known to carry what crs builds on; else a one-line ConfigError.

    TRL outside the tested range stops the run unless ``run.allow_untested_versions``; a
    trainer without a method crs overrides (with the parameters crs relies on) always does.
    """
    version = installed_version("trl")
    if version is None:
        raise ConfigError(f"rl.algorithm grpo, rloo and dpo run on TRL: pip install 'trl{tested_ranges().get('trl', '')}'")
    require_tested("trl", "crs overrides private methods of its trainers", cfg.run.allow_untested_versions)
    import trl

    trainer = getattr(trl, trainer_name)
    for method, params in TRL_OVERRIDES[trainer_name].items():
        found = getattr(trainer, method, None)
        if found is None or not _accepts(found, params):
            raise ConfigError(
                f"TRL {version}'s {trainer_name} has no {method}({', '.join(params)}), which crs overrides: "
                f"pip install 'trl{tested_ranges().get('trl', '')}' (the versions crs was tested with)"
            )
    return version


def _accepts(method: Callable[..., Any], params: tuple[str, ...]) -> bool:
    """Whether ``method`` takes each of ``params`` by name (a ``**kwargs`` takes any)."""
    signature = inspect.signature(method).parameters
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()) or set(params) <= set(signature)


def peft_lora_config(cfg: CRSConfig) -> Any:
    """``model.lora`` as the peft config TRL wraps the policy with (as :func:`crs.models.loading.add_lora` would)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    lora = cfg.model.lora
    return PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type=TaskType.CAUSAL_LM
    )


def load_policy(cfg: CRSConfig) -> tuple[Any, Any, str, torch.dtype]:
    """The SFT policy (adapter merged in), the peft config to train (None: full fine-tuning), its name, the dtype.

    LoRA: the base in ``model.dtype`` (the adapter is fp32, peft's default); full
    fine-tuning: fp32 weights, as crs's other stages.
    """
    dtype = resolve_dtype(cfg.model.dtype)
    policy_name = cfg.rl.policy or cfg.model.name
    if cfg.model.lora.enabled:
        model = load_causal_lm(policy_name, cfg.model)
        if getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_8bit", False):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        return model, peft_lora_config(cfg), policy_name, dtype
    return load_causal_lm(policy_name, cfg.model, dtype=torch.float32), None, policy_name, dtype


def per_device_batch(cfg: CRSConfig, what: str) -> int:
    """``rl.batch_size`` over processes and gradient accumulation (a ConfigError when it does not divide)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun and accelerate launch set it
    share = world * cfg.rl.gradient_accumulation_steps
    if cfg.rl.batch_size % share:
        raise ConfigError(
            f"rl.batch_size={cfg.rl.batch_size} {what} cannot be shared out among {world} process(es) x "
            f"rl.gradient_accumulation_steps={cfg.rl.gradient_accumulation_steps}: make it a multiple of {share}"
        )
    return cfg.rl.batch_size // share


def trainer_arguments(cfg: CRSConfig, run_dir: Path, dtype: torch.dtype, per_device: int) -> dict[str, Any]:
    """What every TRL config of this stage shares: the ``rl.*`` optimisation keys, checkpoints, logging, precision."""
    rl = cfg.rl
    cuda = torch.cuda.is_available()
    half = dtype  # autocast to model.dtype (bf16 / fp16), as SFT; fp32: none
    return dict(
        output_dir=str(run_dir / CHECKPOINT_DIR),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=rl.gradient_accumulation_steps,
        learning_rate=rl.learning_rate,
        max_steps=rl.steps,
        lr_scheduler_type="linear" if rl.anneal_lr else "constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_epsilon=rl.adam_eps,
        max_grad_norm=rl.max_grad_norm,
        logging_steps=1,  # one metrics.jsonl row per step, as PPO's
        save_strategy="steps" if rl.save_steps else "no",
        save_steps=rl.save_steps or 500,
        save_total_limit=rl.save_total_limit or None,
        report_to=cfg.run.report_to,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        bf16=half == torch.bfloat16,
        fp16=half == torch.float16,
        gradient_checkpointing=cfg.model.gradient_checkpointing,  # TRL's default is True
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=False,
    )


class QuietProgressCallback(ProgressCallback):
    """The Trainer's progress bar without its printing of every log dict (crs logs one line itself)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        return None


def quiet_progress_bar(trainer: Any) -> None:
    """Swap the Trainer's progress callback for :class:`QuietProgressCallback`."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgressCallback())


class StepMetricsCallback(TrainerCallback):
    """Writes one ``metrics.jsonl`` row per optimiser step with crs's column names.

    ``columns`` maps TRL's logged names to crs's; names already crs's (``reward/...``,
    ``kl/...``, ``dpo/...``) stay; every other TRL metric becomes ``trl/<name>``. ``time/step``
    is the wall time of the whole step (sampling, scoring, update). The Trainer's closing
    summary (``train_runtime``...) is kept for the run summary, not logged as a step.
    """

    CRS_PREFIXES = ("reward/", "kl/", "dpo/", "time/", "reply/", "policy/", "loss/")

    def __init__(
        self, path: Path, columns: dict[str, str], constants: dict[str, float], headline: tuple[str, ...], every: int,
        derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self.columns = columns
        self.constants = constants
        self.derive = derive
        self.headline = headline
        self.every = max(every, 1)
        self.last_row: dict[str, Any] = {}
        self.train_summary: dict[str, Any] = {}
        self._started = 0.0
        self._step_time: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_time = time.perf_counter() - self._started

    def row(self, step: int, logs: dict[str, Any]) -> dict[str, Any]:
        """The ``metrics.jsonl`` row of one TRL log."""
        row: dict[str, Any] = {"step": step}
        for key, value in logs.items():
            if key in self.columns:
                row[self.columns[key]] = value
            elif key.startswith(self.CRS_PREFIXES):
                row[key] = value
            else:
                row[f"trl/{key}"] = value
        row.update(self.constants)
        if self.derive is not None:
            row.update(self.derive(row))
        if self._step_time is not None:
            row["time/step"] = self._step_time
        return row

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        if "train_runtime" in logs:
            self.train_summary = dict(logs)
            return
        if any(key.startswith("eval_") for key in logs):
            return
        row = self.row(state.global_step, logs)
        self.last_row = row
        if state.is_world_process_zero:
            append_jsonl(self.path, row)
            if state.global_step % self.every == 0:
                shown = " ".join(f"{k} {row[k]:.4g}" for k in self.headline if isinstance(row.get(k), (int, float)))
                logger.info("step %d/%d: %s", state.global_step, state.max_steps, shown)


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


def continue_adapter(trainer: Any, cfg: CRSConfig) -> None:
    """Start the trainer's fresh adapter from ``rl.init_adapter``'s weights (a checkpoint resumed later overrides them).

    Done after TRL wrapped the policy, not by handing TRL a trained PeftModel: TRL would then
    copy that adapter as the reference, and the KL would no longer be to the SFT policy."""
    if cfg.rl.init_adapter:
        load_adapter_weights(trainer.accelerator.unwrap_model(trainer.model), cfg.rl.init_adapter, cfg.rl.policy or cfg.model.name)


def start_or_resume(run_dir: Path, resume: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from (None: from step 0); the steps after it leave ``metrics.jsonl``."""
    checkpoint = resume_checkpoint(run_dir, resume, is_main)
    if resume and is_main:
        truncate_jsonl(run_dir / METRICS_FILE, checkpoint_step(checkpoint) if checkpoint else 0)
    return checkpoint


def finish(trainer: Any, tokenizer: Any, cfg: CRSConfig, run_dir: Path, policy_name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Save the policy like PPO does (``adapter/`` + ``crs_model.json``) and mark the run finished."""
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_run_model(model, tokenizer, run_dir, base_name=policy_name, kind="causal_lm", merge=cfg.model.lora.merge)
        mark_finished(run_dir, summary)
        logger.info("%s done: %s -> %s", cfg.rl.algorithm.upper(), summary.get("final"), run_dir)
    trainer.accelerator.wait_for_everyone()
    return summary


# --------------------------------------------------------------------------- GRPO and RLOO


def _online_trainer_class(algorithm: str) -> type:
    """TRL's GRPOTrainer or RLOOTrainer with crs's prompt tokenization and PPO's ``kl/sequence``."""
    from trl import GRPOTrainer, RLOOTrainer

    base = GRPOTrainer if algorithm == "grpo" else RLOOTrainer

    class CRSOnlineTrainer(base):  # type: ignore[misc, valid-type]
        crs_max_prompt_length = 256
        crs_fallback_template = "{role}: {content}\n"

        def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
            # crs's one prompt path (chat template, the last max_prompt_length tokens), as in PPO.
            if prompts and not isinstance(prompts[0], list):
                return super()._tokenize_prompts(prompts)
            ids = [encode_prompt(self.processing_class, p, self.crs_max_prompt_length, self.crs_fallback_template) for p in prompts]
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
                mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
                self._log_sequence_kl(self._crs_train_logps, inputs["ref_per_token_logps"], mask)
            return loss

    CRSOnlineTrainer.__name__ = CRSOnlineTrainer.__qualname__ = f"CRS{base.__name__}"
    return CRSOnlineTrainer


def online_config(cfg: CRSConfig, run_dir: Path, dtype: torch.dtype, reward_weights: list[float]) -> Any:
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
    )
    if rl.algorithm == "grpo":
        kwargs.update(
            scale_rewards=rl.grpo_scale_rewards,
            multi_objective_aggregation="normalize_then_sum" if rl.reward_normalization == "trl" else "sum_then_normalize",
        )
        return GRPOConfig(**kwargs)
    return RLOOConfig(normalize_advantages=rl.whiten_advantages, **kwargs)


def _check_online(cfg: CRSConfig) -> None:
    rl = cfg.rl
    if not cfg.model.lora.enabled and rl.kl_coef != 0:
        raise ConfigError(
            f"rl.algorithm={rl.algorithm} with full fine-tuning (model.lora.enabled: false) and rl.kl_coef > 0: TRL would load "
            "the reference from the base model's name, not the SFT policy; use LoRA (the reference is then the SFT policy "
            "with the adapter off) or rl.kl_coef: 0"
        )
    if rl.reward_normalization == "trl":
        from trl import GRPOConfig

        if "multi_objective_aggregation" not in GRPOConfig.__dataclass_fields__:
            raise ConfigError("rl.reward_normalization=trl needs TRL's GRPOConfig.multi_objective_aggregation (trl>=1.0): pip install -U trl")
        if rl.reward_clip is not None:
            logger.warning("rl.reward_clip=%s is not applied with rl.reward_normalization=trl (TRL normalises each source)", rl.reward_clip)
    ignored = [k for k, default in (("adaptive_kl", False), ("value_model", "head"), ("early_stop_kl", None)) if getattr(rl, k) != default]
    if ignored:
        logger.warning("rl.%s: PPO only, ignored by %s", ", rl.".join(ignored), rl.algorithm)


def prompt_dataset(prompts: list[Messages]) -> Any:
    """TRL's conversational prompt dataset (one ``prompt`` column of chat messages)."""
    from datasets import Dataset

    if not prompts:
        raise ConfigError("no training prompts (check data.source / data.split)")
    return Dataset.from_list([{"prompt": p} for p in prompts])


def build_online_trainer(
    cfg: CRSConfig, run_dir: Path, model: Any, peft_config: Any, tokenizer: Any, reward: CombinedReward, prompts: list[Messages]
) -> tuple[Any, StepMetricsCallback]:
    """TRL's GRPO or RLOO trainer (``rl.algorithm``) on ``reward``, with crs's callbacks; and its metrics callback.

    ``model`` is the policy (wrapped in a fresh adapter by TRL from ``peft_config``; None: full
    fine-tuning), ``tokenizer`` the policy's (left padding).
    """
    rl = cfg.rl
    # TRL's completions end at their first EOS: the model's and the tokenizer's (as TRL takes them).
    declared = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = {tokenizer.eos_token_id, *(declared if isinstance(declared, list) else [declared])} - {None}
    if rl.reward_normalization == "trl":
        funcs, weights = reward.as_trl_reward_funcs(sorted(eos_ids))
    else:
        funcs, weights = [reward.as_trl_reward_func(sorted(eos_ids))], [1.0]
    metrics_cb = StepMetricsCallback(
        run_dir / METRICS_FILE, ONLINE_COLUMNS, {"kl/coef": rl.kl_coef},
        ("reward/combined", "kl/sequence", "reply/length", "time/step"), cfg.run.logging_steps,
    )
    trainer_class = _online_trainer_class(rl.algorithm)
    trainer_class.crs_max_prompt_length = cfg.data.max_prompt_length
    trainer_class.crs_fallback_template = cfg.data.fallback_template
    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=online_config(cfg, run_dir, resolve_dtype(cfg.model.dtype), weights),
        train_dataset=prompt_dataset(prompts),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_cb, RewardStateCallback(reward), SealCheckpointCallback()],
    )
    if not isinstance(getattr(trainer, "_metrics", None), dict):  # where crs logs kl/sequence, as TRL logs its own
        raise ConfigError(f"TRL {installed_version('trl')}'s {type(trainer).__mro__[1].__name__} keeps no _metrics: pip install 'trl{tested_ranges().get('trl', '')}'")
    quiet_progress_bar(trainer)
    continue_adapter(trainer, cfg)
    if trainer.accelerator.num_processes > 1:
        reward.gather = trainer.accelerator.gather  # first-batch statistics from every process's replies
    return trainer, metrics_cb


def run_online_stage(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train the SFT policy with TRL's GRPO or RLOO on crs's combined reward; returns the summary."""
    require_trl(cfg, "GRPOTrainer" if cfg.rl.algorithm == "grpo" else "RLOOTrainer")
    _check_online(cfg)
    rl = cfg.rl
    run_dir = Path(run_dir)
    set_seed(cfg.run.seed)
    train_examples, _ = load_examples(cfg.data, kind="prompts", seed=cfg.run.seed)
    check_gold_sources(rl.rewards, [last_user_text(ex.prompt) for ex in train_examples], "rl.rewards", cfg.run.allow_gold_outside_demo)
    model, peft_config, policy_name, _ = load_policy(cfg)
    tokenizer = load_tokenizer(policy_name, cfg.model.cache_dir, padding_side="left")
    reward = CombinedReward.from_config(rl.rewards, cfg.model, rl.reward_clip, rl.missing_eos_penalty)
    trainer, metrics_cb = build_online_trainer(cfg, run_dir, model, peft_config, tokenizer, reward, [ex.prompt for ex in train_examples])
    is_main = trainer.is_world_process_zero()
    checkpoint = start_or_resume(run_dir, resume, is_main)
    if checkpoint is not None and (checkpoint / REWARD_STATE_FILE).is_file():
        reward.load_state_dict(json.loads((checkpoint / REWARD_STATE_FILE).read_text()))
    if is_main:
        logger.info(
            "%s: %d prompts, %d steps x %d replies (%d per prompt) on %d process(es), reward normalisation %s, rewards %s",
            rl.algorithm.upper(), len(train_examples), rl.steps, rl.batch_size, rl.group_size,
            trainer.accelerator.num_processes, rl.reward_normalization, reward.describe(),
        )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    last = metrics_cb.last_row
    summary = {
        "algorithm": rl.algorithm,
        "steps": trainer.state.global_step,
        "final": {k: last[k] for k in ("reward/combined", "kl/sequence", "reply/length", "reward/ended_with_eos") if k in last},
        "rewards": reward.describe(),
        "reward_normalization": rl.reward_normalization,
        "train_runtime": metrics_cb.train_summary.get("train_runtime"),
    }
    return finish(trainer, tokenizer, cfg, run_dir, policy_name, summary)
