"""The whole pipeline on the embedded defaults, offline: `make demo`.

SFT -> preference RM -> absolute RM -> three PPO runs (preference, absolute, combined)
-> predictions -> scoring. Each stage is its own script run, as a user would type it.
A finished stage is skipped and an interrupted one resumed, so re-running after an
interruption picks up where it stopped. Ends by printing the report's main table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crs.config import load_config  # noqa: E402
from crs.runs import is_finished, run_state  # noqa: E402

STAGES = [
    ("sft_train.py", "sft"),
    ("rm_train.py", "rm_preference"),
    ("rm_train.py", "rm_absolute"),
    ("rl_train.py", "rl_preference"),
    ("rl_train.py", "rl_absolute"),
    ("rl_train.py", "rl_crs"),
    ("rl_eval_pred.py", "eval_pred"),
    ("rl_eval_rewarding.py", "eval_rewarding"),
]


def main() -> None:
    """Run every stage not yet finished, in order."""
    started = time.time()
    for number, (script, subset) in enumerate(STAGES, start=1):
        run_dir = load_config(subset).run_dir
        header = f"[{number}/{len(STAGES)}] {script} --config_subset {subset}"
        if is_finished(run_dir):
            print(f"{header}: finished earlier ({run_dir}), skipped", flush=True)
            continue
        command = [sys.executable, script, "--config_subset", subset]
        if run_state(run_dir) is not None:
            command.append("--resume")  # an interrupted run continues from its last checkpoint
        print(f"\n{header}  (elapsed {time.time() - started:.0f} s)", flush=True)
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0:
            sys.exit(f"stage {subset} failed (exit {result.returncode}); fix it and re-run `make demo` to continue")
    results = json.loads((load_config("eval_rewarding").run_dir / "results.json").read_text())
    from crs.report import main_table

    print(f"\nDemo finished in {time.time() - started:.0f} s. Main table (gold judge):\n")
    print(main_table(results, results["judge"]))
    print(f"\nReport: {load_config('eval_rewarding').run_dir / 'report.md'}")


if __name__ == "__main__":
    main()
