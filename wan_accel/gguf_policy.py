"""Which ggml type each Wan 2.1 DiT tensor gets when converted to GGUF.

Policy (the same one ComfyUI-GGUF and llama.cpp follow for DiTs):
- tensors that are small or numerically sensitive keep their float type (F32 stays F32, F16/BF16 stay
  16-bit): every 1-D tensor, norms, ``modulation``, ``patch_embedding``, the output ``head``, and the
  time, text and image embeddings;
- every other weight gets the requested type when its rows are a multiple of that type's block
  (256 for the K-quants), else Q8_0 when rows are a multiple of 32, else F16.
"""
from __future__ import annotations

import gguf
import torch

KEEP_FLOAT_MARKERS = (
    "norm",
    "modulation",
    "patch_embedding",
    "head.",
    "time_embedding",
    "time_projection",
    "text_embedding",
    "img_emb",
)

FLOAT_TYPE_OF = {
    torch.float32: gguf.GGMLQuantizationType.F32,
    torch.float16: gguf.GGMLQuantizationType.F16,
    torch.bfloat16: gguf.GGMLQuantizationType.BF16,
}


def keeps_float(name: str, shape: tuple[int, ...]) -> bool:
    """True for the tensors the policy stores unquantised."""
    return len(shape) <= 1 or any(marker in name for marker in KEEP_FLOAT_MARKERS)


def float_type_for(dtype: torch.dtype) -> gguf.GGMLQuantizationType:
    """The GGUF float type that stores a source tensor of ``dtype`` without loss (fp64 and fp8 become F32)."""
    return FLOAT_TYPE_OF.get(dtype, gguf.GGMLQuantizationType.F32)


def choose_type(name: str, shape: tuple[int, ...], dtype: torch.dtype,
                target: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """The ggml type tensor ``name`` of ``shape`` is written with when converting to ``target``."""
    if keeps_float(name, shape):
        return float_type_for(dtype)
    row = shape[-1]
    for candidate in (target, gguf.GGMLQuantizationType.Q8_0):
        if row % gguf.GGML_QUANT_SIZES[candidate][0] == 0:
            return candidate
    return gguf.GGMLQuantizationType.F16
