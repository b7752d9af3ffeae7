"""Helpers that several test files share to write tiny configs and data and to run a stage."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import ROOT
from tiny import tiny_causal_lm

from crs.config import CRSConfig

EXAMPLES = ROOT / "examples" / "sft_example.jsonl"


WORDS = "apple river stone cloud music garden window paper light table".split()


def tiny_model_dir(tmp_path: Path, tokenizer) -> Path:
    path = tmp_path / "tiny-base"
    tiny_causal_lm(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_marker_data(folder: Path, loss: str, n: int = 64, seed: int = 0) -> Path:
    """Canonical rows whose good replies end with the word "excellent": separable data.

    At the end, the marker is the token a decoder classifier reads its reward at, so a
    tiny model trained from scratch separates the classes within a few dozen steps.
    """
    rng = random.Random(seed)

    def filler() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))

    rows = []
    for i in range(n):
        prompt = f"Question {i}: {filler()}?"
        good, bad = f"{filler()} excellent", filler()
        if loss == "pairwise":
            rows.append({"prompt": prompt, "replies": [good, bad], "scores": [0.9, 0.1]})
        else:
            rows.append({"prompt": prompt, "reply": good if i % 2 else bad, "score": 0.9 if i % 2 else 0.1})
    path = folder / f"marker_{loss}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def tiny_config(model_dir: Path, data: Path, loss: str, steps: int, lr: float = 3e-3) -> CRSConfig:
    """Full fine-tuning of the tiny model in fp32, evaluating every 10 steps."""
    cfg = CRSConfig()
    cfg.model.name, cfg.model.dtype, cfg.model.lora.enabled = str(model_dir), "fp32", False
    cfg.data.source, cfg.data.val_fraction, cfg.data.max_length = str(data), 0.25, 96
    cfg.rm.loss = loss
    cfg.train.learning_rate, cfg.train.max_steps, cfg.train.batch_size, cfg.train.warmup_ratio = lr, steps, 8, 0.0
    cfg.train.eval_steps, cfg.train.save_steps, cfg.run.logging_steps = 10, 1000, 5
    return cfg


def trained_tiny_rm(model_dir: Path, folder: Path) -> Path:
    """A pairwise reward-model run of the tiny model, one step on marker data: a real run folder (its model,
    ``rm_format.json``, ``reward_stats.json``) that ``path:`` names as a reward source."""
    from crs.config import save_resolved_config
    from crs.rm.training import train_reward_model

    cfg = tiny_config(model_dir, write_marker_data(folder, "pairwise", n=16), "pairwise", steps=1)
    cfg.subset, cfg.data.max_prompt_length = "tiny_rm", 48  # a config that validates, to be read back
    run_dir = folder / "rm"
    train_reward_model(cfg, run_dir)
    save_resolved_config(cfg, run_dir / "config.resolved.yaml")  # as run_stage writes it
    return run_dir


def prompts_file(folder: Path) -> Path:
    """20 canonical prompt rows (the embedded demo data is not needed by these tests)."""
    path = folder / "prompts.jsonl"
    rows = [{"prompt": f"Name {i % 5 + 2} things about topic {i}.", "id": f"p{i}"} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_rl_config(path: Path, model_dir: Path, output_dir: Path, **rl) -> Path:
    """A config file with one subset, ``tiny_rl``: the tiny policy, 4 rollouts, a text reward."""
    settings = {
        "policy": None,
        "steps": 4,
        "batch_size": 4,
        "mini_batch_size": 4,
        "ppo_epochs": 2,
        "max_new_tokens": 5,
        "learning_rate": 1e-3,
        "adaptive_kl": True,
        "kl_horizon": 20,
        "target_kl": 0.01,
        "save_steps": 2,
        "sample_every": 2,
        "num_sample_prompts": 2,
        "rewards": [
            {
                "name": "chars",
                "path": "python:tests.reward_fns:distinct_characters",
                "weight": 1.0,
                "normalize": "zscore",
            }
        ],
    }
    settings.update(rl)
    config = {
        "default": {},
        "tiny_rl": {
            "run": {"name": "rl", "output_dir": str(output_dir), "logging_steps": 1},
            "model": {
                "name": str(model_dir),
                "dtype": "fp32",
                "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0},
            },
            "data": {"source": str(prompts_file(path.parent)), "max_prompt_length": 48, "val_fraction": 0.1},
            "rl": settings,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_config(folder: Path, model_dir: Path, **rl) -> Path:
    """One subset, ``tiny``: the tiny policy, 12 prompts (or rankings for DPO), two text rewards."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"topic {i}", "id": f"p{i}"}) + "\n" for i in range(12)))
    rankings = folder / "rankings.jsonl"
    rankings.write_text(
        "".join(
            json.dumps({"prompt": f"topic {i}", "replies": ["yes yes yes", "no no", "no"]}) + "\n" for i in range(12)
        )
    )
    settings = {
        "policy": None,
        "steps": 4,
        "batch_size": 4,
        "group_size": 2,
        "max_new_tokens": 4,
        "learning_rate": 1e-2,
        "save_steps": 2,
        "reward_clip": 4.0,
        "missing_eos_penalty": -1.0,
        "rewards": [
            {"name": "chars", "path": "python:tests.reward_fns:reply_length", "weight": 1.0, "normalize": "zscore"},
            {"name": "vowels", "path": "python:tests.reward_fns:count_vowels", "weight": 0.5, "normalize": "zscore"},
        ],
    }
    settings.update(rl)
    config = {
        "default": {},
        "tiny": {
            "run": {"name": "rl", "output_dir": str(folder / "out"), "logging_steps": 1},
            "model": {
                "name": str(model_dir),
                "dtype": "fp32",
                "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0},
            },
            "data": {
                "source": str(rankings if settings["algorithm"] == "dpo" else prompts),
                "max_prompt_length": 16,
                "max_length": 40,
                "val_fraction": 0.25,
            },
            "rl": settings,
        },
    }
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(path: Path, *extra: str) -> Path:
    from crs.cli import run_stage
    from crs.rl.dispatch import run_rl_stage

    run_stage(run_rl_stage, "test", ["--config", str(path), "--config_subset", "tiny", *extra])
    return path.parent / "out" / "rl"


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_run_outputs(run_dir: Path, algorithm: str, steps: int) -> dict:
    from crs.models.loading import load_causal_lm
    from crs.runs import run_state

    state = run_state(run_dir)
    assert (
        state["status"] == "finished"
        and state["summary"]["algorithm"] == algorithm
        and state["summary"]["steps"] == steps
    )
    assert (run_dir / "adapter" / "adapter_config.json").is_file() and (run_dir / "config.resolved.yaml").is_file()
    manifest = json.loads((run_dir / "crs_model.json").read_text())
    assert manifest["kind"] == "causal_lm" and manifest["full_model"] is False
    assert load_causal_lm(str(run_dir)).config.hidden_size == 32  # the eval stages' way in
    rows = log_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # one row per step, only the main process's
    assert {"step", "learning_rate", "time/step"} <= rows[0].keys()
    return state


def capture_trl_rewards(monkeypatch: pytest.MonkeyPatch, algorithm: str) -> list[tuple[Any, Any, Any, list[float]]]:
    """Record, per batch, what TRL's GRPO/RLOO trainer scored: (prompts, completions, completion ids, first reward
    column)."""
    import trl

    base = trl.GRPOTrainer if algorithm == "grpo" else trl.RLOOTrainer
    real, seen = base._calculate_rewards, []

    def capture(self, inputs, prompts, completions, completion_ids_list):
        out = real(self, inputs, prompts, completions, completion_ids_list)
        seen.append((prompts, completions, completion_ids_list, out[:, 0].tolist()))
        return out

    monkeypatch.setattr(base, "_calculate_rewards", capture)
    return seen


def write_prediction_run(folder: Path, files: dict[str, list[str]], listed: list[str] | None = None) -> Path:
    """An eval_pred run: one file per model with replies to the given prompt ids."""
    from crs.eval.prediction_files import write_predictions

    for model, prompt_ids in files.items():
        rows = [
            {
                "instruction": f"question {p}",
                "output": f"{model} says {p} " * (i + 1),
                "generator": model,
                "dataset": "t",
                "prompt_id": p,
                "run": 0,
            }
            for i, p in enumerate(prompt_ids)
        ]
        write_predictions(folder / "predictions" / f"{model}.json", rows)
    if listed is not None:
        models = [{"name": m, "path": f"outputs/{m}"} for m in listed]
        (folder / "config.resolved.yaml").write_text(
            yaml.safe_dump({"default": {}, "eval_pred": {"eval_pred": {"models": models}}})
        )
    return folder


def frozen_rl_run(folder: Path, rl: dict[str, Any], frozen: dict[str, Any], step: int = 1) -> Path:
    """``folder/rl_run``: an RL run as `crs score` and `crs serve-reward` read one, its ``rl`` block in
    config.resolved.yaml and a sealed PPO checkpoint ``step_<step>`` holding the reward scale it froze."""
    from crs.runs import seal_checkpoint

    run, checkpoint = folder / "rl_run", folder / "rl_run" / "checkpoints" / f"step_{step}"
    checkpoint.mkdir(parents=True)
    (run / "config.resolved.yaml").write_text(yaml.safe_dump({"default": {}, "rl_x": {"rl": rl}}))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": step, "reward": frozen}))
    seal_checkpoint(checkpoint)
    return run


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run, by path: what "changes nothing" compares."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def run_under_torchrun(script: Path, args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """``script`` on two CPU processes under torchrun (gloo), offline, one thread each; fails the test on a
    non-zero exit, and on a run that outlasts ``timeout`` s (a hang: torchrun and both workers are killed)."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launch, str(script), *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Terminated, torchrun stops its workers (each in a session of its own, out of reach of a
        # kill of torchrun alone): SIGTERM, then SIGKILL after its grace period.
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = "", "(torchrun did not stop when terminated)"
        pytest.fail(f"torchrun did not finish within {timeout} s (a hang?)\n{stdout[-3000:]}{stderr[-3000:]}")
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_rl_under_torchrun(config: Path, subset: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """rl_train.py on two CPU processes under torchrun, offline, one thread each; fails the test on a non-zero exit."""
    return run_under_torchrun(ROOT / "rl_train.py", ["--config", str(config), "--config_subset", subset], cwd, timeout)


def record_arguments_and_loads(monkeypatch) -> list[tuple[str, bool]]:
    """From now on, in order: each ``TrainingArguments`` made (``("arguments", False)``; TRL's configs are some)
    and each model crs loads (``("load", to_train)``)."""
    from transformers import TrainingArguments

    from crs.models import loading

    events: list[tuple[str, bool]] = []
    make, load = TrainingArguments.__post_init__, loading._load_plain

    def arguments(self, *args, **kwargs):
        events.append(("arguments", False))
        return make(self, *args, **kwargs)

    def plain(*args, to_train: bool = False, **kwargs):
        events.append(("load", to_train))
        return load(*args, to_train=to_train, **kwargs)

    monkeypatch.setattr(TrainingArguments, "__post_init__", arguments)
    monkeypatch.setattr(loading, "_load_plain", plain)
    return events


def trained_after_arguments(events: list[tuple[str, bool]]) -> bool:
    """Whether the model a stage trains loaded after the stage's arguments were made (what ZeRO-3's init needs)."""
    return ("load", True) in events and events.index(("arguments", False)) < events.index(("load", True))
