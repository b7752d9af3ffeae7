"""Reward-model training: python rm_train.py --config_subset rm_preference (or rm_absolute)"""

from crs.cli import run_stage
from crs.reward_model import train_reward_model

if __name__ == "__main__":
    run_stage(
        train_reward_model,
        "Train a reward model on rankings (pairwise Bradley-Terry loss) or absolute scores (rm.loss).",
    )
