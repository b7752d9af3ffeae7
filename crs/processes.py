"""The processes of one stage under ``torchrun`` / ``accelerate launch``, and their devices.

Training stages hand this to transformers' Trainer or accelerate. The evaluation stages use
these helpers: each process generates its share of the prompts on its own accelerator and
the main process gathers the shares and writes the files (never N processes writing one
file). A plain ``python`` run is one process of a world of one: everything here is then a
no-op, and nothing touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun / accelerate set them."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes the run directory (rank 0)."""
    return rank_and_world()[0] == 0


def process_device() -> Any:
    """This process's accelerator: ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def place_on_device(model: Any, device: Any) -> Any:
    """``model`` on ``device``, unless its loader already placed it (quantized weights, a
    ``device_map``), which ``.to`` would refuse or undo."""
    if getattr(model, "is_quantized", False) or getattr(model, "hf_device_map", None):
        return model
    return model.to(device)


def distributed_state(timeout_s: float | None = None) -> Any:
    """accelerate's ``PartialState`` for this world (the process group, started once).

    On a machine without CUDA it is started with ``cpu=True`` (gloo), else each CPU process
    believes it is the only one. ``timeout_s`` (``run.ddp_timeout``) bounds every wait on another
    process; it applies when this call starts the group (later calls, the Trainer's included,
    join the group as it is), so the stage runner passes it first.
    """
    import torch
    from accelerate import PartialState

    if timeout_s is None:
        return PartialState(cpu=not torch.cuda.is_available())
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def gather_shards(shard: dict[int, T]) -> dict[int, T]:
    """Every process's ``{index: item}`` merged, on every process (one process: ``shard`` itself)."""
    if rank_and_world()[1] == 1:
        return shard
    from accelerate.utils import gather_object

    distributed_state()
    merged: dict[int, T] = {}
    for part in gather_object([shard]):
        merged.update(part)
    return merged


def wait_for_everyone() -> None:
    """A barrier across the processes (nothing with one)."""
    if rank_and_world()[1] > 1:
        distributed_state().wait_for_everyone()
