"""What the Trainer-based stages share (SFT, reward models, and GRPO / RLOO / DPO on TRL's trainers).

One builder turns the ``train:`` and ``run:`` config blocks into ``TrainingArguments``;
two callbacks make the Trainer's outputs crash-safe: every checkpoint is sealed with a
manifest once fully written (:func:`crs.runs.seal_checkpoint`), so a ``kill -9`` mid-save
leaves a checkpoint that resume skips, and the JSON-lines log is truncated to the
checkpoint on resume, so no step is logged twice.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from crs.config import ConfigError, CRSConfig
from crs.io import append_jsonl, truncate_jsonl
from crs.runs import checkpoint_step, latest_checkpoint, seal_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAIN_LOG_FILE = "train_log.jsonl"
LOGS_DIR = "logs"  # <run>/logs: TensorBoard's event files, the same for every training stage
_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_to(report_to: str) -> None:
    """One line, before any model loads, when ``run.report_to`` needs a package that is not installed."""
    import importlib.util

    packages = _TRACKER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(name) for name in packages):
        extra = "pip install -e '.[tensorboard]'" if report_to == "tensorboard" else f"pip install {packages[0]}"
        raise ConfigError(
            f"run.report_to={report_to} needs the {packages[0]} package: {extra}, or set run.report_to: none"
        )


def common_arguments(cfg: CRSConfig, run_dir: Path, mixed_precision: torch.dtype | None) -> dict[str, Any]:
    """The Trainer arguments every training stage shares (SFT, reward models, TRL's RL trainers):
    checkpoints in ``<run_dir>/checkpoints``, seeds, reporting, precision, CPU or GPU."""
    cuda = torch.cuda.is_available()
    check_report_to(cfg.run.report_to)
    if cfg.run.report_to == "tensorboard":
        # transformers' TensorBoard callback takes its folder from this variable alone.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / LOGS_DIR)
    return dict(
        output_dir=str(run_dir / CHECKPOINT_DIR),
        report_to=cfg.run.report_to,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        bf16=mixed_precision == torch.bfloat16,
        fp16=mixed_precision == torch.float16,
        dataloader_pin_memory=cuda,  # pinning only helps host-to-GPU copies
        # On CPU transformers wants this said (for bf16), and else torchrun runs N independent trainings.
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,  # every trainable weight feeds the loss
        ddp_timeout=cfg.run.ddp_timeout,
    )


def training_arguments(
    cfg: CRSConfig, run_dir: Path, has_eval: bool, mixed_precision: torch.dtype | None = None
) -> TrainingArguments:
    """``TrainingArguments`` from the ``train:`` and ``run:`` blocks; checkpoints go to ``<run_dir>/checkpoints``.

    ``mixed_precision`` (bf16 / fp16) lets the Trainer autocast, and for fp16 scale the loss;
    None leaves precision to the caller (the reward-model trainer autocasts in its own loss).
    """
    t = cfg.train
    evaluate = has_eval and t.eval_steps > 0
    return TrainingArguments(
        **common_arguments(cfg, run_dir, mixed_precision),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.lr_scheduler,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=cfg.run.logging_steps,
        activation_checkpointing=cfg.model.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        remove_unused_columns=False,  # our batches carry their own keys (group sizes, targets, weights)
    )


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn from ``seed + epoch``: the same order again on
    resume, so the Trainer's skipping of the batches already trained lands where it stopped."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class CRSTrainer(Trainer):
    """transformers' Trainer, batching by length when ``train.group_by_length`` is on.

    ``train_lengths`` gives each training example's padded cost in any unit that orders them
    (tokens, characters); the Trainer itself could only read it from a ``input_ids`` key.
    """

    def __init__(self, *args: Any, train_lengths: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_lengths = train_lengths

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.args.train_sampling_strategy == "group_by_length" and self.train_lengths is not None:
            per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return SeededLengthGroupedSampler(per_step, self.train_lengths, self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)


class SealCheckpointCallback(TrainerCallback):
    """Seals each checkpoint the Trainer has finished writing (``on_save`` comes after the save)."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                seal_checkpoint(folder)


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log (losses, learning rate, eval metrics) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, {"step": state.global_step, **logs})


def resume_checkpoint(run_dir: Path, resume: bool, is_main: bool = True) -> Path | None:
    """The newest complete Trainer checkpoint to resume from (None: start from step 0).

    On resume the main process deletes torn checkpoints and truncates the training log to
    the checkpoint's step, so that the steps run again are logged once.
    """
    if not resume:
        return None
    checkpoint = latest_checkpoint(run_dir / CHECKPOINT_DIR, remove_torn=is_main)
    if is_main:
        truncate_jsonl(run_dir / TRAIN_LOG_FILE, checkpoint_step(checkpoint) if checkpoint else 0)
    logger.info("resuming from %s", checkpoint or "step 0 (no complete checkpoint saved yet)")
    return checkpoint


def whole_run_train_loss(state: Any, session_loss: float, checkpoint: Path | None) -> float:
    """The mean training loss over every step of the run, also when it was resumed.

    Trainer's ``training_loss`` averages only the steps of this session; the steps before
    the checkpoint come back from the logged losses (each a mean over its logging interval).
    Exact when the checkpoint step is a logging step (save_steps a multiple of logging_steps).
    """
    if checkpoint is None:
        return session_loss
    start = checkpoint_step(checkpoint)
    logged_sum, last_logged = 0.0, 0
    for row in state.log_history:
        if "loss" in row and row.get("step", 0) <= start:
            logged_sum += row["loss"] * (row["step"] - last_logged)
            last_logged = row["step"]
    session_steps = state.global_step - start
    return (logged_sum + session_loss * session_steps) / max(last_logged + session_steps, 1)


class StartMetricsCallback(TrainerCallback):
    """Measures the weights a training session starts from, once they are in place.

    ``on_train_begin`` runs after Trainer has loaded a resumed checkpoint's weights, so a
    resumed or extended run measures the state it continues from, not the freshly built
    model. A run that starts at step 0 also records the figures in the trainer state's
    log history under ``key`` (step 0), where every checkpoint keeps them for a resume
    (:func:`logged_before_training`).
    """

    def __init__(self, evaluate: Any, key: str) -> None:
        self.evaluate, self.key = evaluate, key
        self.metrics: Any = None  # what ``evaluate`` returned (a dict of metrics, a loss)
        self.step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.metrics, self.step = self.evaluate(), state.global_step
        if state.global_step == 0:
            state.log_history.append({self.key: self.metrics, "step": 0})


def logged_before_training(checkpoint: Path, key: str) -> Any:
    """A metric the run logged at step 0 (before training), read back from a checkpoint's state."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return next((row[key] for row in state.get("log_history", []) if row.get("step") == 0 and key in row), None)
