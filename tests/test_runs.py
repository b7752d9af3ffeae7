"""Run directories: resolved config saved, finished runs protected, resume allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
        prepare_run_dir(
            load_config("sft", overrides=[f"run.output_dir={tmp_path}", "train.learning_rate=0.5"], name_suffix="_t"),
            resume=True,
        )
    (run_dir / "stale.txt").write_text("x")
    prepare_run_dir(cfg, overwrite=True)
    assert not (run_dir / "stale.txt").exists() and not is_finished(run_dir)


def test_latest_checkpoint_orders_numerically(tmp_path: Path) -> None:
    for step in (5, 40, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
        seal_checkpoint(tmp_path / f"checkpoint-{step}")
    assert latest_checkpoint(tmp_path).name == "checkpoint-100"
    assert latest_checkpoint(tmp_path / "missing") is None


RSS_AFTER_FREE = """
from crs.models.cpu_memory import keep_freed_memory
kept = keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
block = bytearray(256 * 2**20)  # one large allocation, touched (zero-filled)
del block
print(kept, round(rss_mb() - before))
"""


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists() or torch.cuda.is_available(), reason="a CPU-only Linux machine"
)
@pytest.mark.parametrize("user_setting", [None, "65536"])
def test_freed_memory_is_kept_on_cpu_unless_the_user_chose(user_setting: str | None) -> None:
    # Kept: a freed 256 MB block stays in the process for the next step's tensors. The user's
    # MALLOC_MMAP_MAX_ wins: glibc's default returns the block to the OS at once.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if user_setting is not None:
        env["MALLOC_MMAP_MAX_"] = user_setting
    done = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE], env=env, capture_output=True, text=True, check=True)
    kept, grown_mb = done.stdout.split()
    if user_setting is None:
        assert kept == "True" and int(grown_mb) >= 200
    else:
        assert kept == "False" and int(grown_mb) < 50


@pytest.mark.parametrize("keep", [True, False])
def test_a_stage_keeps_freed_memory_as_its_config_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    from crs.cli import run_stage

    calls: list[bool] = []
    monkeypatch.setattr("crs.models.cpu_memory.keep_freed_memory", lambda: calls.append(True) or True)

    def stage(config, run_dir: Path, resume: bool) -> None:
        mark_finished(run_dir)

    overrides = ["--set", f"run.output_dir={tmp_path}", "--set", f"run.keep_freed_memory={str(keep).lower()}"]
    run_stage(stage, "a stage", ["--config_subset", "sft", *overrides])
    assert calls == ([True] if keep else [])


def test_resuming_a_finished_training_run_decides_from_its_final_step(tmp_path: Path) -> None:
    from crs.runs import TRAIN_LENGTH_KEYS, NothingToResume, run_state

    def sft(*overrides: str):
        return load_config(
            "sft", overrides=[f"run.output_dir={tmp_path}", "train.max_steps=6", *overrides], name_suffix="_t"
        )

    run_dir = prepare_run_dir(sft())
    mark_finished(run_dir, {"train_loss": 1.0, "steps": 6}, 6, TRAIN_LENGTH_KEYS)
    finished = run_state(run_dir)
    for same in (
        (),
        ("train.save_steps=3",),
        ("train.max_steps=5",),
        ("train.num_epochs=3",),
    ):  # epochs: max_steps still wins
        with pytest.raises(NothingToResume, match=r"already finished at step 6; nothing to resume \(train.max_steps="):
            prepare_run_dir(sft(*same), resume=True)
    assert run_state(run_dir) == finished  # still finished, nothing rewritten
    with pytest.raises(
        ConfigError, match=r"finished at step 6 and kept no complete checkpoint \(train.save_steps: 40\).*--overwrite"
    ):
        prepare_run_dir(sft("train.max_steps=8"), resume=True)
    (run_dir / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    with pytest.raises(ConfigError, match="kept no complete checkpoint"):  # an unsealed one is no checkpoint
        prepare_run_dir(sft("train.max_steps=8"), resume=True)
    seal_checkpoint(run_dir / "checkpoints" / "checkpoint-6")
    assert prepare_run_dir(sft("train.max_steps=8"), resume=True) == run_dir  # an extension, from checkpoint-6


def test_resuming_a_run_bounded_by_epochs_or_finished_before_steps_were_recorded(tmp_path: Path) -> None:
    from crs.runs import NothingToResume, check_finished_resume

    def epochs(value: float, output: str = "a"):
        return load_config("sft", overrides=[f"run.output_dir={tmp_path / output}", f"train.num_epochs={value}"])

    run_dir = prepare_run_dir(epochs(2))
    mark_finished(run_dir, {"train_loss": 1.0, "steps": 30})  # an SFT run finished before final_step was recorded
    for fewer in (2, 1):
        with pytest.raises(NothingToResume, match=r"step 30; nothing to resume \(train.num_epochs="):
            check_finished_resume(epochs(fewer), run_dir)
    with pytest.raises(ConfigError, match="kept no complete checkpoint"):
        check_finished_resume(epochs(3), run_dir)  # one more epoch: an extension
    rl = load_config("rl_crs", overrides=[f"run.output_dir={tmp_path / 'b'}"])
    rl_dir = prepare_run_dir(rl)
    mark_finished(rl_dir, {"steps": rl.rl.steps, "nonfinite_steps": 0})  # an RL run: its bound is rl.steps
    with pytest.raises(NothingToResume, match=rf"step {rl.rl.steps}; nothing to resume \(rl.steps={rl.rl.steps}"):
        check_finished_resume(rl, rl_dir)
    sweep = load_config("sweep_crs", overrides=[f"run.output_dir={tmp_path / 'c'}"])
    sweep_dir = prepare_run_dir(sweep)
    mark_finished(sweep_dir, {"runs": 21, "wall_time_s": 1.0})  # not a training run: its stage skips what is done
    check_finished_resume(sweep, sweep_dir)
    assert prepare_run_dir(sweep, resume=True) == sweep_dir
