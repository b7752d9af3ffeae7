"""PPO on a weighted combination of reward models: python rl_train.py --config_subset rl_crs

Several processes: torchrun --nproc_per_node 2 rl_train.py --config_subset rl_crs
(or accelerate launch rl_train.py ...); each takes its share of every prompt batch.
"""

from crs.cli import run_stage
from crs.ppo import train_ppo

if __name__ == "__main__":
    run_stage(train_ppo, "PPO of the SFT policy on a weighted combination of reward models (RLHF).")
