"""Datasheet peaks of the GPUs the benchmarks run on or project to, matched by the exact CUDA device name.

Dense (no sparsity) tensor-core peaks in TFLOPS/TOPS with fp32 accumulation, memory bandwidth in TB/s, from the
vendors' datasheets. The H100 comes in three parts whose peaks differ (SXM, PCIe, NVL), so a name that is not in
the table gets no projection rather than a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class GPUSpec:
    """One GPU's datasheet peaks."""

    label: str
    bf16_tflops: float
    int8_tops: float
    fp8_tflops: float
    bandwidth_tbs: float


RTX_4090 = GPUSpec("RTX 4090", bf16_tflops=165.2, int8_tops=660.6, fp8_tflops=330.3, bandwidth_tbs=1.008)

SPECS_BY_DEVICE_NAME = {
    "NVIDIA H100 80GB HBM3": GPUSpec("H100 SXM", 989.4, 1978.9, 1978.9, 3.35),
    "NVIDIA H100 PCIe": GPUSpec("H100 PCIe", 756.5, 1513.0, 1513.0, 2.0),
    "NVIDIA H100 NVL": GPUSpec("H100 NVL", 835.0, 1670.0, 1670.0, 3.9),
    "NVIDIA H200": GPUSpec("H200 SXM", 989.4, 1978.9, 1978.9, 4.8),
    "NVIDIA H200 NVL": GPUSpec("H200 NVL", 835.0, 1670.0, 1670.0, 4.8),
    "NVIDIA GeForce RTX 4090": RTX_4090,
}


def spec_for(device_name: str) -> Optional[GPUSpec]:
    """The spec of exactly this CUDA device name (``torch.cuda.get_device_name``), or None."""
    return SPECS_BY_DEVICE_NAME.get(device_name.strip())
