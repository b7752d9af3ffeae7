"""Reward-model training: python rm_train.py --config_subset rm_preference (or rm_absolute)

The same as `crs rm ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["rm", *sys.argv[1:]])
