"""Supervised fine-tuning (LoRA by default): python sft_train.py --config_subset sft

The same as `crs sft ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["sft", *sys.argv[1:]])
