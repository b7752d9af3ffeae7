"""Supervised fine-tuning (``sft_train.py``): learn replies, loss on reply tokens only.

transformers' ``Trainer`` does the loop (progress bar, eval, checkpoints, resume,
report_to, multi-process under accelerate/torchrun); crs supplies the model (LoRA by
default), the examples tokenized by the shared formatting path, and the collator.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from crs.config import CRSConfig
from crs.data import load_examples
from crs.data.schema import SFTExample
from crs.io import write_json_atomic
from crs.models.formatting import Encoded, encode_prompt_reply, pad_batch
from crs.models.hf_trainer import (
    TRAIN_LOG_FILE,
    CRSTrainer,
    JsonlLogCallback,
    SealCheckpointCallback,
    StartMetricsCallback,
    logged_before_training,
    resume_checkpoint,
    training_arguments,
    whole_run_train_loss,
)
from crs.models.loading import load_causal_lm, load_tokenizer
from crs.models.lora import add_lora
from crs.models.precision import resolve_dtype, upcast_trainable
from crs.models.saving import plain_base_before_training, save_run_model
from crs.models.sharding import gathered_state_dict
from crs.processes import is_main_process
from crs.runs import TRAIN_LENGTH_KEYS, mark_finished, set_seed

logger = logging.getLogger(__name__)

BEFORE_KEY = "eval_loss_before"  # metrics.json's key, and the log-history row a checkpoint keeps it in


def encode_sft_examples(tokenizer: Any, examples: list[SFTExample], cfg: CRSConfig) -> list[Encoded]:
    """Tokenize examples with the shared prompt+reply path."""
    data = cfg.data
    return [
        encode_prompt_reply(
            tokenizer, ex.prompt, ex.reply, data.max_length, data.max_prompt_length, data.fallback_template
        )
        for ex in examples
    ]


class SFTCollator:
    """Right-pads a batch; labels are -100 on prompt and padding tokens."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        ids, attention = pad_batch([e.input_ids for e in batch], self.pad_token_id)
        labels, _ = pad_batch([e.labels for e in batch], -100)
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(attention),
            "labels": torch.tensor(labels),
        }


def load_trainable_causal_lm(cfg: CRSConfig, plain_base: str | None = None) -> Any:
    """The policy to fine-tune: LoRA on a half-precision base (loaded from ``plain_base`` when given:
    :func:`crs.models.saving.plain_base_before_training`), or full fine-tuning in fp32.
    """
    if cfg.model.lora.enabled:
        model = load_causal_lm(plain_base or cfg.model.name, cfg.model, to_train=True)
        model = add_lora(model, cfg.model.lora, "causal_lm", cfg.model.gradient_checkpointing)
    else:
        # Full fine-tuning keeps fp32 master weights; forwards still run under autocast.
        model = load_causal_lm(cfg.model.name, cfg.model, dtype=torch.float32, to_train=True)
        upcast_trainable(model)
    return model


def train_sft(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run the SFT stage into ``run_dir``; returns the final metrics."""

    set_seed(cfg.run.seed)
    train_examples, val_examples = load_examples(cfg.data, "sft", cfg.run.seed)
    logger.info("SFT examples: %d train, %d validation", len(train_examples), len(val_examples))
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    dtype = resolve_dtype(cfg.model.dtype)
    plain_base = plain_base_before_training(cfg.model, "causal_lm")
    half = dtype if dtype != torch.float32 else None
    # Before the model loads: under ZeRO-3 the arguments' DeepSpeed config makes it load partitioned.
    args = training_arguments(cfg, run_dir, has_eval=bool(val_examples), mixed_precision=half)
    model = load_trainable_causal_lm(cfg, plain_base)
    train_set = encode_sft_examples(tokenizer, train_examples, cfg)
    val_set = encode_sft_examples(tokenizer, val_examples, cfg)
    checkpoint = resume_checkpoint(run_dir, resume, is_main_process())
    before = logged_before_training(checkpoint, BEFORE_KEY) if checkpoint and val_set else None

    def loss_before() -> float:
        # Measured once training has begun, as the RM stage does: DeepSpeed refuses to evaluate before its
        # engine exists outside ZeRO-3. A resumed run logged it before its first step: not measured twice.
        return before if before is not None else trainer.evaluate()["eval_loss"]

    start = StartMetricsCallback(loss_before, BEFORE_KEY)
    trainer = CRSTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        train_lengths=[len(e.input_ids) for e in train_set],
        eval_dataset=val_set or None,
        data_collator=SFTCollator(tokenizer.pad_token_id),
        callbacks=[
            SealCheckpointCallback(),
            JsonlLogCallback(run_dir / TRAIN_LOG_FILE),
            *([start] if val_set else []),
        ],
    )
    metrics: dict[str, Any] = {}
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if val_set:
        metrics[BEFORE_KEY] = start.metrics
    metrics["train_loss"] = whole_run_train_loss(trainer.state, result.training_loss, checkpoint)
    metrics["steps"] = trainer.state.global_step
    if val_set:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
        metrics["eval_perplexity_after"] = math.exp(min(metrics["eval_loss_after"], 50))
    whole = gathered_state_dict(trainer.accelerator, trainer.model_wrapped)  # every process: a collective
    if trainer.is_world_process_zero():
        save_run_model(model, tokenizer, run_dir, cfg.model.name, "causal_lm", cfg.model.lora.merge, whole, plain_base)
        write_json_atomic(run_dir / "metrics.json", {**metrics, "log_history": trainer.state.log_history})
        mark_finished(run_dir, metrics, trainer.state.global_step, TRAIN_LENGTH_KEYS)
        logger.info("SFT done: %s -> %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}, run_dir)
    return metrics
