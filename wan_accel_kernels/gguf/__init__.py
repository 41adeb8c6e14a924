"""GGUF numerics in pure PyTorch: ggml block (de)quantisation, bit-exact with gguf-py. Never imports ``comfy``."""
from .dequantize import (
    dequantize,
    dequantize_q4_0,
    dequantize_q4_1,
    dequantize_q4_k,
    dequantize_q5_0,
    dequantize_q5_1,
    dequantize_q5_k,
    dequantize_q6_k,
    dequantize_q8_0,
)
from .qtypes import (
    DEQUANTIZE_TYPES,
    QUANTIZE_TYPES,
    UnsupportedQuantizationError,
    block_geometry,
    qtype_name,
    tensor_nbytes,
)
from .quantize import quantize, quantize_q6_k, quantize_q8_0

__all__ = [
    "DEQUANTIZE_TYPES",
    "QUANTIZE_TYPES",
    "UnsupportedQuantizationError",
    "block_geometry",
    "dequantize",
    "dequantize_q4_0",
    "dequantize_q4_1",
    "dequantize_q4_k",
    "dequantize_q5_0",
    "dequantize_q5_1",
    "dequantize_q5_k",
    "dequantize_q6_k",
    "dequantize_q8_0",
    "qtype_name",
    "quantize",
    "quantize_q6_k",
    "quantize_q8_0",
    "tensor_nbytes",
]
