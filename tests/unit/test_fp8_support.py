"""Run-time float8 detection: fp8 storage where the probe passes, bf16 with a reason where it does not."""
from __future__ import annotations

import torch

from wan_accel_kernels.fp8 import FP8_DTYPE, compute_dtype_for, storage_support
from wan_accel_kernels.fp8 import support


def test_cpu_stores_fp8_and_computes_fp32():
    result = storage_support("cpu")
    assert result.fp8 and result.storage_dtype == FP8_DTYPE
    assert compute_dtype_for("cpu") == torch.float32
    assert compute_dtype_for(torch.device("cpu")) == torch.float32


def test_a_failing_probe_falls_back_to_bf16_with_the_reason(monkeypatch):
    def no_fp8(device: torch.device) -> None:
        raise RuntimeError("float8 not implemented for this backend")

    monkeypatch.setattr(support, "_probe", no_fp8)
    support._support.cache_clear()
    try:
        result = storage_support("cpu")
        assert not result.fp8 and result.storage_dtype == torch.bfloat16
        assert "cannot store float8_e4m3fn on cpu" in result.reason and "not implemented" in result.reason
    finally:
        support._support.cache_clear()
