"""The GGUF dequantisation as one ``torch.library`` operator, ``wan_accel::gguf_dequantize``, so that
``torch.compile`` sees one node per weight instead of a graph break.

It is a ``torch.library.triton_op``: Inductor traces its body, so on CUDA it sees the Triton decode (launched through
``wrap_triton``) as a user-defined Triton kernel it schedules and can put in a CUDA graph; elsewhere the body is the
PyTorch decode, which Inductor fuses into its own kernel. The body is also the fake (meta) implementation. Which of
the two the body runs is its ``use_triton`` argument, chosen before the call by :mod:`wan_accel_kernels.gguf.backend`: the
body reads no environment variable, enters no device context, and only looks up the Triton module that the choice
already imported.
"""
from __future__ import annotations

import functools
from types import ModuleType

import torch

from .dequantize import dequantize
from .qtypes import check_raw_blocks, resolve_qtype

OP_NAME = "wan_accel::gguf_dequantize"


@functools.cache
def triton_kernels() -> ModuleType | str:
    """The Triton kernel module, or why it does not import (no triton, a broken install); imported once."""
    try:
        from . import triton_dequantize
    except Exception as error:  # a triton wheel built for another torch or driver fails in many ways
        return f"triton does not import ({type(error).__name__}: {error})"
    return triton_dequantize


@torch.library.triton_op(OP_NAME, mutates_args=())
def gguf_dequantize(data: torch.Tensor, qtype: int, shape: list[int], dtype: torch.dtype,
                    use_triton: bool) -> torch.Tensor:
    """Raw ggml bytes ``data`` of GGUF type ``qtype`` (a quantised one) -> a new ``shape`` tensor of ``dtype`` on
    ``data.device``: the Triton kernel when ``use_triton`` (the type must have one), else the PyTorch decode."""
    if not use_triton:
        return dequantize(data, qtype, shape, dtype)
    kernels = triton_kernels()
    resolved = resolve_qtype(qtype, kernels.TRITON_DEQUANTIZE_TYPES, "Triton dequantization")
    out = torch.empty(check_raw_blocks(data, resolved, shape), dtype=dtype, device=data.device)
    kernels.launch(data.reshape(-1).contiguous(), out, resolved, traceable=True)
    return out
