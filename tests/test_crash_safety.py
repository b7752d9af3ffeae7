"""Nothing lost: --overwrite deletes only crs runs, torn checkpoints and log lines are survived,
resumed runs log every step once, files respect the umask."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from stage_runs import run_files

from crs.config import ConfigError, load_config
from crs.io import folder_written_atomically, read_jsonl, truncate_jsonl, write_text_atomic
from crs.runs import latest_checkpoint, prepare_run_dir, seal_checkpoint

# --------------------------------------------------------------------------- the overwrite guard


def config_named(tmp_path: Path, name: str, suffix: str = ""):
    return load_config(
        "sft", overrides=[f"run.output_dir={tmp_path / 'out'}", f"run.name={name!r}"], name_suffix=suffix
    )


@pytest.mark.parametrize("name", ["", ".", "..", "../elsewhere", "/tmp"])
def test_run_names_outside_output_dir_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not a folder inside run.output_dir"):
        prepare_run_dir(config_named(tmp_path, name), overwrite=True)
    assert (tmp_path / "out" / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize("flags", [{"overwrite": True}, {"resume": True}, {}])
def test_a_folder_that_is_not_a_crs_run_is_never_touched(tmp_path: Path, flags: dict) -> None:
    folder = tmp_path / "out" / "notes"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "run_state.json").write_text("not json")  # a look-alike is not proof either
    with pytest.raises(ConfigError, match="not a crs run"):
        prepare_run_dir(config_named(tmp_path, "notes"), **flags)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_overwrite_still_replaces_a_crs_run(tmp_path: Path) -> None:
    cfg = config_named(tmp_path, "sft", "_a")
    run_dir = prepare_run_dir(cfg)
    (run_dir / "old.bin").write_text("x")
    assert prepare_run_dir(cfg, overwrite=True) == run_dir
    assert not (run_dir / "old.bin").exists() and (run_dir / "run_state.json").is_file()


# --------------------------------------------------------------------------- torn checkpoints


def make_checkpoint(folder: Path, sealed: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"w" * 1000)
    (folder / "sub").mkdir()
    (folder / "sub" / "state.json").write_text("{}")
    if sealed:
        seal_checkpoint(folder)
    return folder


def test_resume_skips_torn_checkpoints_and_says_which(tmp_path: Path, caplog) -> None:
    make_checkpoint(tmp_path / "checkpoint-10")
    truncated = make_checkpoint(tmp_path / "checkpoint-20")
    with open(truncated / "weights.pt", "r+b") as handle:
        handle.truncate(10)  # kill -9 while torch.save was writing
    make_checkpoint(tmp_path / "checkpoint-30", sealed=False)  # killed before the seal
    missing = make_checkpoint(tmp_path / "checkpoint-40")
    (missing / "sub" / "state.json").unlink()
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert "checkpoint-40 is incomplete (sub/state.json is missing)" in caplog.text
    assert "weights.pt has 10 bytes, 1000 were written" in caplog.text
    assert latest_checkpoint(tmp_path, remove_torn=True).name == "checkpoint-10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]


def test_an_unsealed_only_checkpoint_means_no_checkpoint(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "step_2", sealed=False)
    assert latest_checkpoint(tmp_path, "step_*") is None


def test_folder_written_atomically_leaves_the_old_folder_on_error(tmp_path: Path) -> None:
    target = make_checkpoint(tmp_path / "step_4")
    with pytest.raises(RuntimeError):
        with folder_written_atomically(target) as tmp:
            (tmp / "weights.pt").write_bytes(b"new")
            raise RuntimeError("crash while saving")
    assert (target / "weights.pt").read_bytes() == b"w" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4"]  # no temporary folder left


_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
import crs.io
from crs.io import folder_written_atomically

real_replace, calls = os.replace, []

def replace_then_die(src, dst):
    calls.append(dst)
    if len(calls) == 2:  # the new folder moving in: the moment a kill -9 is most costly
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

crs.io.os.replace = replace_then_die
with folder_written_atomically(sys.argv[1]) as tmp:
    (tmp / "weights.pt").write_bytes(b"new")
"""


def test_a_kill_between_the_renames_of_a_folder_swap_loses_nothing(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    target = make_checkpoint(tmp_path / "step_4")
    child = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(target)], capture_output=True)
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()  # the kill fell where the old folder was aside and the new not yet in
    assert latest_checkpoint(tmp_path, "step_*") == target  # resuming puts the earlier copy back
    assert (target / "weights.pt").read_bytes() == b"w" * 1000


def test_a_failed_rename_puts_the_old_folder_back_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crs.io

    target = make_checkpoint(tmp_path / "step_4")
    real_replace, calls = os.replace, []

    def replace_failing_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(crs.io.os, "replace", replace_failing_second)
    with pytest.raises(OSError, match="disk gone"):
        with folder_written_atomically(target) as tmp:
            (tmp / "weights.pt").write_bytes(b"new")
    monkeypatch.undo()
    assert (target / "weights.pt").read_bytes() == b"w" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4"]
    with folder_written_atomically(target) as tmp:  # and the next swap goes through
        (tmp / "weights.pt").write_bytes(b"new")
    assert (target / "weights.pt").read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["step_4"]


# --------------------------------------------------------------------------- torn log lines


def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "x": 1}\n{"step": 2, "x": 2}\n{"step": 3, "x"')
    with pytest.raises(ValueError, match="line 3: not valid JSON"):
        read_jsonl(log)
    assert [r["step"] for r in read_jsonl(log, torn_tail_ok=True)] == [1, 2]
    assert "dropped a torn last line" in caplog.text
    log.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):  # damage in the middle is not a crash's mark
        read_jsonl(log, torn_tail_ok=True)


def test_truncate_keeps_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2, 3, 4)) + '{"step": 5, "lo')
    assert truncate_jsonl(log, 2) == 2
    assert [r["step"] for r in read_jsonl(log)] == [0, 1, 2]
    assert log.read_text().endswith("\n")  # the next append starts on a line of its own
    assert truncate_jsonl(tmp_path / "absent.jsonl", 3) == 0


# --------------------------------------------------------------------------- file modes


def test_atomic_writes_respect_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "results.json", "{}")
        with folder_written_atomically(tmp_path / "model") as tmp:
            (tmp / "w").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


# --------------------------------------------------------------------------- the stages after a crash


def test_ppo_resumes_past_a_torn_checkpoint_and_a_torn_metrics_line(tmp_path, smol_tokenizer) -> None:
    from stage_runs import write_rl_config
    from tiny import tiny_causal_lm

    from crs.rl.ppo.stage import run_ppo_stage

    model_dir = tmp_path / "tiny"
    tiny_causal_lm(smol_tokenizer, seed=0).save_pretrained(model_dir)
    smol_tokenizer.save_pretrained(model_dir)

    def run(name: str, resume: bool) -> Path:
        cfg = load_config("tiny_rl", write_rl_config(tmp_path / f"{name}.yaml", model_dir, tmp_path / name, steps=4))
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        run_ppo_stage(cfg, cfg.run_dir, resume)
        return cfg.run_dir

    straight = run("straight", resume=False)
    crashed = run("crashed", resume=False)
    # The crash: killed while writing step 4's checkpoint and a metrics row.
    with open(crashed / "checkpoints" / "step_4" / "trainable.pt", "r+b") as handle:
        handle.truncate(100)
    with open(crashed / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "reward/comb')
    run("crashed", resume=True)

    rows = read_jsonl(crashed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # steps 3-4 ran again, logged once
    expected = read_jsonl(straight / "metrics.jsonl")
    assert [r["reward/combined"] for r in rows] == pytest.approx([r["reward/combined"] for r in expected], rel=1e-5)
    restored = torch.load(crashed / "checkpoints" / "step_4" / "trainable.pt")
    assert restored  # step 4 was written again, whole


def test_sft_resumed_reports_the_whole_runs_train_loss(tmp_path, smol_tokenizer) -> None:
    import shutil

    from stage_runs import EXAMPLES, tiny_model_dir

    from crs.runs import run_state
    from crs.sft.fine_tuning import train_sft

    base = tiny_model_dir(tmp_path, smol_tokenizer)

    def config(output: str):
        return load_config(
            "sft",
            overrides=[
                f"run.output_dir={tmp_path / output}",
                f"model.name={base}",
                "model.dtype=fp32",
                f"data.source={EXAMPLES}",
                "data.val_fraction=0.2",
                "train.max_steps=6",
                "train.save_steps=3",
                "run.logging_steps=1",
                "train.batch_size=4",
                "model.lora.enabled=false",
                "train.learning_rate=0.003",
            ],
        )

    cfg = config("straight")
    straight = train_sft(cfg, prepare_run_dir(cfg), resume=False)
    cfg = config("crashed")
    crashed_dir = prepare_run_dir(cfg)
    shutil.copytree(tmp_path / "straight" / cfg.run_name, crashed_dir, dirs_exist_ok=True)
    shutil.rmtree(crashed_dir / "checkpoints" / "checkpoint-6" / "model.safetensors", ignore_errors=True)
    (crashed_dir / "checkpoints" / "checkpoint-6" / "model.safetensors").unlink(missing_ok=True)  # torn save of step 6
    resumed = train_sft(cfg, crashed_dir, resume=True)

    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-4)
    assert resumed["eval_loss_before"] == pytest.approx(straight["eval_loss_before"])
    log = read_jsonl(crashed_dir / "train_log.jsonl")
    losses = [r["step"] for r in log if "loss" in r]
    assert losses == [1, 2, 3, 4, 5, 6]  # nothing logged twice
    assert run_state(crashed_dir)["status"] == "finished"


def test_absolute_rm_started_with_resume_and_no_checkpoint_is_the_same_run(tmp_path, smol_tokenizer) -> None:
    from stage_runs import tiny_config, write_marker_data
    from tiny import tiny_sequence_classifier

    from crs.rm.training import train_reward_model

    base = tmp_path / "tiny_rm"
    tiny_sequence_classifier(smol_tokenizer).save_pretrained(base)
    smol_tokenizer.save_pretrained(base)
    cfg = tiny_config(base, write_marker_data(tmp_path, "absolute", n=32), "absolute", steps=3)
    plain = train_reward_model(cfg, tmp_path / "plain")
    resumed = train_reward_model(cfg, tmp_path / "resumed", resume=True)
    before = [
        json.loads((tmp_path / run / "metrics.json").read_text())["val_before_training"]["mse"]
        for run in ("plain", "resumed")
    ]
    assert before[0] == pytest.approx(before[1], rel=1e-6)
    assert resumed["mse"] == pytest.approx(plain["mse"], rel=1e-5)


# --------------------------------------------------------------------------- resume after a config change


def test_resume_refuses_config_changes_the_checkpoint_cannot_hold(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="crs.runs")
    out = f"run.output_dir={tmp_path / 'out'}"
    run_dir = prepare_run_dir(load_config("rl_crs", overrides=[out]))
    make_checkpoint(run_dir / "checkpoints" / "step_12")  # it trained: there is something to keep
    with pytest.raises(ConfigError, match=r"model\.lora\.r: 16 -> 8.*rl\.learning_rate"):
        prepare_run_dir(load_config("rl_crs", overrides=[out, "model.lora.r=8", "rl.learning_rate=0.5"]), resume=True)
    # Extending the run and logging differently are fine, and said.
    assert (
        prepare_run_dir(load_config("rl_crs", overrides=[out, "rl.steps=48", "run.logging_steps=1"]), resume=True)
        == run_dir
    )
    assert "rl.steps changed from 24 to 48" in caplog.text
    assert (
        load_config("rl_crs", run_dir / "config.resolved.yaml").rl.steps == 48
    )  # the extended run is what is saved now


# --------------------------------------------------------------------------- resuming a finished run


def test_resuming_a_finished_ppo_run_that_kept_no_checkpoint_changes_nothing(
    tmp_path, tiny_model_dir, caplog, capsys
) -> None:
    from stage_runs import write_rl_config

    from crs.cli import run_stage
    from crs.rl.ppo.stage import run_ppo_stage
    from crs.runs import run_state

    argv = [
        "--config",
        str(write_rl_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=2, save_steps=0)),
        "--config_subset",
        "tiny_rl",
    ]
    run_stage(run_ppo_stage, "test", argv)
    run_dir = tmp_path / "out" / "rl"
    finished = run_files(run_dir)
    assert not (run_dir / "checkpoints").exists() and run_state(run_dir)["final_step"] == 2
    caplog.set_level(logging.INFO)
    # Nothing changed, only logging changed, fewer steps asked for: nothing to train.
    for extra in ([], ["--set", "run.logging_steps=2"], ["--set", "rl.steps=1"]):
        caplog.clear()
        run_stage(run_ppo_stage, "test", [*argv, "--resume", *extra])  # returns: exit code 0
        assert f"{run_dir} already finished at step 2; nothing to resume" in caplog.text, extra
        assert "resuming from step 0" not in caplog.text
        assert run_files(run_dir) == finished  # adapter, state, config, logs: byte for byte
    # More steps cannot continue exactly without a checkpoint: refused in one line, nothing retrained.
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        run_stage(run_ppo_stage, "test", [*argv, "--resume", "--set", "rl.steps=3"])
    assert caught.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "finished at step 2 and kept no complete checkpoint (rl.save_steps: 0)" in error[0]
    assert f"rl.init_adapter={run_dir}" in error[0]
    assert run_files(run_dir) == finished and run_state(run_dir)["status"] == "finished"


def test_extending_a_finished_ppo_run_trains_exactly_the_extra_step(tmp_path, tiny_model_dir) -> None:
    from stage_runs import write_rl_config

    from crs.cli import run_stage
    from crs.rl.ppo.stage import run_ppo_stage
    from crs.runs import run_state

    argv = [
        "--config",
        str(write_rl_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "out", steps=2, save_steps=2)),
        "--config_subset",
        "tiny_rl",
    ]
    run_stage(run_ppo_stage, "test", argv)
    run_dir = tmp_path / "out" / "rl"
    first_rows = read_jsonl(run_dir / "metrics.jsonl")
    run_stage(run_ppo_stage, "test", [*argv, "--resume", "--set", "rl.steps=3"])
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[:2] == first_rows  # one new step, the first two kept
    state = run_state(run_dir)
    assert state["status"] == "finished" and state["final_step"] == 3 and state["summary"]["steps"] == 3
    optimizer = torch.load(run_dir / "checkpoints" / "step_3" / "optimizer.pt", weights_only=False)["optimizer"]
    assert all(
        int(s["step"]) == 3 * 2 for s in optimizer["state"].values()
    )  # 3 steps x 2 PPO epochs: continued, not restarted


def write_rm_config(folder: Path, model_dir: Path, data: Path) -> Path:
    """``tiny_rm``: rm_absolute's checkpointing (one kept, none before the end) on the tiny classifier, 2 steps."""
    import yaml

    subset = {
        "run": {"name": "rm", "output_dir": str(folder / "out"), "logging_steps": 1},
        "model": {"name": str(model_dir), "dtype": "fp32", "lora": {"enabled": False}},
        "data": {"source": str(data), "val_fraction": 0.25, "max_length": 96, "max_prompt_length": 64},
        "rm": {"loss": "absolute"},
        "train": {
            "learning_rate": 3e-3,
            "max_steps": 2,
            "batch_size": 8,
            "warmup_ratio": 0.0,
            "eval_steps": 10,
            "save_steps": 50,
            "save_total_limit": 1,
        },
    }
    path = folder / "rm.yaml"
    path.write_text(yaml.safe_dump({"default": {}, "tiny_rm": subset}))
    return path


def test_resuming_a_finished_rm_changes_nothing_and_extending_it_trains_one_step(tmp_path, tiny_rm_dir, caplog) -> None:
    from stage_runs import write_marker_data

    from crs.cli import run_stage
    from crs.rm.training import train_reward_model
    from crs.runs import run_state

    argv = [
        "--config",
        str(write_rm_config(tmp_path, tiny_rm_dir, write_marker_data(tmp_path, "absolute", n=32))),
        "--config_subset",
        "tiny_rm",
    ]
    run_stage(train_reward_model, "test", argv)
    run_dir = tmp_path / "out" / "rm"
    finished, first = run_files(run_dir), json.loads((run_dir / "metrics.json").read_text())
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2"]
    caplog.set_level(logging.INFO)
    run_stage(train_reward_model, "test", [*argv, "--resume"])
    assert f"{run_dir} already finished at step 2; nothing to resume (train.max_steps=2" in caplog.text
    assert run_files(run_dir) == finished  # no third step, checkpoint-2 not rotated away, still finished

    # One more step: it reads what it needs from checkpoint-2 before checkpoint-3 rotates it away.
    run_stage(train_reward_model, "test", [*argv, "--resume", "--set", "train.max_steps=3"])
    extended = json.loads((run_dir / "metrics.json").read_text())
    assert extended["global_step"] == 3 and extended["val_at_resume"]["step"] == 2
    assert extended["val_at_resume"]["mse"] == pytest.approx(
        first["val"]["mse"], rel=1e-5
    )  # it continued the finished weights
    assert extended["val_before_training"] == pytest.approx(first["val_before_training"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-3"]
    assert [r["step"] for r in read_jsonl(run_dir / "train_log.jsonl") if "loss" in r] == [1, 2, 3]  # step 3 once
    state = run_state(run_dir)
    assert state["status"] == "finished" and state["final_step"] == 3
