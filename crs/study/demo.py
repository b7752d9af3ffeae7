"""The whole pipeline on the embedded defaults, offline: `make demo` or `crs demo`.

SFT, the preference RM and the absolute RM -> three PPO runs (preference, absolute,
combined) -> predictions -> scoring. Each stage runs as its own `crs` command, as a user
would type it. A finished stage is skipped and an interrupted one resumed, so re-running
after an interruption picks up where it stopped. Ends by printing the report's main table.

``--jobs N`` runs up to N stages at once, each as soon as the stages it needs have finished
(SFT and both reward models are independent, and so are the three PPO runs), every one with
its share of the cores; their output then goes to ``outputs/demo_logs/``. On a 2-core CPU two
at a time got ~1.35x the throughput of one (a sweep's PPO runs), so 2 is the default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from crs.config import load_config
from crs.runs import is_finished, run_state
from crs.study.subprocesses import cores_share_env, run_logged


@dataclass(frozen=True)
class Stage:
    """One `crs` command of the pipeline and the stages (by subset) whose outputs it reads."""

    command: str
    subset: str
    after: tuple[str, ...] = ()


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


class StageFailed(RuntimeError):
    """A stage exited with an error; the message says which and where its output is."""


def needs(stage: Stage, stages: Sequence[Stage]) -> set[str]:
    """Every stage ``stage`` waits for, directly or through others."""
    by_subset = {s.subset: s for s in stages}
    found: set[str] = set()
    todo = list(stage.after)
    while todo:
        subset = todo.pop()
        if subset not in found:
            found.add(subset)
            todo.extend(by_subset[subset].after if subset in by_subset else ())
    return found


def run_stages(
    stages: Sequence[Stage], jobs: int, run: Callable[[Stage, bool], None], done: set[str] | None = None
) -> None:
    """Run every stage not in ``done``, at most ``jobs`` at once, each once all its ``after`` are done.

    ``run(stage, alone)`` runs one stage (in a worker thread) and raises on failure; ``alone``
    says that nothing else can run beside it (nothing running, every other stage left waits
    for it), so it may take every core. After a failure no new stage starts; the running ones
    finish, then the first failure is raised.
    """
    done = set(done or ())
    pending = [s for s in stages if s.subset not in done]
    running: set[str] = set()
    failures: list[BaseException] = []
    changed = threading.Condition()

    def worker(stage: Stage, alone: bool) -> None:
        error = None
        try:
            run(stage, alone)
        except BaseException as caught:  # raised again by the scheduling thread
            error = caught
        with changed:
            running.discard(stage.subset)
            if error is None:
                done.add(stage.subset)
            else:
                failures.append(error)
            changed.notify_all()

    with changed:
        while True:
            if failures:
                if not running:
                    raise failures[0]
            else:
                ready = [s for s in pending if all(need in done for need in s.after)]
                for stage in ready[: max(jobs - len(running), 0)]:
                    pending.remove(stage)
                    alone = not running and all(stage.subset in needs(other, stages) for other in pending)
                    running.add(stage.subset)
                    threading.Thread(target=worker, args=(stage, alone), daemon=True).start()
                if not pending and not running:
                    return
                if not running:
                    missing = sorted({need for s in pending for need in s.after} - done)
                    raise StageFailed(f"stages {[s.subset for s in pending]} wait for {missing}, which never finish")
            changed.wait()


def stage_runner(jobs: int, log_dir: Path, started: float) -> Callable[[Stage, bool], None]:
    """Runs one stage as ``python -m crs COMMAND --config_subset SUBSET`` (``--resume`` when it
    started before): in the terminal with one job, else into ``log_dir/SUBSET.log`` with its
    share of the cores (all of them when it runs alone)."""
    numbers = {stage.subset: i for i, stage in enumerate(PIPELINE, start=1)}

    def run(stage: Stage, alone: bool) -> None:
        env = {} if jobs == 1 or alone else cores_share_env(jobs)
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
                f"stage {stage.subset} failed (exit {code}){where}; fix it and re-run `make demo` (or `crs demo`) to continue"
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
