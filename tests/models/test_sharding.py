"""Models under ZeRO-3 and FSDP: frozen models load whole, sharded models save their whole weights.

Two gloo processes under torchrun check FSDP's RAM-efficient loading and FSDP2 saves
(tests/process_checks.py); ZeRO-3 needs DeepSpeed, which a CPU test stands in for: a registered
stage-3 config makes transformers' ``from_pretrained`` reach for ``deepspeed.zero.Init``, and a
model whose parameters are empty placeholders is what ZeRO-3 leaves on each process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from paths import ROOT
from process_checks import scores, trained_model
from stage_runs import run_under_torchrun

from crs.config import LoraConfig
from crs.models.loading import load_causal_lm, load_sequence_classifier
from crs.models.lora import add_lora
from crs.models.saving import plain_base_location, save_run_model
from crs.models.sharding import FSDP_LOADING_FLAG, gathered_state_dict, whole_model_loading

pytestmark = pytest.mark.usefixtures("one_thread")


def lora_run(base: Path, run: Path, tokenizer: Any, kind: str) -> list[float]:
    """A LoRA run of ``kind`` on ``base`` with non-zero adapter weights (and a fresh RM head); its scores on IDS."""
    torch.manual_seed(0)
    plain = load_causal_lm(str(base)) if kind == "causal_lm" else load_sequence_classifier(str(base))
    model = add_lora(plain, LoraConfig(r=4, alpha=8), kind)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    model.eval()
    save_run_model(model, tokenizer, run, str(base), kind)
    return scores(model)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_model_dir, smol_tokenizer) -> dict[str, Any]:
    """What each of two processes saw (``rank0``, ``rank1``) and what one process computes (``expected``)."""
    fixtures, out = tmp_path_factory.mktemp("sharding_fixtures"), tmp_path_factory.mktemp("sharding_out")
    (fixtures / "base").symlink_to(tiny_model_dir)
    expected = {
        "reward_model": lora_run(tiny_model_dir, fixtures / "rm_run", smol_tokenizer, "reward_model"),
        "reference": lora_run(tiny_model_dir, fixtures / "lm_run", smol_tokenizer, "causal_lm"),
    }
    run_under_torchrun(ROOT / "tests" / "process_checks.py", ["sharding", str(fixtures), str(out)], ROOT, 300)
    seen = {f"rank{r}": json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)}
    return {**seen, "expected": expected}


@pytest.mark.parametrize("model", ["reward_model", "reference"])
@pytest.mark.parametrize("rank", ["rank0", "rank1"])
def test_frozen_models_load_whole_on_every_process_under_fsdp_ram_efficient_loading(two_processes, rank, model):
    seen = two_processes[rank]["frozen"][model]
    assert "error" not in seen, seen["error"]
    assert not seen["meta"]
    assert seen["scores"] == pytest.approx(two_processes["expected"][model], abs=1e-5)


@pytest.mark.parametrize("name, folders", [("lora", ("lora", "merged")), ("full", ("full",))])
def test_an_fsdp2_sharded_model_saves_its_whole_weights(two_processes, name, folders):
    seen = two_processes["rank0"]["fsdp2"]
    assert seen[f"{name}_sharded"] and two_processes["rank1"]["fsdp2"][f"{name}_sharded"]  # really sharded
    assert f"{name}_error" not in seen, seen[f"{name}_error"]
    for folder in folders:  # the run reloaded through crs, and the merged plain model: the trained model's outputs
        assert seen[f"{name}_{folder}_max_diff"] < 1e-5


class FakeZero3Config:
    """What transformers reads through its registered DeepSpeed config: a ZeRO-3 config (as the stage's
    TrainingArguments register it under ``accelerate launch`` with ZeRO-3)."""

    config = {"zero_optimization": {"stage": 3}}

    def is_zero3(self) -> bool:
        return True


@pytest.fixture()
def zero3_registered():
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    registered = FakeZero3Config()
    set_hf_deepspeed_config(registered)
    yield registered
    unset_hf_deepspeed_config()


def test_whole_model_loading_sets_zero3_and_the_fsdp_flag_aside_and_puts_them_back(zero3_registered, monkeypatch):
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    monkeypatch.setenv(FSDP_LOADING_FLAG, "true")
    with whole_model_loading():
        assert not is_deepspeed_zero3_enabled() and os.environ[FSDP_LOADING_FLAG] == "false"
        with whole_model_loading():  # nested (a run's base inside a run's load)
            pass
        assert not is_deepspeed_zero3_enabled()
    assert is_deepspeed_zero3_enabled() and os.environ[FSDP_LOADING_FLAG] == "true"


def test_only_the_trained_model_loads_through_zero3_init(zero3_registered, tiny_model_dir, smol_tokenizer, tmp_path):
    lora_run(tiny_model_dir, tmp_path / "sft", smol_tokenizer, "causal_lm")
    # The control: the model a stage trains goes to transformers' zero.Init, which DeepSpeed (absent here) provides.
    with pytest.raises(ImportError, match="deepspeed"):
        load_causal_lm(str(tiny_model_dir), to_train=True)
    # Any other load reads whole weights, on one process alone too: the plain base a run's adapter names
    # (written by rank 0 while the others wait), a frozen model.
    merged = plain_base_location(str(tmp_path / "sft"), torch.float32)
    assert torch.allclose(
        torch.tensor(scores(load_causal_lm(merged))), torch.tensor(scores(load_causal_lm(str(tmp_path / "sft"))))
    )
    assert scores(load_causal_lm(str(tiny_model_dir))) == scores(load_causal_lm(str(tiny_model_dir), to_train=False))


def zero3_accelerator(whole: dict[str, torch.Tensor], stage: int = 3) -> Any:
    """An accelerator under DeepSpeed ZeRO-``stage`` whose ``get_state_dict`` gathers ``whole``."""
    from accelerate.utils import DistributedType

    return SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        deepspeed_config={"zero_optimization": {"stage": stage}},
        get_state_dict=lambda wrapped: whole,
    )


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_a_zero3_model_saves_the_gathered_weights_not_its_placeholders(tiny_model_dir, smol_tokenizer, tmp_path, lora):
    model = trained_model(tiny_model_dir, lora)
    expected, whole = torch.tensor(scores(model)), {k: v.clone() for k, v in model.state_dict().items()}
    for param in model.parameters():  # what ZeRO-3 leaves on each process: empty placeholders
        param.data = torch.empty(0, dtype=param.dtype)
    gathered = gathered_state_dict(zero3_accelerator(whole), model)
    save_run_model(model, smol_tokenizer, tmp_path, str(tiny_model_dir), "causal_lm", merge=lora, state_dict=gathered)
    for folder in (tmp_path, tmp_path / "merged") if lora else (tmp_path,):
        assert torch.allclose(torch.tensor(scores(load_causal_lm(str(folder)))), expected, atol=1e-5), folder


def test_only_zero3_and_fsdp_gather() -> None:
    from accelerate.utils import DistributedType

    assert gathered_state_dict(zero3_accelerator({"w": torch.ones(1)}), None) == {"w": torch.ones(1)}
    assert gathered_state_dict(zero3_accelerator({"w": torch.ones(1)}, stage=2), None) is None  # whole weights
    data_parallel = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, get_state_dict=None)
    assert gathered_state_dict(data_parallel, None) is None
