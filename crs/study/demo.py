"""The whole pipeline on the embedded defaults, offline: `make demo` or `crs demo`.

SFT, the preference RM and the absolute RM -> three PPO runs (preference, absolute,
combined) -> predictions -> scoring. Each stage runs as its own `crs` command, as a user
would type it. A finished stage is skipped and an interrupted one resumed, so re-running
after an interruption picks up where it stopped. Ends by printing the report's main table.

``--jobs N`` runs up to N stages at once, each as soon as the stages it needs have finished
(SFT and both reward models are independent, and so are the three PPO runs), every one with
its share of the cores (and a GPU of its own where there are GPUs); their output then goes to
``outputs/demo_logs/``. On a 2-core CPU two at a time get more done than one (measured on a
sweep's PPO runs: docs/study.md, "Jobs"), so 2 is the default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crs.config import load_config
from crs.runs import is_finished, run_state
from crs.study.scheduler import Stage, StageFailed, run_stages
from crs.study.stage_commands import JobDevices, run_logged

# In order of priority (a valid sequential order): the longest independent stage first.
PIPELINE = [
    Stage("rm", "rm_absolute"),
    Stage("sft", "sft"),
    Stage("rm", "rm_preference"),
    Stage("rl", "rl_preference", ("sft", "rm_preference")),
    Stage("rl", "rl_absolute", ("sft", "rm_absolute")),
    Stage("rl", "rl_crs", ("sft", "rm_preference", "rm_absolute")),
    Stage("predict", "eval_pred", ("sft", "rl_preference", "rl_absolute", "rl_crs")),
    Stage("score", "eval_rewarding", ("eval_pred", "rm_preference", "rm_absolute")),
]


def stage_runner(jobs: int, log_dir: Path, started: float) -> Callable[[Stage, bool], None]:
    """Runs one stage as ``python -m crs COMMAND --config_subset SUBSET`` (``--resume`` when it
    started before): in the terminal with one job, else into ``log_dir/SUBSET.log`` with its
    share of the cores and, with GPUs, a GPU of its own (all of them when it runs alone)."""
    numbers = {stage.subset: i for i, stage in enumerate(PIPELINE, start=1)}
    devices = JobDevices(jobs)

    def run(stage: Stage, alone: bool) -> None:
        with contextlib.nullcontext({}) if jobs == 1 or alone else devices.job_env() as env:
            run_one(stage, env)

    def run_one(stage: Stage, env: dict[str, str]) -> None:
        run_dir = load_config(stage.subset).run_dir
        command = [sys.executable, "-m", "crs", stage.command, "--config_subset", stage.subset]
        if run_state(run_dir) is not None:
            command.append("--resume")  # an interrupted run continues from its last checkpoint
        header = f"[{numbers[stage.subset]}/{len(PIPELINE)}] crs {stage.command} --config_subset {stage.subset}"
        log = log_dir / f"{stage.subset}.log"
        print(
            f"\n{header}  (elapsed {time.time() - started:.0f} s{'' if jobs == 1 else f'; output: {log}'})", flush=True
        )
        stage_start = time.time()
        code = subprocess.run(command).returncode if jobs == 1 else run_logged(command, log, env)
        if code != 0:
            where = "" if jobs == 1 else f" (output: {log})"
            raise StageFailed(
                f"stage {stage.subset} failed (exit {code}){where}; "
                "fix it and re-run `make demo` (or `crs demo`) to continue"
            )
        print(f"{header}: done in {time.time() - stage_start:.0f} s", flush=True)

    return run


def run_demo(argv: list[str] | None = None) -> None:
    """Run every stage not yet finished, then print the report's main table."""
    parser = argparse.ArgumentParser(prog="crs demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=2, help="stages run at once, each with its share of the cores (default 2)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    started = time.time()
    done = set()
    for stage in PIPELINE:
        run_dir = load_config(stage.subset).run_dir
        if is_finished(run_dir):
            print(
                f"crs {stage.command} --config_subset {stage.subset}: finished earlier ({run_dir}), skipped", flush=True
            )
            done.add(stage.subset)
    log_dir = Path(load_config("sft").run.output_dir) / "demo_logs"
    try:
        run_stages(PIPELINE, args.jobs, stage_runner(args.jobs, log_dir, started), done)
    except StageFailed as error:
        sys.exit(str(error))
    from crs.eval.score_report import main_table  # here: it imports the evaluation's numerics

    results = json.loads((load_config("eval_rewarding").run_dir / "results.json").read_text())
    print(f"\nDemo finished in {time.time() - started:.0f} s ({args.jobs} at a time). Main table (gold judge):\n")
    print(main_table(results, results["judge"]))
    print(f"\nReport: {load_config('eval_rewarding').run_dir / 'report.md'}")
