"""The RL stage (``rl_train.py``, ``crs rl``): one entry point, the optimiser chosen by ``rl.algorithm``.

* ``ppo`` (the default): crs's own PPO, :func:`crs.rl.ppo.stage.run_ppo_stage`;
* ``grpo``, ``rloo``: TRL's on-policy trainers on the same combined reward,
  :func:`crs.rl.grpo_rloo.run_grpo_rloo_stage`;
* ``dpo``: TRL's DPOTrainer on preference pairs from ``data.*``, :func:`crs.rl.dpo.run_dpo_stage`.

Every algorithm writes the same run layout (``adapter/`` + ``crs_model.json``, ``metrics.jsonl``,
``config.resolved.yaml``, ``run_state.json``, checkpoints that ``--resume`` continues from), so
the evaluation stages and sweeps take any of them unchanged. Comparison: docs/optimisers.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crs.config import ConfigError, CRSConfig


def run_rl_stage(cfg: CRSConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run ``rl.algorithm`` into ``run_dir``; returns the run's summary."""
    algorithm = cfg.rl.algorithm
    if algorithm == "ppo":
        from crs.rl.ppo.stage import run_ppo_stage

        return run_ppo_stage(cfg, run_dir, resume)
    if algorithm in ("grpo", "rloo"):
        from crs.rl.grpo_rloo import run_grpo_rloo_stage

        return run_grpo_rloo_stage(cfg, run_dir, resume)
    if algorithm == "dpo":
        from crs.rl.dpo import run_dpo_stage

        return run_dpo_stage(cfg, run_dir, resume)
    raise ConfigError(f"rl.algorithm: expected ppo, grpo, rloo or dpo, got {algorithm!r}")
