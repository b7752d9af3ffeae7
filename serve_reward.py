"""Serve an RL subset's combined reward over HTTP: python serve_reward.py --config_subset rl_crs

Loads the subset's reward sources and combination once (rl.rewards, rl.combine, rl.reward_clip,
rl.missing_eos_penalty) and answers OpenRLHF's remote reward-model requests (POST /get_reward) on
serve.host:serve.port; GET /health says what it serves. verl calls the same reward through
crs/serve/verl_reward.py. docs/past_one_machine.md.
The same as `crs serve-reward ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["serve-reward", *sys.argv[1:]])
