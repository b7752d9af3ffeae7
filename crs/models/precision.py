"""Precision: the dtype ``model.dtype`` names, autocast for half-precision forwards, loss scaling for fp16,
fp32 trainable weights, and the bitsandbytes config of ``model.quantization``."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from crs.models.model_error import ModelError

logger = logging.getLogger(__name__)


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def cuda_has_fast_bf16() -> bool:
    """Whether the CUDA GPU computes in bf16 natively (compute capability 8.0 or later; ROCm: yes).

    ``torch.cuda.is_bf16_supported()`` alone also says yes where bf16 is only emulated (V100, T4),
    which runs far slower than fp16 there.
    """
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` -> bf16 where the hardware has fast bf16 (a CUDA GPU of compute capability 8.0+, an
    AMX/avx512_bf16 CPU), fp16 on an older CUDA GPU, else fp32."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name in table:
        return table[name]
    if name != "auto":
        raise ModelError(f"model.dtype: unknown dtype {name!r}; use auto, bf16, fp16 or fp32")
    if torch.cuda.is_available():
        picked, why = (
            (torch.bfloat16, "CUDA GPU with bf16")
            if cuda_has_fast_bf16()
            else (torch.float16, "CUDA GPU without native bf16")
        )
    elif _cpu_has_fast_bf16():
        picked, why = torch.bfloat16, "CPU with AMX/avx512_bf16"
    else:
        picked, why = torch.float32, "no fast half precision found"
    logger.info("model.dtype auto -> %s (%s)", str(picked).replace("torch.", ""), why)
    return picked


@contextlib.contextmanager
def autocast(dtype: torch.dtype, device: torch.device | str = "cpu") -> Iterator[None]:
    """Mixed precision for forward passes when ``dtype`` is half; a no-op for fp32.

    Trainable parameters are kept in fp32 (see :func:`upcast_trainable`) while frozen
    weights stay in half precision, so forwards need autocast to mix them.
    """
    device_type = torch.device(device).type
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def loss_scaler(dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.amp.GradScaler:
    """A gradient scaler for a training loop that autocasts to ``dtype``: on for fp16, whose small
    gradients underflow to zero unscaled; off (every call passes through) for bf16 and fp32.

    Call ``unscale_`` before clipping the gradient norm, so the clipping sees the true gradients.
    """
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def upcast_trainable(model: torch.nn.Module) -> None:
    """Keep trainable parameters in fp32: Adam updates vanish in bf16."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def build_quantization_config(quantization: str, compute_dtype: torch.dtype) -> Any | None:
    """A bitsandbytes config for 8bit/4bit (QLoRA), or None; fails early where it cannot work."""
    if quantization == "none":
        return None
    if not torch.cuda.is_available():
        raise ModelError(
            f"model.quantization={quantization} needs a CUDA GPU (bitsandbytes k-bit training); "
            "this machine has none. Set model.quantization: none (LoRA in bf16 is the CPU path)."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"model.quantization={quantization} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
