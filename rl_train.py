"""RL of the SFT policy on a weighted combination of reward models: python rl_train.py --config_subset rl_crs

rl.algorithm picks the optimiser: ppo (crs's own, the default), grpo or rloo (TRL's, on the
same combined reward: --config_subset rl_grpo_crs / rl_rloo_crs) or dpo (TRL's, offline, on
preference pairs: --config_subset dpo).

Several processes: torchrun --nproc_per_node 2 rl_train.py --config_subset rl_crs
(or accelerate launch rl_train.py ...); each takes its share of every batch.
The same as `crs rl ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["rl", *sys.argv[1:]])
