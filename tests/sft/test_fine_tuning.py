"""SFT: a tiny model memorizes a small dataset; the adapter reloads and generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from stage_runs import EXAMPLES, record_arguments_and_loads, tiny_model_dir, trained_after_arguments

from crs.cli import run_stage
from crs.data.schema import user_prompt
from crs.models.decoding import SamplingSettings, generate_replies
from crs.models.loading import load_causal_lm, load_tokenizer
from crs.models.manifest import read_run_manifest
from crs.runs import is_finished
from crs.sft.fine_tuning import SFTCollator, encode_sft_examples, train_sft


def test_collator_masks_prompt_and_padding(smol_tokenizer) -> None:
    from crs.config import load_config
    from crs.data.schema import SFTExample

    cfg = load_config("sft")
    examples = [SFTExample(user_prompt("Hi"), "Hello!"), SFTExample(user_prompt("Name a colour please."), "Blue.")]
    batch = SFTCollator(smol_tokenizer.pad_token_id)(encode_sft_examples(smol_tokenizer, examples, cfg))
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all()  # padding never counts
    first = [t for t in labels[0].tolist() if t != -100]
    assert smol_tokenizer.decode(first) == "Hello!<|im_end|>"  # only the reply (and its end) counts


def run_tiny_sft(tmp_path: Path, base: Path, *extra: str) -> Path:
    run_stage(
        train_sft,
        "sft",
        [
            "--config_subset",
            "sft",
            "--set",
            f"run.output_dir={tmp_path / 'out'}",
            "--set",
            f"model.name={base}",
            "--set",
            "model.dtype=fp32",
            "--set",
            f"data.source={EXAMPLES}",
            "--set",
            "data.val_fraction=0.0",
            "--set",
            "train.max_steps=80",
            "--set",
            "train.lr_scheduler=constant",
            "--set",
            "train.learning_rate=0.01",
            "--set",
            "train.batch_size=5",
            "--set",
            "train.warmup_ratio=0.0",
            "--set",
            "run.logging_steps=5",
            "--set",
            "train.save_steps=20",
            *extra,
        ],
    )
    return tmp_path / "out" / "sft"


def test_full_sft_memorizes_and_reloads(tmp_path: Path, smol_tokenizer) -> None:
    base = tiny_model_dir(tmp_path, smol_tokenizer)
    run_dir = run_tiny_sft(tmp_path, base, "--set", "model.lora.enabled=false")
    assert is_finished(run_dir)
    history = json.loads((run_dir / "metrics.json").read_text())["log_history"]
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses[-1] < 0.5 * losses[0], losses  # it memorizes
    assert read_run_manifest(run_dir)["full_model"] is True
    assert (run_dir / "config.resolved.yaml").is_file() and list((run_dir / "checkpoints").glob("checkpoint-*"))

    model = load_causal_lm(str(run_dir))
    tokenizer = load_tokenizer(str(run_dir), padding_side="left")
    out = generate_replies(
        model, tokenizer, [user_prompt("What is 12 + 30?")], SamplingSettings(max_new_tokens=12), desc=None
    )
    assert "42" in out[0].text  # a memorized reply, from the reloaded adapter


@pytest.mark.slow
def test_sft_subset_on_embedded_smollm(tmp_path: Path) -> None:
    """The shipped `sft` subset on the embedded model, a few steps."""
    run_stage(
        train_sft,
        "sft",
        [
            "--config_subset",
            "sft",
            "--set",
            f"run.output_dir={tmp_path}",
            "--set",
            "train.max_steps=2",
            "--set",
            "train.batch_size=2",
            "--set",
            "train.eval_batch_size=4",
            "--set",
            "data.max_examples=8",
            "--set",
            "data.max_length=128",
            "--set",
            "data.max_prompt_length=64",
            "--set",
            "train.eval_steps=2",
        ],
    )
    run_dir = tmp_path / "sft"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    model = load_causal_lm(str(run_dir))
    assert model.config.num_hidden_layers == 30


def test_lora_sft_saves_a_loadable_adapter(tmp_path: Path, smol_tokenizer) -> None:
    base = tiny_model_dir(tmp_path, smol_tokenizer)
    run_dir = run_tiny_sft(tmp_path, base, "--set", "train.max_steps=10")
    manifest = read_run_manifest(run_dir)
    assert manifest == {"base": "../../tiny-base", "adapter": "adapter", "kind": "causal_lm", "full_model": False}
    from peft import AutoPeftModelForCausalLM

    # The adapter folder is a standard peft adapter: plain from_pretrained loads it.
    peft_model = AutoPeftModelForCausalLM.from_pretrained(run_dir / "adapter")
    adapter = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert adapter and any(p.abs().sum() > 0 for p in adapter.values())  # trained, not the zero init
    history = json.loads((run_dir / "metrics.json").read_text())["log_history"]
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses[-1] < losses[0]


def test_sft_measures_the_loss_before_training_once_training_has_begun(tmp_path: Path, smol_tokenizer, monkeypatch):
    from transformers import Trainer

    evaluate = Trainer.evaluate

    def refused_before_training(self, *args, **kwargs):
        # DeepSpeed outside ZeRO-3 refuses an evaluation before the Trainer has built its engine (in train()).
        if self.state.max_steps == 0:
            raise ValueError("ZeRO inference only makes sense with ZeRO Stage 3 - please adjust your config")
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", refused_before_training)
    base = tiny_model_dir(tmp_path, smol_tokenizer)
    run_dir = run_tiny_sft(tmp_path, base, "--set", "data.val_fraction=0.25", "--set", "train.max_steps=20")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first_eval = next(row for row in metrics["log_history"] if "eval_loss" in row)
    assert first_eval["step"] == 0 and metrics["eval_loss_before"] == first_eval["eval_loss"]  # the untrained model
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]  # and training moved it


@pytest.mark.parametrize("lora", ["true", "false"])
def test_sft_makes_its_training_arguments_before_it_loads_the_model(tmp_path: Path, smol_tokenizer, monkeypatch, lora):
    events = record_arguments_and_loads(monkeypatch)
    base = tiny_model_dir(tmp_path, smol_tokenizer)
    run_tiny_sft(tmp_path, base, "--set", "train.max_steps=1", "--set", f"model.lora.enabled={lora}")
    assert trained_after_arguments(events), events  # under ZeRO-3 it then loads partitioned
