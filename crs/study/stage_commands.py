"""Stages run as their own ``crs`` commands, by the studies (sweep, online loop, demo): command lines, logs, cores.

Each stage runs in a process of its own, so a crash of one leaves the study resumable,
its output goes to its own log, and side-by-side jobs share the cores instead of
oversubscribing the BLAS threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crs.runs import run_state


def stage_command(stage: str, config_path: str, subset: str, run_dir: Path, overrides: Mapping[str, Any]) -> list[str]:
    """The ``python -m crs STAGE`` command line that writes the run ``run_dir`` with ``--set`` ``overrides``
    (values other than strings as JSON), with ``--resume`` when that run started before."""
    command = [
        sys.executable,
        "-m",
        "crs",
        stage,
        "--config",
        config_path,
        "--config_subset",
        subset,
        "--set",
        f"run.output_dir={run_dir.parent}",
        "--set",
        f"run.name={run_dir.name}",
    ]
    for text in override_texts(overrides):
        command += ["--set", text]
    if run_state(run_dir) is not None:
        command.append("--resume")
    return command


def override_texts(overrides: Mapping[str, Any]) -> list[str]:
    """``--set`` values (``key=value``, values other than strings as JSON), as the CLI and
    :func:`crs.config.load_config` read them."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]


def cores_share_env(jobs: int) -> dict[str, str]:
    """The environment giving one of ``jobs`` side-by-side processes its share of the cores
    (oversubscribed BLAS threads slow every job down)."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}


def run_logged(command: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` with its output appended to ``log_path``; its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        ).returncode
