"""The benchmarks' own arithmetic: what benchmarks/ppo_floor.py counts is what the models hold."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import torch

from crs.config import LoraConfig
from crs.models.loading import add_lora
from tests.tiny import tiny_llama_config

# benchmarks/ is a folder of scripts, not a package.
ppo_floor = SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "ppo_floor.py")))


def test_the_floor_counts_the_models_weights_and_its_lora_adapter() -> None:
    from transformers import LlamaForCausalLM

    # Uneven sizes, so a q/k/v or gate/up/down mix-up changes the count.
    config = tiny_llama_config(vocab_size=101, eos_token_id=0, pad_token_id=0, hidden_size=48, intermediate_size=80,
                               num_attention_heads=6, num_key_value_heads=2, head_dim=12, num_hidden_layers=3)
    model = LlamaForCausalLM(config)
    shape = ppo_floor.shape_of(config)
    linears = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert shape.linear_weights == linears
    assert shape.head_weights == model.lm_head.weight.numel()
    peft_model = add_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear"), "causal_lm")
    assert shape.lora_weights(4) == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_the_floor_of_each_phase_grows_with_its_work() -> None:
    config = tiny_llama_config(vocab_size=1000, eos_token_id=0, pad_token_id=0)
    shape = ppo_floor.shape_of(config)
    short = ppo_floor.phase_floors(shape, [10, 12], 8, 4, flops=1e9, bandwidth=1e9, bytes_per_weight=2)
    longer = ppo_floor.phase_floors(shape, [10, 12], 16, 4, flops=1e9, bandwidth=1e9, bytes_per_weight=2)
    assert all(longer[phase] > short[phase] > 0 for phase in short)
    # Decoding is bound by weight reads once the bandwidth is the bottleneck.
    starved = ppo_floor.phase_floors(shape, [10, 12], 8, 4, flops=1e9, bandwidth=1e3, bytes_per_weight=2)
    weights = shape.linear_weights + shape.head_weights
    assert starved["generation"] >= 7 * weights * 2 / 1e3
