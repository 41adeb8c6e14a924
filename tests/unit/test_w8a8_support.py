"""The GPU capability check of ``wan_accel_kernels/w8a8/support.py`` with a faked CUDA device (``tests/support/
fake_cuda.py``): int8 needs sm75+ and fp8 sm89+ (README), and only a GPU that passes is probed with a real matmul.

The probes themselves need a GPU; here they are replaced by recorders, so the capability branch is what is tested.
"""
from __future__ import annotations

import pytest
import torch

from tests.support.fake_cuda import fake_cuda_device
from wan_accel_kernels.w8a8 import matmul_support, runs_on
from wan_accel_kernels.w8a8 import support as support_module

GPU = "NVIDIA Test GPU"


@pytest.fixture
def probes(monkeypatch) -> list[str]:
    """The formats probed on the (fake) GPU, in order; every probe succeeds."""
    probed: list[str] = []
    monkeypatch.setattr(support_module, "_probe_int8", lambda device: probed.append(f"int8 on {device}"))
    monkeypatch.setattr(support_module, "_probe_fp8", lambda device: probed.append(f"fp8 on {device}"))
    return probed


@pytest.mark.parametrize("capability, fmt, native", [
    ((6, 1), "int8", False), ((7, 0), "int8", False), ((7, 5), "int8", True), ((8, 0), "int8", True),
    ((8, 9), "int8", True), ((7, 5), "fp8", False), ((8, 0), "fp8", False), ((8, 6), "fp8", False),
    ((8, 9), "fp8", True), ((9, 0), "fp8", True),
])
def test_capability_decides_native_8_bit_matmuls(probes, capability, fmt, native):
    sm = f"sm{capability[0]}{capability[1]}"
    with fake_cuda_device(support_module, capability, GPU):
        support = matmul_support("cuda:0", fmt)
        runs = runs_on("cuda:0", fmt)
    print(f"\n{sm} {fmt}: native={support.native}: {support.reason}")
    assert support.native is native and runs is native
    if native:
        assert support.reason == f"{fmt} tensor cores on {GPU} ({sm})"
        assert probes == [f"{fmt} on cuda:0"]  # probed once: runs_on reuses the cached answer
    else:
        needs = "sm75+" if fmt == "int8" else "sm89+"
        assert support.reason == f"{GPU} ({sm}) has no {fmt} tensor cores (needs {needs})"
        assert probes == []  # below the capability the real matmul is never tried


def test_a_capable_gpu_whose_probe_fails_is_not_native(monkeypatch):
    def broken(device: torch.device) -> None:
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    monkeypatch.setattr(support_module, "_probe_fp8", broken)
    with fake_cuda_device(support_module, (8, 9), GPU):
        support = matmul_support("cuda", "fp8")
    assert not support.native
    assert support.reason == (f"row-wise torch._scaled_mm fails on {GPU} with torch {torch.__version__} "
                              "(CUBLAS_STATUS_NOT_SUPPORTED)")
