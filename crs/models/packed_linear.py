"""Frozen linear layers with weights pre-packed for the CPU matmul libraries.

Sampling multiplies a handful of rows (the batch) by every weight matrix once per token.
At that size the matmul libraries spend much of each call re-packing the weight into their
blocked layout; packing once ahead for oneDNN (what ``torch.compile``'s freezing does on
CPU) runs those matmuls several times faster, in bf16 and fp32 (measured: docs/results.md). Only frozen
copies qualify: the merged sampling copy of :class:`crs.rl.ppo.policy.MergedSampler`, repacked
when it is refreshed.

The packed kernels are private PyTorch operators, so :func:`packing_supported` tries them
once on a small matrix and everything falls back to ``F.linear`` when they are missing or
disagree.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn


def _pack(weight: torch.Tensor, batch_hint: int) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)


def _packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype), packed, bias, "none", [], "")


@cache
def packing_supported(dtype: torch.dtype) -> bool:
    """Whether packed CPU kernels exist for ``dtype`` in this PyTorch build and give F.linear's result."""
    if dtype not in (torch.float32, torch.bfloat16):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(64, 32, generator=generator).to(dtype)
        x = torch.randn(4, 32, generator=generator).to(dtype)
        out = _packed_linear(x, _pack(weight, 4), None)
        return bool(torch.allclose(out.float(), F.linear(x, weight).float(), atol=0.05, rtol=0.02))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class PackedLinear(nn.Module):
    """A frozen ``nn.Linear`` computed from a pre-packed copy of its weight (CPU only).

    Shares ``weight`` and ``bias`` with the layer it replaces; call :meth:`repack` after
    changing them. Costs one more copy of the weight.
    """

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        self.weight, self.bias, self.batch_hint = linear.weight, linear.bias, batch_hint
        self.repack()

    @torch.no_grad()
    def repack(self) -> None:
        """Pack the current weight."""
        self.packed = _pack(self.weight.detach(), self.batch_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T + bias``."""
        return _packed_linear(x, self.packed, self.bias)


def pack_linears(module: nn.Module, batch_hint: int) -> dict[str, PackedLinear]:
    """Replace every ``nn.Linear`` inside ``module`` (itself included) by a :class:`PackedLinear`.

    Returns the new layers by module name. Layers whose dtype has no packed kernel stay.
    """
    packed: dict[str, PackedLinear] = {}
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and packing_supported(child.weight.dtype):
                layer = PackedLinear(child, batch_hint)
                setattr(parent, child_name, layer)
                packed[f"{name}.{child_name}" if name else child_name] = layer
    return packed
