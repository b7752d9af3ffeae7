"""On CPU, keep freed memory in the process: the same large tensors come back every training step."""

from __future__ import annotations

import os
import sys

import torch

# glibc's mallopt parameters (malloc.h), and the environment variables that set them.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """On a CPU-only Linux machine, make glibc keep freed memory for reuse; whether it was set.

    A training step allocates the same large tensors every time (the (batch, tokens, vocab)
    logits and their gradients: ~75 MB each in the PPO benchmark, ~800 MB in the demo's SFT).
    By default glibc serves each from a fresh mmap and returns it to the OS when freed, so
    every step pays the page faults again. Kept, the steps run faster, at a higher peak memory
    where freed blocks of varied sizes stay in the process (measured: docs/results.md). Skipped
    where a GPU is present (host memory there holds large one-off buffers best returned) and when the user set either
    ``MALLOC_*`` variable (their choice wins; note that setting any of them also turns off
    glibc's adaptive mmap threshold); ``run.keep_freed_memory: false`` skips the call.
    """
    import ctypes
    import ctypes.util

    if sys.platform != "linux" or torch.cuda.is_available() or any(name in os.environ for name in _MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
