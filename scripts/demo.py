"""The whole pipeline on the embedded defaults, offline: `make demo` (the same as `crs demo`)."""

import sys

from crs.study.demo import run_demo

if __name__ == "__main__":
    run_demo(sys.argv[1:])
