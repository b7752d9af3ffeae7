"""Score predictions and compare models: python rl_eval_rewarding.py --config_subset eval_rewarding

The same as `crs score ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["score", *sys.argv[1:]])
