"""PPO on a weighted combination of reward models: python rl_train.py --config_subset rl_crs

Several processes: torchrun --nproc_per_node 2 rl_train.py --config_subset rl_crs
(or accelerate launch rl_train.py ...); each takes its share of every prompt batch.
The same as `crs rl ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["rl", *sys.argv[1:]])
