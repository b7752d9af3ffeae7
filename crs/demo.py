"""The whole pipeline on the embedded defaults, offline: `make demo` or `crs demo`.

SFT -> preference RM -> absolute RM -> three PPO runs (preference, absolute, combined)
-> predictions -> scoring. Each stage runs as its own `crs` command, as a user would type it.
A finished stage is skipped and an interrupted one resumed, so re-running after an
interruption picks up where it stopped. Ends by printing the report's main table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from crs.config import load_config
from crs.report import main_table
from crs.runs import is_finished, run_state

# (crs command, config subset), in order.
PIPELINE = [
    ("sft", "sft"),
    ("rm", "rm_preference"),
    ("rm", "rm_absolute"),
    ("rl", "rl_preference"),
    ("rl", "rl_absolute"),
    ("rl", "rl_crs"),
    ("predict", "eval_pred"),
    ("score", "eval_rewarding"),
]


def run_demo(argv: list[str] | None = None) -> None:
    """Run every stage not yet finished, in order, then print the report's main table."""
    parser = argparse.ArgumentParser(prog="crs demo", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    started = time.time()
    for number, (command_name, subset) in enumerate(PIPELINE, start=1):
        run_dir = load_config(subset).run_dir
        header = f"[{number}/{len(PIPELINE)}] crs {command_name} --config_subset {subset}"
        if is_finished(run_dir):
            print(f"{header}: finished earlier ({run_dir}), skipped", flush=True)
            continue
        # Each stage in its own process, as a user would run it (and its memory is freed after).
        command = [sys.executable, "-m", "crs", command_name, "--config_subset", subset]
        if run_state(run_dir) is not None:
            command.append("--resume")  # an interrupted run continues from its last checkpoint
        print(f"\n{header}  (elapsed {time.time() - started:.0f} s)", flush=True)
        result = subprocess.run(command)
        if result.returncode != 0:
            sys.exit(f"stage {subset} failed (exit {result.returncode}); fix it and re-run `make demo` (or `crs demo`) to continue")
    results = json.loads((load_config("eval_rewarding").run_dir / "results.json").read_text())
    print(f"\nDemo finished in {time.time() - started:.0f} s. Main table (gold judge):\n")
    print(main_table(results, results["judge"]))
    print(f"\nReport: {load_config('eval_rewarding').run_dir / 'report.md'}")
