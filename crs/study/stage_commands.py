"""Stages run as their own ``crs`` commands, by the studies (sweep, online loop, demo): command lines, logs, cores
and GPUs.

Each stage runs in a process of its own, so a crash of one leaves the study resumable,
its output goes to its own log, and side-by-side jobs share the cores instead of
oversubscribing the BLAS threads, and the GPUs instead of all landing on the first one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from crs.runs import run_state

logger = logging.getLogger(__name__)


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


def visible_gpus() -> list[str]:
    """The CUDA GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` names them for a child process
    (its entries where it is set, else the indices); none without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in listed.split(",")] if listed else [str(i) for i in range(count)]
    return names[:count]


class JobDevices:
    """The cores and GPUs that ``jobs`` side-by-side stage processes share out.

    Each job gets its share of the cores (:func:`cores_share_env`) and, where there are GPUs and
    more than one job, one GPU (``CUDA_VISIBLE_DEVICES``): the one the fewest running jobs hold,
    the first of them on a tie. With at least as many GPUs as jobs every job has its own; with
    fewer they share (said in the log). Without CUDA only the cores are shared. ``gpus``: the
    GPUs to hand out (default: :func:`visible_gpus`).
    """

    def __init__(self, jobs: int, gpus: list[str] | None = None) -> None:
        self.jobs = jobs
        self.gpus = (visible_gpus() if gpus is None else list(gpus)) if jobs > 1 else []
        self.holders = dict.fromkeys(self.gpus, 0)
        self.lock = threading.Lock()
        if self.gpus and jobs > len(self.gpus):
            logger.warning(
                "%d jobs at once on %d GPU(s): up to %d jobs share a GPU (its memory too)",
                jobs,
                len(self.gpus),
                math.ceil(jobs / len(self.gpus)),
            )

    @contextlib.contextmanager
    def job_env(self) -> Iterator[dict[str, str]]:
        """The environment one job runs with, its GPU held (where there is one) until the job ends."""
        env = cores_share_env(self.jobs)
        if not self.gpus:
            yield env
            return
        with self.lock:
            gpu = min(self.gpus, key=self.holders.__getitem__)
            self.holders[gpu] += 1
        try:
            yield {**env, "CUDA_VISIBLE_DEVICES": gpu}
        finally:
            with self.lock:
                self.holders[gpu] -= 1


def run_logged(command: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` with its output appended to ``log_path``; its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        ).returncode
