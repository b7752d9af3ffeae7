"""Tiny randomly initialised models built from a config, for tests and quick trials.

They share the embedded SmolLM2 tokenizer (real chat template, real vocabulary) but
have a few hundred thousand parameters, so a training step takes milliseconds.
"""

from __future__ import annotations

from typing import Any

import torch


def tiny_llama_config(vocab_size: int, eos_token_id: int, pad_token_id: int, **overrides: Any) -> Any:
    """A 2-layer Llama config of hidden size 32."""
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_causal_lm(tokenizer: Any, seed: int = 0, **overrides: Any) -> Any:
    """A tiny Llama causal LM matching ``tokenizer``."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, **overrides)
    return LlamaForCausalLM(config)


def tiny_sequence_classifier(tokenizer: Any, seed: int = 0, num_labels: int = 1, **overrides: Any) -> Any:
    """A tiny Llama sequence classifier with ``num_labels`` outputs (one: a reward model)."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_llama_config(
        len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, num_labels=num_labels, **overrides
    )
    return LlamaForSequenceClassification(config)
