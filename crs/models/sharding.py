"""Models under DeepSpeed ZeRO-3 and FSDP: which ones load whole, and the whole weights of a sharded one to save.

Under ``accelerate launch`` with ZeRO-3 or FSDP the Trainer shards the model it trains; crs's other
models (reward scorers, DPO's frozen reference, the plain base an adapter names, a merge) are read
whole by plain forwards and must hold every weight on every process. Two switches of transformers'
``from_pretrained`` would give them less: ZeRO-3's partitioned init (``zero.Init``, on once the
stage's ``TrainingArguments`` exist), which is also a collective that hangs when one process loads
alone, and FSDP's RAM-efficient loading (``fsdp_cpu_ram_efficient_loading``), which leaves the
processes but the first with weights on the meta device (transformers 5.24: those the checkpoint
lacks, such as a fresh head), for the Trainer to broadcast into the model it prepares and nobody into
the others. :func:`whole_model_loading` turns
both off for one load; only the model a stage trains loads without it
(:func:`crs.models.loading.load_model`'s ``to_train``).

Saving a sharded model: under ZeRO-3 its parameters are empty placeholders, under FSDP2 each process
holds a slice. :func:`gathered_state_dict` gathers the whole weights (accelerate's
``Accelerator.get_state_dict``); every process must call it, the main process then saves them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FSDP_LOADING_FLAG = "FSDP_CPU_RAM_EFFICIENT_LOADING"  # what accelerate launch sets and transformers reads


@contextmanager
def whole_model_loading() -> Iterator[None]:
    """Models loaded inside hold all their weights on this process: no ZeRO-3 partitioning, no FSDP meta weights.

    transformers has no public switch for ZeRO-3's init: its ``from_pretrained`` asks
    ``is_deepspeed_zero3_enabled()``, which reads the DeepSpeed config registered by the stage's
    ``TrainingArguments`` (accelerate's ``zero3_init_context_manager(enable=False)`` registers the
    same stage-3 config again), so the registration is set aside for the load and put back after.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    flag = os.environ.get(FSDP_LOADING_FLAG)
    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    os.environ[FSDP_LOADING_FLAG] = "false"
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
        if flag is None:
            os.environ.pop(FSDP_LOADING_FLAG, None)
        else:
            os.environ[FSDP_LOADING_FLAG] = flag


def gathered_state_dict(accelerator: Any, wrapped_model: Any) -> dict[str, Any] | None:
    """The whole weights of a model sharded by ZeRO-3 or FSDP, on the main process (a collective: call it on every
    process); None where each process holds the whole model, whose own ``state_dict`` is then the one to save.

    ``wrapped_model`` is what the accelerator prepared (a Trainer's ``model_wrapped``: the DeepSpeed
    engine, the FSDP module). Under ZeRO-3 accelerate gathers the 16-bit weights, which needs
    ``zero3_save_16bit_model: true`` in the accelerate config (else its ValueError says so).
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        if accelerator.deepspeed_config.get("zero_optimization", {}).get("stage") != 3:
            return None  # ZeRO-1/2 shard the optimiser state, not the weights
    elif kind != DistributedType.FSDP:
        return None
    return accelerator.get_state_dict(wrapped_model)
