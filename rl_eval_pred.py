"""Generate eval predictions (AlpacaEval format): python rl_eval_pred.py --config_subset eval_pred"""

from crs.cli import run_stage
from crs.eval_stages import predict

if __name__ == "__main__":
    run_stage(predict, "Generate replies to the eval prompts with every configured model (one JSON per model).")
