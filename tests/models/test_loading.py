"""Model resolver: embedded models and their cache, errors, dtype, quantization, LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_causal_lm

from crs.config import LoraConfig
from crs.models.loading import load_causal_lm, load_sequence_classifier, load_tokenizer, save_run_model
from crs.models.lora import add_lora
from crs.models.model_error import ModelError


def test_same_name_loads_as_policy_or_reward_model() -> None:
    rm = load_sequence_classifier("embedded:minilm-l6")  # an encoder: a reward model only
    assert rm.config.num_labels == 1
    policy = load_causal_lm("embedded:smollm2-135m-instruct", dtype=torch.bfloat16)
    assert policy.dtype == torch.bfloat16
    smol_rm = load_sequence_classifier("embedded:smollm2-135m-instruct")
    tok = load_tokenizer("embedded:smollm2-135m-instruct")
    out = smol_rm(**tok(["hello there"], return_tensors="pt"))
    assert out.logits.shape == (1, 1)


def test_an_encoder_as_policy_is_refused_before_its_weights_load() -> None:
    with pytest.raises(
        ModelError, match=r"is an encoder \(model_type 'bert', BertModel\): a policy must be a decoder-only causal LM"
    ):
        load_causal_lm("embedded:minilm-l6")


def test_lora_adapter_saves_reloads_and_merges(tmp_path: Path, smol_tokenizer) -> None:
    base_dir = tmp_path / "tiny"
    tiny_causal_lm(smol_tokenizer).save_pretrained(base_dir)
    smol_tokenizer.save_pretrained(base_dir)
    model = add_lora(load_causal_lm(str(base_dir)), LoraConfig(r=4, alpha=8), "causal_lm")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with torch.no_grad():  # make the adapter do something visible
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    model.eval()  # LoRA dropout off
    ids = torch.tensor([[1, 2, 3, 4]])
    expected = model(input_ids=ids).logits
    run = tmp_path / "run"
    save_run_model(model, smol_tokenizer, run, str(base_dir), "causal_lm", merge=True)
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "merged" / "config.json").is_file()
    reloaded = load_causal_lm(str(run))  # base + adapter, merged
    assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-4)
    merged = load_causal_lm(str(run / "merged"))
    assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
