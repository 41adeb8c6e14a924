"""Fused Q6_K dequantisation + matmul in Triton for large-M linears: ``y = x @ W.T + bias``, W as raw Q6_K blocks.

Each program computes a ``block_m x block_n`` tile of ``y``. Per K step it decodes its ``block_n x block_k`` slice
of W in registers with the same code as :mod:`wan_accel_kernels.gguf.triton_dequantize` (so the weights it multiplies equal
the dequantised weights bit for bit), and accumulates in float32 with ``tl.dot``. W never exists in float in memory.
Whether that beats dequantise-then-cuBLAS at Wan's M = 32,760 tokens is what
``python -m benchmarks.gpu_suite --sections dit,linears`` measures; the loader keeps dequantise-then-matmul until a
GPU run shows the fused kernel is faster.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
import triton
import triton.language as tl
from gguf import GGMLQuantizationType

from .qtypes import tensor_nbytes
from .triton_dequantize import COMPILE_OPTIONS, interpreting, q6_k_values, round_to

QK_K = 256
ACTIVATION_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class MatmulConfig:
    """Tile sizes and launch settings; ``block_k`` must divide 256 so a K step stays inside one Q6_K block."""

    block_m: int = 128
    block_n: int = 128
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3


@triton.jit
def _q6_k_linear_kernel(x, w, bias, y, M, N, K, stride_xm, stride_ym, HAS_BIAS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                        FP32_DOT: tl.constexpr):
    """One ``[BLOCK_M, BLOCK_N]`` tile of ``y``; programs are grouped along M so a group reuses W tiles from L2.

    ``FP32_DOT`` (interpreter only) multiplies the bf16/fp16 tiles after an exact upcast: the interpreter's
    ``tl.dot`` multiplies bf16 storage as integers.
    """
    pid = tl.program_id(0)
    tiles_m = (M + BLOCK_M - 1) // BLOCK_M  # not tl.cdiv/tl.zeros: library @jit helpers break the interpreter
    tiles_n = (N + BLOCK_N - 1) // BLOCK_N  # when triton was imported before TRITON_INTERPRET=1 was set
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    x_rows = x + rows.to(tl.int64)[:, None] * stride_xm
    w_rows = w + cols.to(tl.int64)[:, None] * ((K // 256) * 210)
    steps = tl.arange(0, BLOCK_K)

    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + steps
        a = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
        weights = q6_k_values(w_rows + ((k // 256) * 210)[None, :], (k % 256)[None, :], col_ok[:, None])
        weights = tl.trans(round_to(weights, a.dtype))
        if FP32_DOT:
            acc = tl.dot(a.to(tl.float32), weights.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, weights, acc)
    if HAS_BIAS:
        acc += tl.load(bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out = y + rows.to(tl.int64)[:, None] * stride_ym + cols[None, :]
    tl.store(out, round_to(acc, y.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def q6_k_linear(x: torch.Tensor, data: torch.Tensor, shape: Sequence[int], bias: torch.Tensor | None = None,
                config: MatmulConfig = MatmulConfig()) -> torch.Tensor:
    """``x @ W.T + bias`` for a Q6_K weight W of torch shape ``[out, in]`` given as raw bytes ``data``.

    ``x`` is bf16 or fp16 with last dim ``in``, on the same CUDA device as ``data`` (or on CPU under
    ``TRITON_INTERPRET=1``); the result has ``x``'s dtype and shape ``[..., out]``.
    """
    out_features, in_features = (int(s) for s in shape)
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"q6_k_linear multiplies bf16/fp16 activations, got {x.dtype}; cast x first or use "
                         "wan_accel_kernels.gguf.backend.dequantize_on_device and torch.nn.functional.linear.")
    if x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} features but the Q6_K weight {tuple(shape)} takes {in_features}.")
    if QK_K % config.block_k or config.block_k < 16:
        raise ValueError(f"block_k={config.block_k} must be >= 16 and divide 256 (one Q6_K block per K step).")
    expected = tensor_nbytes(GGMLQuantizationType.Q6_K, (out_features, in_features))
    if data.dtype != torch.uint8 or data.numel() != expected:
        raise ValueError(f"Q6_K weight {tuple(shape)} needs {expected} raw uint8 bytes, got {data.numel()} "
                         f"{data.dtype}; pass the GGUF tensor's bytes (tensor.view(torch.uint8)).")
    if x.device != data.device:
        raise ValueError(f"x is on {x.device} but the weight bytes are on {data.device}; move both to one device.")
    if bias is not None and bias.device != x.device:
        raise ValueError(f"Q6_K matmul: the bias is on {bias.device} but x is on {x.device}; "
                         "move the bias to x's device.")
    if bias is not None and bias.numel() != out_features:
        raise ValueError(f"Q6_K matmul: the bias has {bias.numel()} values for {out_features} "
                         "outputs; pass the layer's own bias.")
    rows = x.reshape(-1, in_features).contiguous()
    y = torch.empty((rows.shape[0], out_features), dtype=x.dtype, device=x.device)
    if rows.shape[0] == 0:
        return y.reshape(*x.shape[:-1], out_features)
    grid = (triton.cdiv(rows.shape[0], config.block_m) * triton.cdiv(out_features, config.block_n),)
    launch_device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
    with launch_device:
        _q6_k_linear_kernel[grid](
            rows, data.reshape(-1).contiguous(), rows if bias is None else bias.reshape(-1).contiguous(), y,
            rows.shape[0], out_features, in_features, rows.stride(0), y.stride(0),
            HAS_BIAS=bias is not None, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            GROUP_M=config.group_m, FP32_DOT=interpreting(), num_warps=config.num_warps, num_stages=config.num_stages,
            **COMPILE_OPTIONS,
        )
    return y.reshape(*x.shape[:-1], out_features)
