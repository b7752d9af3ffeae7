"""Run directories: one per stage run, with its resolved config and a finished marker.

``<run.output_dir>/<run.name><name_suffix>/`` holds everything a run writes:
``config.resolved.yaml`` (rerun with ``--config`` it reproduces the run), checkpoints,
metrics and the final model. ``run_state.json`` says whether the run finished.
A finished run is never overwritten without ``--overwrite``; an unfinished one
(crashed, interrupted) continues with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs.config import ConfigError, CRSConfig, save_resolved_config
from crs.io import write_json_atomic

logger = logging.getLogger("crs.runs")

STATE_FILE = "run_state.json"


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``run_state.json``, or None if the folder holds no run."""
    path = Path(run_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: str | Path) -> bool:
    """Whether a run completed (its outputs are final)."""
    state = run_state(run_dir)
    return bool(state and state.get("status") == "finished")


def prepare_run_dir(config: CRSConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or reopen) the run directory and save the resolved config into it.

    Raises ConfigError when the directory holds a run that must not be touched:
    a finished run without ``--overwrite``, an unfinished one without ``--resume``.
    """
    run_dir = config.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif is_finished(run_dir):
            raise ConfigError(
                f"{run_dir} holds a finished run; pass --overwrite to replace it "
                "or --name_suffix to write a new run beside it"
            )
        elif not resume:
            raise ConfigError(
                f"{run_dir} holds an unfinished run; pass --resume to continue it "
                "or --overwrite to start again"
            )
    elif resume:
        logger.warning("--resume: %s holds no earlier run, starting fresh", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(config, run_dir / "config.resolved.yaml")
    state = run_state(run_dir) or {"created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    state.update(status="running", subset=config.subset)
    write_json_atomic(run_dir / STATE_FILE, state)
    return run_dir


def mark_finished(run_dir: str | Path, summary: dict[str, Any] | None = None) -> None:
    """Record that the run completed, with an optional summary of its results."""
    state = run_state(run_dir) or {}
    state.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if summary:
        state["summary"] = summary
    write_json_atomic(Path(run_dir) / STATE_FILE, state)


def latest_checkpoint(run_dir: str | Path, pattern: str = "checkpoint-*") -> Path | None:
    """The checkpoint folder with the highest step number, or None."""
    def step(path: Path) -> int:
        digits = "".join(ch for ch in path.name.rsplit("-", 1)[-1].rsplit("_", 1)[-1] if ch.isdigit())
        return int(digits) if digits else -1

    candidates = [p for p in Path(run_dir).glob(pattern) if p.is_dir() and step(p) >= 0]
    return max(candidates, key=step, default=None)
