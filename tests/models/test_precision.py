"""Precision: ``model.dtype: auto`` (on a faked GPU too), fp16's loss scaling, and quantization that cannot
work here."""

from __future__ import annotations

import pytest
import torch

from crs.models.model_error import ModelError
from crs.models.precision import build_quantization_config, loss_scaler, resolve_dtype


def test_dtype_auto_reports_its_choice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="crs.models.precision")
    picked = resolve_dtype("auto")
    assert picked in (torch.bfloat16, torch.float16, torch.float32)
    assert "model.dtype auto ->" in caplog.text
    assert resolve_dtype("fp32") == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error path is for machines without CUDA")
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantization_without_cuda_fails_before_training(quantization: str) -> None:
    with pytest.raises(ModelError, match=rf"model.quantization={quantization} needs a CUDA GPU.*quantization: none"):
        build_quantization_config(quantization, torch.bfloat16)
    assert build_quantization_config("none", torch.bfloat16) is None


@pytest.mark.parametrize(("major", "picked"), [(7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)])
def test_dtype_auto_takes_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, major, picked) -> None:
    """A V100 / T4 (compute capability 7.x) only emulates bf16, slowly: auto takes fp16 there."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major, minor=0))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    assert torch.cuda.is_bf16_supported()  # torch's default check counts the emulation
    assert resolve_dtype("auto") == picked


def test_only_fp16_scales_the_loss() -> None:
    scalers = {dtype: loss_scaler(dtype, "cpu") for dtype in (torch.float16, torch.bfloat16, torch.float32)}
    assert {dtype: s.is_enabled() for dtype, s in scalers.items()} == {
        torch.float16: True,
        torch.bfloat16: False,
        torch.float32: False,
    }
    loss = torch.tensor(0.5)
    assert scalers[torch.float16].scale(loss).item() == 0.5 * scalers[torch.float16].get_scale()
    assert scalers[torch.bfloat16].scale(loss) is loss  # passes through unchanged
