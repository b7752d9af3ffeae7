"""The ``model`` section: which model a stage loads and how, with its LoRA adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from crs.config.fields import FRACTION, Rule, at_least


@dataclass
class LoraConfig:
    """LoRA adapter settings (peft)."""

    enabled: bool = field(default=True, metadata={"help": "Train a LoRA adapter; false: full fine-tuning."})
    r: int = field(
        default=16,
        metadata={"help": "LoRA rank.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    alpha: int = field(
        default=32,
        metadata={"help": "LoRA scaling alpha.", "rule": Rule(at_least(1), "an integer >= 1")},
    )
    dropout: float = field(
        default=0.05,
        metadata={"help": "Dropout on the LoRA branch.", "rule": Rule(FRACTION, "in [0, 1)")},
    )
    target_modules: Any = field(
        default="all-linear",
        metadata={
            "help": "`all-linear` (peft's shorthand: every linear layer except the output head), or a list of module "
            "names."
        },
    )
    merge: bool = field(
        default=False,
        metadata={"help": "Also save `<run>/merged`: a plain model with the adapter folded into the base."},
    )


@dataclass
class ModelConfig:
    """Which model to load and how: name, precision, quantization, LoRA."""

    name: str = field(
        default="embedded:smollm2-135m-instruct",
        metadata={
            "help": "An embedded name (`embedded:smollm2-135m-instruct`, `embedded:minilm-l6`: no network needed), a "
            "crs run directory (its `crs_model.json` names base and adapter), a local model directory in the Hugging "
            "Face layout, or a hub id."
        },
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata={
            "help": "`auto` picks bf16 where the hardware computes it natively (a CUDA GPU of compute capability 8.0 "
            "or later, or a CPU with AMX / avx512_bf16), fp16 on an older CUDA GPU, else fp32, and logs what it "
            "picked. fp16 training scales the loss (docs/models.md). With LoRA the frozen base is held in this "
            "precision, the trainable parameters in fp32."
        },
    )
    quantization: Literal["none", "8bit", "4bit"] = field(
        default="none",
        metadata={
            "help": "Load the base through bitsandbytes: `8bit`, or `4bit` (NF4 with double quantization: QLoRA). "
            "Needs a CUDA GPU; without one the run stops before training."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where embedded GGUF models are dequantized on first use; null: `$CRS_CACHE_DIR`, else "
            "`~/.cache/crs`."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for memory in training forwards."}
    )
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapter settings."})
