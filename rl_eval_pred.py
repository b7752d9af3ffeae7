"""Generate eval predictions (AlpacaEval format): python rl_eval_pred.py --config_subset eval_pred

The same as `crs predict ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["predict", *sys.argv[1:]])
