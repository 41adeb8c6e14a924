"""The "ComfyUI-GGUF style" baseline: their dequantisation algorithm as publicly described, written here.

ComfyUI-GGUF keeps weights as raw ggml blocks and, on every forward of every layer, dequantises them with PyTorch
ops: the block is split into its fields, the small shift tables are built as tensors on each call, and the block
arithmetic (``d * scale * q``) runs in fp16, the result cast to the compute dtype. That is what this module does
for Q6_K (the type of the benchmark's weights); it is not bit-identical to gguf-py (fp16 rounding), which the
benchmark reports as the row's error. Other types fall back to our exact PyTorch path.
"""
from __future__ import annotations

from typing import Sequence

import torch

Q6_K, Q6_K_BLOCK_BYTES = 14, 210


def dequantize_q6_k_fp16(data: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Raw Q6_K bytes -> ``shape`` tensor of ``dtype``, fields unpacked with per-call shift tensors, math in fp16."""
    blocks = data.reshape(-1, Q6_K_BLOCK_BYTES)
    n = blocks.shape[0]
    ql, qh = blocks[:, :128], blocks[:, 128:192]
    scales = blocks[:, 192:208].contiguous().view(torch.int8)
    d = blocks[:, 208:210].contiguous().view(torch.float16)
    low_shifts = torch.tensor([0, 4], device=data.device, dtype=torch.uint8).view(1, 1, 2, 1)
    high_shifts = torch.tensor([0, 2, 4, 6], device=data.device, dtype=torch.uint8).view(1, 1, 4, 1)
    low = (ql.reshape(n, 2, 1, 64) >> low_shifts) & 0x0F  # [n, half, nibble, 64]: q1|q2 then q3|q4 per half
    high = (qh.reshape(n, 2, 1, 32) >> high_shifts) & 0x03  # [n, half, 4, 32]: the top 2 bits of q1..q4
    q = (low.reshape(n, 2, 4, 32) | (high << 4)).view(torch.int8) - 32
    values = d.view(n, 1, 1) * scales.to(torch.float16).view(n, 16, 1) * q.reshape(n, 16, 16).to(torch.float16)
    return values.reshape(tuple(shape)).to(dtype)


def make_gguf_style_operations(host, compute_dtype: torch.dtype = torch.bfloat16) -> type:
    """Our GGUF host operations with the layer dequantisation replaced by :func:`dequantize_q6_k_fp16`."""
    base = host["gguf_ops"].make_gguf_operations(compute_dtype)
    is_quantized = host["gguf_ops"].is_quantized

    class GGUFStyleOperations(base):
        class Linear(base.Linear):
            def dequantized_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
                if is_quantized(self) and int(self.gguf_qtype) == Q6_K:
                    return dequantize_q6_k_fp16(self.weight.to(device), self.gguf_shape, dtype)
                return super().dequantized_weight(dtype, device)

    return GGUFStyleOperations
