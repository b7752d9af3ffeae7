"""Supervised fine-tuning (LoRA by default): python sft_train.py --config_subset sft"""

from crs.cli import run_stage
from crs.sft import train_sft

if __name__ == "__main__":
    run_stage(train_sft, "Supervised fine-tuning of a causal LM on prompt/reply pairs (loss on replies only).")
