"""Run directories: resolved config saved, finished runs protected, resume allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from crs.config import ConfigError, load_config
from crs.runs import is_finished, latest_checkpoint, mark_finished, prepare_run_dir, seal_checkpoint


def make_config(tmp_path: Path):
    return load_config("sft", overrides=[f"run.output_dir={tmp_path}"], name_suffix="_t")


def test_resolved_config_reproduces_the_run(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    run_dir = prepare_run_dir(cfg)
    assert run_dir == tmp_path / "sft_t"
    again = load_config("sft", run_dir / "config.resolved.yaml")
    assert again.to_dict()["train"] == cfg.to_dict()["train"]
    assert again.data.split == cfg.data.split and again.run.output_dir == str(tmp_path)


def test_finished_run_needs_overwrite_and_unfinished_needs_resume(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    run_dir = prepare_run_dir(cfg)
    assert prepare_run_dir(cfg) == run_dir  # it never trained anything: it simply starts again
    (run_dir / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(ConfigError, match="unfinished run; pass --resume"):
        prepare_run_dir(cfg)
    assert prepare_run_dir(cfg, resume=True) == run_dir
    mark_finished(run_dir, {"loss": 1.0})
    assert is_finished(run_dir)
    with pytest.raises(ConfigError, match="finished run; pass --overwrite to replace it, --resume to extend it"):
        prepare_run_dir(cfg)
    with pytest.raises(ConfigError, match="train.learning_rate"):  # extending must not change what was trained
        prepare_run_dir(load_config("sft", overrides=[f"run.output_dir={tmp_path}", "train.learning_rate=0.5"], name_suffix="_t"), resume=True)
    (run_dir / "stale.txt").write_text("x")
    prepare_run_dir(cfg, overwrite=True)
    assert not (run_dir / "stale.txt").exists() and not is_finished(run_dir)


def test_latest_checkpoint_orders_numerically(tmp_path: Path) -> None:
    for step in (5, 40, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
        seal_checkpoint(tmp_path / f"checkpoint-{step}")
    assert latest_checkpoint(tmp_path).name == "checkpoint-100"
    assert latest_checkpoint(tmp_path / "missing") is None
