"""Run-time detection of where the 8-bit matmuls run natively: int8 ``torch._int_mm`` and fp8 ``torch._scaled_mm``.

int8: CPU (exact int32 accumulation, no tensor cores) and CUDA GPUs where a probe ``_int_mm`` runs (int8 tensor
cores, sm75+). fp8: CUDA sm89+ where a probe row-wise ``_scaled_mm`` runs; elsewhere it is emulated (see
:mod:`.matmul`). Results are cached per device and format.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .formats import FP8_DTYPE, INT8, check_format

FP8_MIN_CAPABILITY = (8, 9)
INT8_MIN_CAPABILITY = (7, 5)


@dataclass(frozen=True)
class MatmulSupport:
    """Whether ``fmt`` matmuls run natively on a device (else emulated on CPU, or not at all on a GPU), and why."""

    fmt: str
    native: bool
    reason: str


def _probe_int8(device: torch.device) -> None:
    a = torch.ones(32, 32, dtype=torch.int8, device=device)
    if int(torch._int_mm(a, a.t())[0, 0]) != 32:
        raise RuntimeError("torch._int_mm gave a wrong result")


def _probe_fp8(device: torch.device) -> None:
    a = torch.ones(32, 32, device=device).to(FP8_DTYPE)
    ones = torch.ones(32, 1, device=device)
    out = torch._scaled_mm(a, a.t(), scale_a=ones, scale_b=ones.t(), out_dtype=torch.bfloat16)
    if float(out[0, 0]) != 32:
        raise RuntimeError("torch._scaled_mm gave a wrong result")


@functools.lru_cache(maxsize=None)
def _support(device_str: str, fmt: str) -> MatmulSupport:
    device = torch.device(device_str)
    if device.type == "cpu":
        if fmt == INT8:
            return MatmulSupport(fmt, True, "torch._int_mm on CPU (exact int32 accumulation, no tensor cores)")
        return MatmulSupport(fmt, False, "fp8 on CPU is emulated (quantise-dequantise, fp32 matmul): no fp8 units")
    if device.type != "cuda":
        return MatmulSupport(fmt, False, f"no {fmt} matmul on {device.type}")
    if not torch.cuda.is_available():
        return MatmulSupport(fmt, False, f"CUDA is not available to torch {torch.__version__}")
    minimum = INT8_MIN_CAPABILITY if fmt == INT8 else FP8_MIN_CAPABILITY
    capability = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if capability < minimum:
        return MatmulSupport(fmt, False, f"{name} (sm{capability[0]}{capability[1]}) has no {fmt} tensor cores "
                                         f"(needs sm{minimum[0]}{minimum[1]}+)")
    try:
        (_probe_int8 if fmt == INT8 else _probe_fp8)(device)
    except Exception as error:  # an old torch/cuBLAS raises many kinds of errors here
        op = "torch._int_mm" if fmt == INT8 else "row-wise torch._scaled_mm"
        return MatmulSupport(fmt, False, f"{op} fails on {name} with torch {torch.__version__} ({error})")
    return MatmulSupport(fmt, True, f"{fmt} tensor cores on {name} (sm{capability[0]}{capability[1]})")


def matmul_support(device: torch.device | str, fmt: str) -> MatmulSupport:
    """How ``fmt`` W8A8 matmuls run on ``device`` (cached)."""
    return _support(str(torch.device(device)), check_format(fmt))


def runs_on(device: torch.device | str, fmt: str) -> bool:
    """True where W8A8 of ``fmt`` can compute on ``device``: natively, or on CPU (int8 exact, fp8 emulated)."""
    return matmul_support(device, fmt).native or torch.device(device).type == "cpu"

