"""Precision: ``model.dtype: auto`` and quantization that cannot work here."""

from __future__ import annotations

import pytest
import torch

from crs.models.model_error import ModelError
from crs.models.precision import build_quantization_config, resolve_dtype


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
