"""The demo's pipeline: its stages and their order, and the devices of stages run side by side."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import crs.study.demo as demo
from crs.study.demo import PIPELINE


def test_pipeline_order_is_a_valid_sequential_order() -> None:
    seen: set[str] = set()
    for stage in PIPELINE:
        assert set(stage.after) <= seen, stage
        seen.add(stage.subset)


def test_stages_run_side_by_side_each_get_a_gpu_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with 2 GPUs (faked), SFT and a reward model trained at once each see one GPU of their own;
    a stage that runs alone sees them all (no fake stage trains: only its environment is looked at)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(demo, "load_config", lambda subset: SimpleNamespace(run_dir=tmp_path / subset))
    both_started = threading.Barrier(2, timeout=30)
    envs: dict[str, dict[str, str]] = {}

    def fake_run(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
        envs[log_path.stem] = dict(env or {})
        if log_path.stem != "eval_rewarding":
            both_started.wait()  # the two stages hold their GPUs at the same time
        return 0

    monkeypatch.setattr(demo, "run_logged", fake_run)
    run = demo.stage_runner(2, tmp_path / "logs", time.time())
    side_by_side = [threading.Thread(target=run, args=(stage, False)) for stage in PIPELINE[:2]]
    for thread in side_by_side:
        thread.start()
    for thread in side_by_side:
        thread.join()
    assert sorted(envs[stage.subset]["CUDA_VISIBLE_DEVICES"] for stage in PIPELINE[:2]) == ["0", "1"]
    run(PIPELINE[-1], True)
    assert "CUDA_VISIBLE_DEVICES" not in envs["eval_rewarding"]
