"""LoRA: a quantized base prepared for training with crs's checkpointing choice, not peft's default."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_causal_lm

from crs.config import LoraConfig
from crs.models.lora import add_lora, prepare_quantized_base


def fake_quantized(model):
    """A model marked as bitsandbytes marks a 4-bit load (which itself needs CUDA)."""
    model.is_loaded_in_4bit = model.is_quantized = True
    return model


def checkpointing_layers(model) -> list[bool]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m.gradient_checkpointing for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_quantized_base_checkpoints_only_when_the_config_says_so(smol_tokenizer, checkpointing):
    """peft's k-bit preparation switches checkpointing on by default; crs passes model.gradient_checkpointing."""
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    model = add_lora(fake_quantized(tiny_causal_lm(smol_tokenizer)), lora, "causal_lm", checkpointing)
    assert checkpointing_layers(model) == [checkpointing] * 2
    plain = add_lora(tiny_causal_lm(smol_tokenizer), lora, "causal_lm", gradient_checkpointing=True)
    assert checkpointing_layers(plain) == [False, False]  # a plain base is left to the stage (the control)


def test_a_plain_base_is_not_prepared(smol_tokenizer):
    model = tiny_causal_lm(smol_tokenizer).to(torch.bfloat16)
    assert prepare_quantized_base(model, gradient_checkpointing=True) is model
    assert all(p.dtype == torch.bfloat16 and p.requires_grad for p in model.parameters())  # untouched
