"""float8_e4m3fn weight storage with 16/32-bit compute, for the umt5 text encoder. Never imports ``comfy``."""
from .linear import Fp8Linear, quantize_linears, scaled_linear
from .scaling import (
    FP8_DTYPE,
    FP8_MAX,
    GRANULARITIES,
    broadcast_scale,
    dequantize,
    quantize,
    quantize_with_scale,
    weight_from_file,
    weight_scale,
)
from .support import StorageSupport, compute_dtype_for, storage_support

__all__ = [
    "FP8_DTYPE",
    "FP8_MAX",
    "GRANULARITIES",
    "Fp8Linear",
    "StorageSupport",
    "broadcast_scale",
    "compute_dtype_for",
    "dequantize",
    "quantize",
    "quantize_linears",
    "quantize_with_scale",
    "scaled_linear",
    "storage_support",
    "weight_from_file",
    "weight_scale",
]
