"""Saving a trained reward-model run: the model, ``rm_format.json``, ``reward_stats.json``,
``length_calibration.json`` and ``metrics.json``, then the run marked finished."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from crs.config import CRSConfig
from crs.io import write_json_atomic
from crs.models.saving import save_run_model
from crs.rm.joint_heads import JOINT_WEIGHT_KEY
from crs.rm.length_calibration import CALIBRATION_FILE, LengthCalibration, write_length_calibration
from crs.rm.rm_format import REWARD_STATS_FILE, RM_FORMAT_FILE, RMFormat
from crs.runs import TRAIN_LENGTH_KEYS, mark_finished

METRICS_FILE = "metrics.json"


def save_rm_run(
    model: Any,
    tokenizer: Any,
    run_dir: Path,
    cfg: CRSConfig,
    fmt: RMFormat,
    stats: dict[str, Any],
    record: dict[str, Any],
    calibration: LengthCalibration | None = None,
    state_dict: dict[str, Any] | None = None,
    plain_base: str | None = None,
) -> None:
    """The trained RM and its files (``rm_format.json``, ``reward_stats.json``, ``length_calibration.json``
    where one was fitted, ``metrics.json``), then the run marked finished. ``state_dict`` and ``plain_base``:
    as :func:`crs.models.saving.save_run_model` takes them (a sharded model's gathered weights)."""
    rm = cfg.rm
    save_run_model(
        model, tokenizer, run_dir, cfg.model.name, "reward_model", cfg.model.lora.merge, state_dict, plain_base
    )
    joint_weight = {JOINT_WEIGHT_KEY: rm.joint_preference_weight} if rm.loss == "joint" else {}
    write_json_atomic(run_dir / RM_FORMAT_FILE, {**asdict(fmt), "loss": rm.loss, **joint_weight})
    write_json_atomic(run_dir / REWARD_STATS_FILE, stats)
    if calibration is not None:
        write_length_calibration(run_dir / CALIBRATION_FILE, calibration)
    write_json_atomic(run_dir / METRICS_FILE, record)
    mark_finished(
        run_dir, {"val": record["val"], "global_step": record["global_step"]}, record["global_step"], TRAIN_LENGTH_KEYS
    )
