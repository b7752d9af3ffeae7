"""The ``run`` section: naming, output location, seeding and logging of one stage run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crs.config.fields import Rule, at_least


@dataclass
class RunConfig:
    """Naming, output location, seeding and logging of one stage run."""

    name: str = field(
        default="run",
        metadata={
            "help": "Run directory name: the run writes to `<run.output_dir>/<run.name><--name_suffix>`. Each subset "
            "sets its own."
        },
    )
    output_dir: str = field(default="outputs", metadata={"help": "Where run directories go."})
    seed: int = field(
        default=42, metadata={"help": "Seeds python, numpy and torch (and the seeded data splits and samples)."}
    )
    report_to: Literal["none", "tensorboard", "wandb"] = field(
        default="none",
        metadata={
            "help": "Where training metrics are also sent: `none`, `tensorboard` (every training stage writes event "
            "files to `<run>/logs/`: `tensorboard --logdir outputs`; the package comes with `make setup`, or "
            "`pip install -e '.[tensorboard]'`) or `wandb` (needs that package)."
        },
    )
    logging_steps: int = field(
        default=10,
        metadata={
            "help": "Log every N optimiser steps (PPO: every N PPO steps).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    allow_gold_outside_demo: bool = field(
        default=False,
        metadata={
            "help": "The gold judge and the simulated annotator are the demo dataset's rule set: on other prompts crs "
            "refuses them (their numbers would mean nothing) unless this is true."
        },
    )
    allow_untested_versions: bool = field(
        default=False,
        metadata={
            "help": "A TRL outside the range crs was tested with (pyproject.toml) stops the GRPO, RLOO and DPO stages, "
            "which override private TRL methods; true: try it anyway, with a warning. Other packages out of range only "
            "warn."
        },
    )
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Seconds a process of a multi-process run (torchrun, accelerate launch) waits for the others "
            "before it gives up: rank 0 alone writes the plain base a LoRA stage trains on, saves and merges the "
            "model, while the others wait. Raise it for a large model on a slow disk (transformers' `ddp_timeout`).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    keep_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "On a CPU-only Linux machine, glibc keeps freed memory for the next step's tensors instead of "
            "returning it to the OS: faster steps at a higher peak memory (measured in docs/results.md). false when "
            "memory is tight. Setting `MALLOC_MMAP_MAX_` or `MALLOC_TRIM_THRESHOLD_` yourself also leaves glibc as "
            "you set it."
        },
    )
