"""Peak bytes of one layer's dequantisation, which a loader must reserve besides the raw blocks it reports.

The host sizes a model by the bytes of its parameters; ours are raw ggml blocks, but every forward dequantises one
layer at a time to the compute dtype. The Triton kernels write the output only; the PyTorch path also holds
unpacked quants and a float32 product for a moment. That path's peak grows linearly with the weight count, so it
is measured once per (type, dtype) on a few blocks of zeros (``wan_accel_kernels/memory_probe.py``) and scaled.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from ..memory_probe import LiveTensorBytes
from .dequantize import dequantize
from .qtypes import DEQUANTIZE_TYPES, QType, block_geometry, resolve_qtype

SAMPLE_BLOCKS = 64


@functools.lru_cache(maxsize=None)
def torch_path_bytes_per_weight(qtype: int, dtype: torch.dtype) -> float:
    """Peak live bytes per weight while the PyTorch path dequantises ``qtype`` to ``dtype`` (output included)."""
    block_size, type_size = block_geometry(qtype)
    data = torch.zeros(SAMPLE_BLOCKS * type_size, dtype=torch.uint8)
    with LiveTensorBytes() as counter:
        values = dequantize(data, qtype, (SAMPLE_BLOCKS * block_size,), dtype)
    del values
    return counter.peak / (SAMPLE_BLOCKS * block_size)


def dequant_peak_bytes(qtype: QType, shape: Sequence[int], dtype: torch.dtype, path: str) -> int:
    """Bytes a layer of ``shape`` needs while it is dequantised by ``path`` (``"triton"`` or ``"torch"``)."""
    qtype = resolve_qtype(qtype, DEQUANTIZE_TYPES, "dequantization")
    numel = math.prod(int(size) for size in shape)
    if path == "triton":
        return numel * dtype.itemsize
    return math.ceil(numel * torch_path_bytes_per_weight(int(qtype), dtype))
