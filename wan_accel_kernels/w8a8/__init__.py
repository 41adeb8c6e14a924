"""W8A8 linears: 8-bit weights (per output channel) times 8-bit activations (per token), int8 or fp8 e4m3.

Pure torch; never imports ``comfy``. ``quantize_weight`` once at load, ``linear`` per call.
"""
from .formats import FORMATS, FP8, INT8
from .hadamard import block_size, rotate
from .linear import linear
from .outliers import METHODS, default_method
from .packing import pack, unpack
from .support import MatmulSupport, matmul_support, runs_on
from .weight import QuantizedWeight, quantize_weight

__all__ = [
    "FORMATS",
    "FP8",
    "INT8",
    "METHODS",
    "MatmulSupport",
    "QuantizedWeight",
    "block_size",
    "default_method",
    "linear",
    "matmul_support",
    "pack",
    "quantize_weight",
    "rotate",
    "runs_on",
    "unpack",
]
