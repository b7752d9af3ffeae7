"""A best-of-n pool: python bon_pool.py --config_subset bon_pool

The same as `crs pool ...` (crs/cli.py).
"""

import sys

from crs.cli import main

if __name__ == "__main__":
    main(["pool", *sys.argv[1:]])
