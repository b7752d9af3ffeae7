"""A best-of-n study on one pool: python bon_study.py --config_subset bon_crs

The same as `crs bon ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["bon", *sys.argv[1:]])
