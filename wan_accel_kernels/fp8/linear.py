"""Linear with float8_e4m3fn-stored weights and 16/32-bit compute: ``y = (x @ q^T) * scale + b``.

In a compute dtype with float32's exponent range (fp32, bf16) the weight is only cast (fp8 -> compute dtype), and the
per-row (or per-tensor) scale is applied to the output, ``tokens x out`` values instead of ``out x in``, before the
cast to the input's dtype. In fp16 the scale is folded into the weight in float32 first: with ``|q|`` up to 448,
``x @ q^T`` passes fp16's 65504 long before the scaled output does.
"""
from __future__ import annotations

import torch

from .scaling import FP8_DTYPE, dequantize, quantize
from .support import compute_dtype_for


def scaled_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                  compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x @ (weight * scale)^T + bias`` computed in ``compute_dtype`` (default: per device), returned in x's dtype;
    nothing is rounded to a 16-bit range before it is scaled."""
    dtype = compute_dtype or compute_dtype_for(x.device)
    scale = scale.to(device=x.device, dtype=torch.float32)
    if torch.finfo(dtype).max < torch.finfo(torch.float32).max / 2:  # fp16: fold the scale into the weight first
        y = torch.nn.functional.linear(x.to(dtype), dequantize(weight.to(x.device), scale).to(dtype))
    else:
        y = torch.nn.functional.linear(x.to(dtype), weight.to(device=x.device, dtype=dtype))
        y = y.mul_(scale)  # in the compute dtype, before the cast below can overflow a 16-bit x dtype
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias.to(device=x.device, dtype=x.dtype)
    return y


class Fp8Linear(torch.nn.Module):
    """A ``torch.nn.Linear`` replacement holding its weight in float8_e4m3fn plus an fp32 scale."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale.to(torch.float32))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.compute_dtype = compute_dtype
        self.out_features, self.in_features = weight.shape

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, granularity: str = "per_row",
                    storage_dtype: torch.dtype | None = FP8_DTYPE,
                    compute_dtype: torch.dtype | None = None) -> "Fp8Linear":
        """Quantises ``linear.weight`` (any float dtype) into a new layer; the bias stays as it is."""
        weight, scale = quantize(linear.weight.detach(), granularity, storage_dtype)
        return cls(weight, scale, linear.bias, compute_dtype)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the layer computes with, in ``dtype``."""
        return dequantize(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_linear(x, self.weight, self.weight_scale, self.bias, self.compute_dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"storage={self.weight.dtype}, scale={'per_row' if self.weight_scale.dim() else 'per_tensor'}")


def quantize_linears(module: torch.nn.Module, granularity: str = "per_row",
                     storage_dtype: torch.dtype | None = FP8_DTYPE,
                     compute_dtype: torch.dtype | None = None) -> int:
    """Replaces every ``torch.nn.Linear`` inside ``module`` by an :class:`Fp8Linear`; returns how many."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, Fp8Linear.from_linear(child, granularity, storage_dtype, compute_dtype))
            replaced += 1
        else:
            replaced += quantize_linears(child, granularity, storage_dtype, compute_dtype)
    return replaced
