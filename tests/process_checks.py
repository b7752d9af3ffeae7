"""What each process of a two-process gloo world checks, run by the tests under ``torchrun``
(:func:`stage_runs.run_under_torchrun`); each process writes what it saw to ``<out>/rank<N>.json``.

``process_checks.py sharding FIXTURES OUT`` (tests/models/test_sharding.py): the frozen models crs loads
under FSDP's RAM-efficient loading, then FSDP2 saves of a LoRA and a fully fine-tuned model.
``process_checks.py timeout ROOT OUT`` (tests/test_processes.py): how long a process waits for another
whose stage started with ``run.ddp_timeout: 2``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from crs.processes import rank_and_world

IDS = [[5, 17, 230, 9, 41, 3]]  # the token ids every check scores


def scores(model: Any) -> list[float]:
    """The model's outputs on :data:`IDS` at the last position (a reward, or the first logits)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(IDS)).logits
    return logits[0, -1, :8].tolist() if logits.dim() == 3 else logits[0].tolist()


def frozen_loads(fixtures: Path) -> dict[str, Any]:
    """A LoRA reward model (as the reward scorers load it) and a LoRA policy run (as DPO's reference), with the
    flags ``accelerate launch`` sets for ``fsdp_cpu_ram_efficient_loading: true``."""
    from crs.models.loading import load_causal_lm, load_sequence_classifier

    os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_CPU_RAM_EFFICIENT_LOADING="true")
    seen: dict[str, Any] = {}
    try:
        for name, load in (
            ("reward_model", lambda: load_sequence_classifier(str(fixtures / "rm_run"), merge_adapter=False)),
            ("reference", lambda: load_causal_lm(str(fixtures / "lm_run"))),
        ):
            try:
                model = load().eval()
                seen[name] = {"meta": any(p.is_meta for p in model.parameters()), "scores": scores(model)}
            except Exception as err:  # reported, so that the test says which load failed and how
                seen[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
    finally:
        for key in ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING"):
            os.environ.pop(key, None)
    return seen


def trained_model(base: Path, lora: bool) -> Any:
    """The same trained-looking model on every process: a LoRA adapter with non-zero weights, or shifted weights."""
    from crs.config import LoraConfig
    from crs.models.loading import load_causal_lm
    from crs.models.lora import add_lora

    torch.manual_seed(0)  # one adapter init on every process, as the stages' run.seed gives
    model = load_causal_lm(str(base))
    if lora:
        model = add_lora(model, LoraConfig(r=4, alpha=8), "causal_lm")
    with torch.no_grad():
        for i, (name, param) in enumerate(model.named_parameters()):
            if not lora or "lora_B" in name:
                param.add_(0.02 * torch.sin(torch.arange(param.numel(), dtype=param.dtype) + i).view_as(param))
    return model.eval()


def as_fsdp2(accelerator: Any) -> None:
    """accelerate keeps FSDP to accelerators: on CPU the test sets its state to FSDP2 by hand (gloo carries it)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if getattr(accelerator.state, "fsdp_plugin", None) is None or not accelerator.is_fsdp2:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
            state_dict_type="FULL_STATE_DICT",
            cpu_ram_efficient_loading=False,
        )
    accelerator.state.distributed_type = DistributedType.FSDP


def fsdp2_saves(fixtures: Path, out: Path) -> dict[str, Any]:
    """Each model sharded by FSDP2, saved through crs's path, and reloaded on the main process."""
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    from crs.models.loading import load_causal_lm, load_tokenizer
    from crs.models.saving import save_run_model
    from crs.models.sharding import gathered_state_dict

    accelerator = Accelerator(cpu=True)
    tokenizer = load_tokenizer(str(fixtures / "base"))
    seen: dict[str, Any] = {}
    for name, lora in (("lora", True), ("full", False)):
        model = trained_model(fixtures / "base", lora)
        expected = torch.tensor(scores(model))
        as_fsdp2(accelerator)
        wrapped = accelerator.prepare(model)
        seen[f"{name}_sharded"] = any(isinstance(p, DTensor) for p in wrapped.parameters())
        as_fsdp2(accelerator)  # prepare sets the CPU state back
        whole = gathered_state_dict(accelerator, wrapped)  # every process
        if accelerator.is_main_process:
            run = out / name
            try:
                save_run_model(accelerator.unwrap_model(wrapped), tokenizer, run, str(fixtures / "base"), "causal_lm",
                               merge=lora, state_dict=whole)  # fmt: skip
                for folder in (run, run / "merged") if lora else (run,):
                    diff = (torch.tensor(scores(load_causal_lm(str(folder)))) - expected).abs().max()
                    seen[f"{name}_{folder.name}_max_diff"] = float(diff)
            except Exception as err:
                seen[f"{name}_error"] = f"{type(err).__name__}: {err}"[:300]
        accelerator.wait_for_everyone()
    return seen


def timed_wait(config: Any, run_dir: Path, resume: bool) -> None:
    """A stage function: rank 0 is busy for 8 s (a long save) while rank 1 waits for it in a barrier."""
    from crs.processes import wait_for_everyone

    started, error = time.monotonic(), None
    try:
        if rank_and_world()[0] == 0:
            time.sleep(8)
        wait_for_everyone()
    except Exception as err:  # the timeout, on the process that waited
        error = type(err).__name__
    record = {"waited": time.monotonic() - started, "error": error}
    (Path(sys.argv[3]) / f"rank{rank_and_world()[0]}.json").write_text(json.dumps(record))


def main() -> None:
    """``sharding FIXTURES OUT`` or ``timeout ROOT OUT``."""
    mode, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "timeout":
        from crs.cli import run_stage

        overrides = ["--set", f"run.output_dir={folder}", "--set", "run.ddp_timeout=2"]
        run_stage(timed_wait, "timeout check", ["--config_subset", "sft", *overrides])
        return
    from crs.processes import distributed_state

    distributed_state()
    seen = {"frozen": frozen_loads(folder), "fsdp2": fsdp2_saves(folder, out)}
    (out / f"rank{rank_and_world()[0]}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
