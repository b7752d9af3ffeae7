"""Pre-packed CPU linear layers give nn.Linear's results, follow weight changes, and fall back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crs.models.packed_linear import PackedLinear, pack_linears, packing_supported


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_matches_linear_for_any_row_count(dtype):
    if not packing_supported(dtype):
        pytest.skip(f"no packed {dtype} kernel in this PyTorch build")
    torch.manual_seed(0)
    linear = nn.Linear(48, 96).to(dtype).requires_grad_(False)
    packed = PackedLinear(linear, batch_hint=4)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for rows in (4, 7):  # the hinted row count and another
        x = torch.randn(rows, 48).to(dtype)
        assert torch.allclose(packed(x).float(), linear(x).float(), atol=tol, rtol=tol)
    with torch.no_grad():
        linear.weight.mul_(-2.0)  # shared with the packed layer: stale until repacked
    x = torch.randn(4, 48).to(dtype)
    assert not torch.allclose(packed(x).float(), linear(x).float(), atol=tol, rtol=tol)
    packed.repack()
    assert torch.allclose(packed(x).float(), linear(x).float(), atol=tol, rtol=tol)


def test_pack_linears_replaces_nested_layers_and_keeps_the_output():
    if not packing_supported(torch.float32):
        pytest.skip("no packed fp32 kernel in this PyTorch build")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4))).requires_grad_(False)
    x = torch.randn(3, 8)
    expected = model(x)
    packed = pack_linears(model, batch_hint=3)
    assert sorted(packed) == ["0", "2.0"]
    assert isinstance(model[0], PackedLinear) and isinstance(model[2][0], PackedLinear)
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_unsupported_dtype_is_left_alone():
    assert not packing_supported(torch.float16)
    model = nn.Sequential(nn.Linear(4, 4).half())
    assert pack_linears(model, batch_hint=2) == {}
    assert type(model[0]) is nn.Linear
