"""What crs writes loads outside crs: peft's plain ``from_pretrained`` gives the very model crs trained.

An RL run's adapter sits on the SFT policy (SFT's adapter merged into the base), not on the
raw base; a plain load that used the raw base would silently drop SFT. Each test trains a
tiny run, then compares the logits of the plain load with crs's own load of the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from paths import ROOT
from stage_runs import run_cli, tiny_config, write_config, write_marker_data

from crs.cli import run_stage
from crs.models.loading import load_model
from crs.rm.training import train_reward_model
from crs.sft.fine_tuning import train_sft

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA SFT run whose adapter moved the tiny policy a lot: 2 steps at learning rate 0.05."""
    out = tmp_path_factory.mktemp("sft")
    settings = {
        "run.output_dir": out,
        "model.name": tiny_model_dir,
        "model.dtype": "fp32",
        "model.lora.r": 4,
        "model.lora.dropout": 0.0,
        "data.source": ROOT / "examples" / "sft_example.jsonl",
        "data.val_fraction": 0.0,
        "train.max_steps": 2,
        "train.learning_rate": 0.05,
        "train.lr_scheduler": "constant",
        "train.warmup_ratio": 0.0,
        "train.batch_size": 4,
    }
    args = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    run_stage(train_sft, "sft", ["--config_subset", "sft", *args])
    return out / "sft"


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 17, 400, 23, 9, 301, 77, 5], [2, 88, 14, 600, 31, 3, 42, 11]])


def plain_causal_lm_logits(run_dir: Path) -> torch.Tensor:
    from peft import AutoPeftModelForCausalLM

    with torch.no_grad():
        return (
            AutoPeftModelForCausalLM.from_pretrained(str(run_dir / "adapter"), dtype=torch.float32)
            .eval()(_ids())
            .logits
        )


def crs_logits(run_dir: Path, kind: str) -> torch.Tensor:
    with torch.no_grad():
        return load_model(str(run_dir), kind, dtype=torch.float32).eval()(_ids()).logits


def test_the_sft_adapter_loads_plainly_as_the_trained_policy(sft_run, tiny_model_dir):
    plain = plain_causal_lm_logits(sft_run)
    torch.testing.assert_close(plain, crs_logits(sft_run, "causal_lm"), rtol=0, atol=1e-5)
    assert (
        plain - crs_logits(tiny_model_dir, "causal_lm")
    ).abs().max() > 0.1  # SFT changed the model: the check can fail


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "dpo"])
def test_an_rl_runs_adapter_loads_plainly_as_the_trained_policy(tmp_path, sft_run, tiny_model_dir, algorithm):
    extra = {"mini_batch_size": 4} if algorithm == "ppo" else {}
    run_dir = run_cli(
        write_config(tmp_path, tiny_model_dir, algorithm=algorithm, policy=str(sft_run), steps=1, save_steps=0, **extra)
    )
    base = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base) == (sft_run / "merged").resolve()  # the SFT policy it trained on, written once
    plain = plain_causal_lm_logits(run_dir)
    torch.testing.assert_close(plain, crs_logits(run_dir, "causal_lm"), rtol=0, atol=1e-5)
    # What a plain load of the raw base + this adapter gives (the old adapter_config): far off.
    from peft import PeftModel

    from crs.models.loading import load_causal_lm

    raw = PeftModel.from_pretrained(
        load_causal_lm(str(tiny_model_dir), dtype=torch.float32), str(run_dir / "adapter")
    ).eval()
    with torch.no_grad():
        assert (raw(_ids()).logits - plain).abs().max() > 0.1


@pytest.mark.parametrize("loss", ["pairwise", "disentangled"])
def test_a_reward_model_loads_plainly_as_the_trained_scorer(tmp_path, tiny_rm_dir, monkeypatch, loss):
    """A disentangled RM trains two heads and saves its quality head alone: it loads like a pairwise one,
    with one output, and that output is the quality head's as it was at the end of training."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    import crs.rm.training as training

    heads_at_the_end: list[torch.Tensor] = []
    keep = training.keep_quality_head

    def recording_keep(model, head, *whole):  # the two heads' outputs just before the length head is dropped
        with torch.no_grad():
            heads_at_the_end.append(model.eval()(_ids()).logits)
        keep(model, head, *whole)

    monkeypatch.setattr(training, "keep_quality_head", recording_keep)
    cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise", n=16), loss, steps=2, lr=0.05)
    cfg.model.lora.enabled, cfg.model.lora.r, cfg.model.lora.merge = True, 4, True
    run_dir = tmp_path / "rm"
    train_reward_model(cfg, run_dir)
    with torch.no_grad():
        plain = AutoPeftModelForSequenceClassification.from_pretrained(
            str(run_dir / "adapter"), num_labels=1, dtype=torch.float32
        ).eval()
        plain_scores = plain(_ids()).logits
        merged = AutoModelForSequenceClassification.from_pretrained(str(run_dir / "merged"), dtype=torch.float32)
        merged_scores = merged.eval()(_ids()).logits
    torch.testing.assert_close(plain_scores, crs_logits(run_dir, "reward_model"), rtol=0, atol=1e-5)
    torch.testing.assert_close(merged_scores, plain_scores, rtol=0, atol=1e-5)
    with torch.no_grad():  # the head trained (modules_to_save): the adapter is not a no-op on the base
        assert (plain_scores - crs_logits(tiny_rm_dir, "reward_model")).abs().max() > 1e-3
    if loss == "disentangled":
        (heads,) = heads_at_the_end
        assert heads.shape == (2, 2) and merged.config.num_labels == 1
        torch.testing.assert_close(plain_scores[:, 0], heads[:, 0], rtol=0, atol=1e-5)  # the quality head
        assert (plain_scores[:, 0] - heads[:, 1]).abs().max() > 1e-3  # not the length head
    else:
        assert heads_at_the_end == []


# --------------------------------------------------------------------------- TensorBoard logs


def tensorboard_scalars(logs: Path) -> dict[str, dict[int, float]]:
    """Every scalar under ``logs`` (all event files), by tag and step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in sorted(logs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return scalars


@pytest.mark.parametrize("stage", ["sft", "rm", "ppo", "grpo", "dpo"])
def test_report_to_tensorboard_logs_every_training_stage_under_run_logs(tmp_path, tiny_model_dir, tiny_rm_dir, stage):
    pytest.importorskip("tensorboard")
    report = ("--set", "run.report_to=tensorboard")
    if stage == "sft":
        settings = {
            "run.output_dir": tmp_path,
            "model.name": tiny_model_dir,
            "model.dtype": "fp32",
            "data.source": ROOT / "examples" / "sft_example.jsonl",
            "data.val_fraction": 0.0,
            "train.max_steps": 2,
            "train.batch_size": 4,
            "run.logging_steps": 1,
        }
        run_stage(
            train_sft,
            "sft",
            ["--config_subset", "sft", *report, *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]],
        )
        run_dir, log, tag, key = tmp_path / "sft", "train_log.jsonl", "train/loss", "loss"
    elif stage == "rm":
        cfg = tiny_config(tiny_rm_dir, write_marker_data(tmp_path, "pairwise", n=16), "pairwise", steps=2)
        cfg.run.report_to, cfg.run.logging_steps = "tensorboard", 1
        run_dir, log, tag, key = tmp_path / "rm", "train_log.jsonl", "train/loss", "loss"
        train_reward_model(cfg, run_dir)
    else:
        extra = {"mini_batch_size": 4} if stage == "ppo" else {}
        run_dir = run_cli(
            write_config(tmp_path, tiny_model_dir, algorithm=stage, steps=2, save_steps=0, **extra), *report
        )
        # PPO logs crs's names as they are; TRL's trainers under train/ (metrics.jsonl renames DPO's loss)
        log, (tag, key) = (
            "metrics.jsonl",
            {
                "ppo": ("reward/combined",) * 2,
                "grpo": ("train/reward/combined", "reward/combined"),
                "dpo": ("train/loss", "dpo/loss"),
            }[stage],
        )
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("logs", "runs"))) == ["logs"]  # one layout
    logged = tensorboard_scalars(run_dir / "logs")
    rows = [json.loads(line) for line in (run_dir / log).read_text().splitlines()]
    first = next(r for r in rows if key in r)
    assert logged[tag][first["step"]] == pytest.approx(
        first[key], rel=1e-5, abs=1e-6
    )  # the number the run logged, read back
    assert not (run_dir / "checkpoints" / "runs").exists()  # not transformers' default folder
