"""What crs's stages on TRL's trainers share: the TRL check, the policy, the arguments, callbacks, outputs.

:mod:`crs.rl.grpo_rloo` (GRPO, RLOO) and :mod:`crs.rl.dpo` (DPO) build on it, so that every
TRL run is comparable with a PPO run: the same SFT policy with a fresh LoRA adapter of
``model.lora`` (the reference is that policy with the adapter off), the ``rl.*`` optimisation
keys, ``metrics.jsonl`` with PPO's column names where the meaning is the same, sealed
``checkpoints/checkpoint-N``, ``adapter/`` + ``crs_model.json`` and ``run_state.json``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from crs.config import ConfigError, CRSConfig
from crs.dependencies import installed_version, require_tested, tested_ranges
from crs.io import append_jsonl, truncate_jsonl
from crs.models.hf_trainer import common_arguments, resume_checkpoint
from crs.models.loading import load_causal_lm
from crs.models.lora import load_adapter_weights, prepare_quantized_base
from crs.models.saving import plain_base_before_training, save_run_model
from crs.models.sharding import gathered_state_dict
from crs.processes import rank_and_world
from crs.runs import RL_LENGTH_KEYS, checkpoint_step, mark_finished

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"

# The private TRL methods crs overrides, with the parameters it relies on. TRL calls them
# itself, so a rename would raise nothing: the override would just stop being called.
# Why each stays (TRL 1.16 has no public way to do the same): docs/optimisers.md#trl-internals.
_GRPO_RLOO_OVERRIDES = {
    "_tokenize_prompts": ("prompts",),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep", "compute_entropy"),
    "_generate_and_score_completions": ("inputs",),
    "_compute_loss": ("model", "inputs"),
}
TRL_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "GRPOTrainer": _GRPO_RLOO_OVERRIDES,
    "RLOOTrainer": _GRPO_RLOO_OVERRIDES,
    "DPOTrainer": {"_prepare_dataset": ("dataset", "processing_class", "args", "dataset_name")},
}


def require_trl(cfg: CRSConfig, trainer_name: str) -> str:
    """TRL's version, once it is known to carry what crs builds on; else a one-line ConfigError.

    TRL outside the tested range stops the run unless ``run.allow_untested_versions``; a
    trainer without a method crs overrides (with the parameters crs relies on) always does.
    """
    version = installed_version("trl")
    if version is None:
        raise ConfigError(f"rl.algorithm grpo, rloo and dpo run on TRL: {_trl_install_hint()}")
    require_tested("trl", "crs overrides private methods of its trainers", cfg.run.allow_untested_versions)
    import trl

    trainer = getattr(trl, trainer_name)
    for method, params in TRL_OVERRIDES[trainer_name].items():
        found = getattr(trainer, method, None)
        if found is None or not _accepts(found, params):
            raise ConfigError(
                f"TRL {version}'s {trainer_name} has no {method}({', '.join(params)}), which crs overrides: "
                f"{_trl_install_hint()} (the versions crs was tested with)"
            )
    return version


def require_trl_metrics(trainer: Any) -> None:
    """A built TRL trainer keeps its ``_metrics`` dict, where crs logs ``kl/sequence`` beside TRL's own; else a
    ConfigError."""
    if not isinstance(getattr(trainer, "_metrics", None), dict):
        raise ConfigError(
            f"TRL {installed_version('trl')}'s {type(trainer).__mro__[1].__name__} keeps no _metrics: "
            f"{_trl_install_hint()}"
        )


def _trl_install_hint() -> str:
    return f"pip install 'trl{tested_ranges().get('trl', '')}'"


def _accepts(method: Callable[..., Any], params: tuple[str, ...]) -> bool:
    """Whether ``method`` takes each of ``params`` by name (a ``**kwargs`` takes any)."""
    signature = inspect.signature(method).parameters
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()) or set(params) <= set(signature)


def peft_lora_config(cfg: CRSConfig) -> Any:
    """``model.lora`` as the peft config TRL wraps the policy with (as :func:`crs.models.lora.add_lora` would)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    lora = cfg.model.lora
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=TaskType.CAUSAL_LM,
    )


class Policy(NamedTuple):
    """The policy a TRL stage trains, as :func:`load_policy` loads it."""

    model: Any
    peft_config: Any  # the fresh adapter TRL wraps the model with; None: full fine-tuning
    name: str  # rl.policy or model.name: the tokenizer's and the saved run's base
    plain_base: str | None  # where a LoRA policy loaded from (plain_base_before_training), named by the adapter


def plain_policy_base(cfg: CRSConfig) -> str | None:
    """Where a LoRA policy loads from, resolved before the stage's config exists (None: full fine-tuning)."""
    return plain_base_before_training(cfg.model, "causal_lm", cfg.rl.policy or cfg.model.name)


def load_policy(cfg: CRSConfig, plain_base: str | None = None) -> Policy:
    """The SFT policy (adapter merged in), the peft config to train (None: full fine-tuning), its name, its plain base.

    LoRA: the base in ``model.dtype`` (the adapter is fp32, peft's default), read from ``plain_base``
    (:func:`plain_policy_base`); full fine-tuning: fp32 weights, as crs's other stages. Loaded as the model
    the Trainer trains: call it once the stage's TRL config exists, so that ZeRO-3 partitions it as it loads.
    """
    policy_name = cfg.rl.policy or cfg.model.name
    if cfg.model.lora.enabled:
        model = load_causal_lm(plain_base or policy_name, cfg.model, to_train=True)
        model = prepare_quantized_base(model, cfg.model.gradient_checkpointing)
        return Policy(model, peft_lora_config(cfg), policy_name, plain_base)
    model = load_causal_lm(policy_name, cfg.model, dtype=torch.float32, to_train=True)
    return Policy(model, None, policy_name, None)


def per_device_batch(cfg: CRSConfig, what: str) -> int:
    """``rl.batch_size`` over processes and gradient accumulation (a ConfigError when it does not divide)."""
    world = rank_and_world()[1]  # torchrun and accelerate launch set it
    share = world * cfg.rl.gradient_accumulation_steps
    if cfg.rl.batch_size % share:
        raise ConfigError(
            f"rl.batch_size={cfg.rl.batch_size} {what} cannot be shared out among {world} process(es) x "
            f"rl.gradient_accumulation_steps={cfg.rl.gradient_accumulation_steps}: make it a multiple of {share}"
        )
    return cfg.rl.batch_size // share


def trainer_arguments(cfg: CRSConfig, run_dir: Path, dtype: torch.dtype, per_device: int) -> dict[str, Any]:
    """What every TRL config shares: :func:`crs.models.hf_trainer.common_arguments` (autocast to
    ``model.dtype``, as SFT; fp32: none) with the ``rl.*`` optimisation keys layered on it."""
    rl = cfg.rl
    return dict(
        **common_arguments(cfg, run_dir, dtype),
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
        gradient_checkpointing=cfg.model.gradient_checkpointing,  # TRL's default is True
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
        self,
        path: Path,
        columns: dict[str, str],
        constants: dict[str, float],
        headline: tuple[str, ...],
        every: int,
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


def continue_adapter(trainer: Any, cfg: CRSConfig) -> None:
    """Start the trainer's fresh adapter from ``rl.init_adapter``'s weights (a checkpoint resumed later overrides them).

    Done after TRL wrapped the policy, not by handing TRL a trained PeftModel: TRL would then
    copy that adapter as the reference, and the KL would no longer be to the SFT policy."""
    if cfg.rl.init_adapter:
        load_adapter_weights(
            trainer.accelerator.unwrap_model(trainer.model), cfg.rl.init_adapter, cfg.rl.policy or cfg.model.name
        )


def start_or_resume(run_dir: Path, resume: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from (None: from step 0); the steps after it leave ``metrics.jsonl``."""
    checkpoint = resume_checkpoint(run_dir, resume, is_main)
    if resume and is_main:
        truncate_jsonl(run_dir / METRICS_FILE, checkpoint_step(checkpoint) if checkpoint else 0)
    return checkpoint


def finish(
    trainer: Any, tokenizer: Any, cfg: CRSConfig, run_dir: Path, policy: Policy, summary: dict[str, Any]
) -> dict[str, Any]:
    """Save the policy like PPO does (``adapter/`` + ``crs_model.json``) and mark the run finished.

    Called on every process: a sharded policy's weights are gathered from all of them first."""
    whole = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        merge = cfg.model.lora.merge
        save_run_model(model, tokenizer, run_dir, policy.name, "causal_lm", merge, whole, policy.plain_base)
        mark_finished(run_dir, summary, trainer.state.global_step, RL_LENGTH_KEYS)
        logger.info("%s done: %s -> %s", cfg.rl.algorithm.upper(), summary.get("final"), run_dir)
    trainer.accelerator.wait_for_everyone()
    return summary
