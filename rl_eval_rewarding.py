"""Score predictions and compare models: python rl_eval_rewarding.py --config_subset eval_rewarding"""

from crs.cli import run_stage
from crs.eval_stages import score_predictions

if __name__ == "__main__":
    run_stage(
        score_predictions,
        "Score predictions with reward models, combined rewards and the gold judge; write win rates and a report.",
    )
