"""Iterated online RLHF: python rl_online.py --config_subset rl_online_crs

Round 0 is an ordinary RL run; each later round samples the current policy's replies to
fresh prompts, has them labelled (crs's simulated annotator, or you: online.labeller=file),
continues training both reward models on them, and continues RL from the last policy.
Interrupted anywhere, the same command continues where it stopped. The same as `crs online ...`.
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["online", *sys.argv[1:]])
