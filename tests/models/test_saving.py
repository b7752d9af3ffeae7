"""Saving a run's model: a LoRA adapter saved, reloaded through its run, and merged."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import tiny_causal_lm

from crs.config import LoraConfig
from crs.models.loading import load_causal_lm
from crs.models.lora import add_lora
from crs.models.saving import save_run_model


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
