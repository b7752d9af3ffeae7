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

from crs.config import CRSConfig, TrainConfig
from crs.data.schema import SFTExample
from crs.formatting import Encoded, encode_prompt_reply, pad_batch
from crs.io import write_json_atomic
from crs.models import add_lora, load_causal_lm, load_tokenizer, resolve_dtype, save_run_model, upcast_trainable
from crs.runs import latest_checkpoint, mark_finished, set_seed

logger = logging.getLogger("crs.sft")


def encode_sft_examples(tokenizer: Any, examples: list[SFTExample], cfg: CRSConfig) -> list[Encoded]:
    """Tokenize examples with the shared prompt+reply path."""
    data = cfg.data
    return [
        encode_prompt_reply(tokenizer, ex.prompt, ex.reply, data.max_length, data.max_prompt_length, data.fallback_template)
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


def training_arguments(train: TrainConfig, cfg: CRSConfig, output_dir: Path, half: torch.dtype | None, has_eval: bool) -> Any:
    """transformers TrainingArguments from the ``train:`` and ``run:`` blocks."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        num_train_epochs=train.num_epochs,
        max_steps=train.max_steps,
        warmup_steps=train.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        lr_scheduler_type=train.lr_scheduler,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        logging_steps=cfg.run.logging_steps,
        report_to=[] if cfg.run.report_to == "none" else [cfg.run.report_to],
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        bf16=half == torch.bfloat16,
        use_cpu=not torch.cuda.is_available(),  # transformers wants this said for bf16 on a CPU
        fp16=half == torch.float16,
        activation_checkpointing=cfg.model.gradient_checkpointing,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )


def load_trainable_causal_lm(cfg: CRSConfig) -> tuple[Any, torch.dtype]:
    """The policy to fine-tune: LoRA on a half-precision base, or full fine-tuning in fp32.

    Returns the model and the autocast dtype (None-like fp32 means no autocast).
    """
    dtype = resolve_dtype(cfg.model.dtype)
    if cfg.model.lora.enabled:
        model = load_causal_lm(cfg.model.name, cfg.model)
        model = add_lora(model, cfg.model.lora, "causal_lm")
    else:
        # Full fine-tuning keeps fp32 master weights; forwards still run under autocast.
        model = load_causal_lm(cfg.model.name, cfg.model, dtype=torch.float32)
        upcast_trainable(model)
    return model, dtype


def train_sft(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run the SFT stage into ``run_dir``; returns the final metrics."""
    from transformers import Trainer

    from crs.data import load_examples

    set_seed(cfg.run.seed)
    train_examples, val_examples = load_examples(cfg.data, "sft", cfg.run.seed)
    logger.info("SFT examples: %d train, %d validation", len(train_examples), len(val_examples))
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    model, dtype = load_trainable_causal_lm(cfg)
    train_set = encode_sft_examples(tokenizer, train_examples, cfg)
    val_set = encode_sft_examples(tokenizer, val_examples, cfg)
    half = dtype if dtype != torch.float32 else None
    args = training_arguments(cfg.train, cfg, run_dir / "checkpoints", half, has_eval=bool(val_set))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=SFTCollator(tokenizer.pad_token_id),
    )
    metrics: dict[str, Any] = {}
    if val_set:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    checkpoint = latest_checkpoint(run_dir / "checkpoints") if resume else None
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    metrics["train_loss"] = result.training_loss
    metrics["steps"] = trainer.state.global_step
    if val_set:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
        metrics["eval_perplexity_after"] = math.exp(min(metrics["eval_loss_after"], 50))
    if trainer.is_world_process_zero():
        save_run_model(model, tokenizer, run_dir, cfg.model.name, "causal_lm", merge=cfg.model.lora.merge)
        write_json_atomic(run_dir / "metrics.json", {**metrics, "log_history": trainer.state.log_history})
        mark_finished(run_dir, metrics)
        logger.info("SFT done: %s -> %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}, run_dir)
    return metrics
