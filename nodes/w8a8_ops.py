"""Host Linear for W8A8 Wan blocks: requantised at load from the GGUF file, kept resident as packed 8-bit bytes.

Only the block linears named by :data:`W8A8_KEYS` (self/cross attention q, k, v, o, the I2V image k/v, and the
FFN) become W8A8; every other layer (patch embedding, head, time/text/image embeddings) keeps the GGUF layer's
16-bit path. The weight is one uint8 tensor holding values and scales (``wan_accel_kernels.w8a8.packing``), so the host's
partial loading moves it, and its LoRA patch/unpatch backs it up and restores it, as one piece:

* full load + LoRA: ``convert_weight`` dequantises the packed weight, the host adds the LoRA, ``set_weight``
  requantises the patched weight (so the LoRA's effect carries W8A8's error, nothing more);
* low-VRAM + LoRA: the host's weight functions run on the dequantised weight per forward, which is then
  requantised for that forward (correct, slower: the partial-load price).
"""
from __future__ import annotations

import re

import comfy.model_management
import torch

from ..wan_accel_kernels.gguf import dequantize
from ..wan_accel_kernels.w8a8 import QuantizedWeight, default_method, linear, pack, quantize_weight, unpack
from .gguf_lora import split_weight_functions
from .gguf_ops import is_quantized, make_gguf_operations

W8A8_KEYS = re.compile(r"blocks\.\d+\.((self_attn|cross_attn)\.(q|k|v|o|k_img|v_img)|ffn\.[02])\.")
"""State-dict prefixes of the layers computed in 8 bits."""


def is_w8a8(module: torch.nn.Module) -> bool:
    """True for a layer that computes W8A8 (its ``weight`` is packed 8-bit bytes)."""
    return getattr(module, "w8a8_fmt", None) is not None


def make_w8a8_operations(compute_dtype: torch.dtype, fmt: str, method: str | None = None) -> type:
    """The GGUF operations namespace with a Linear that requantises the block linears to W8A8 ``fmt`` at load
    (outliers handled by ``method``, default: the format's measured best)."""
    base = make_gguf_operations(compute_dtype)
    method = method or default_method(fmt)

    class W8A8Operations(base):
        class Linear(base.Linear):
            w8a8_fmt: str | None = None
            w8a8_block = 1

            def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
                super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
                if W8A8_KEYS.fullmatch(prefix) and self.weight is not None and not self.weight.is_meta:
                    self._store(self._source_weight())

            def _source_weight(self) -> torch.Tensor:
                if is_quantized(self):
                    return dequantize(self.weight, self.gguf_qtype, self.gguf_shape, torch.float32)
                return self.weight.to(torch.float32)

            def _store(self, weight: torch.Tensor) -> None:
                quantized = quantize_weight(weight, fmt, method)
                self.weight = torch.nn.Parameter(pack(quantized), requires_grad=False)
                self.w8a8_fmt, self.w8a8_block, self.gguf_qtype = fmt, quantized.block, None

            def quantized_weight(self, device: torch.device) -> QuantizedWeight:
                """The packed weight on ``device`` as a :class:`QuantizedWeight`."""
                non_blocking = comfy.model_management.device_supports_non_blocking(device)
                return unpack(self.weight.to(device, non_blocking=non_blocking), fmt, self.out_features, method,
                              self.w8a8_block)

            def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
                """Host hook: the packed bytes (as the patcher hands them over, maybe cast) to the float weight."""
                if not is_w8a8(self):
                    return super().convert_weight(weight, inplace, **kwargs)
                if tuple(weight.shape) == (self.out_features, self.in_features):
                    return weight
                return unpack(weight, fmt, self.out_features, method, self.w8a8_block).dequantize(torch.float32)

            def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed: int | None = None,
                           return_weight: bool = False) -> torch.Tensor | None:
                """Host hook: requantise a patched weight (patches other than a plain LoRA, which rides a side path);
                the host's unpatch restores the original bytes."""
                if not is_w8a8(self) or return_weight:
                    return super().set_weight(weight, inplace_update, seed, return_weight)
                self._store(weight.to(torch.float32))
                return None

            def forward_comfy_cast_weights(self, input):
                if not is_w8a8(self):
                    return super().forward_comfy_cast_weights(input)
                bias = None
                if self.bias is not None:
                    bias = comfy.model_management.cast_to(self.bias, input.dtype, input.device,
                                                          copy=len(self.bias_function) > 0)
                    for function in self.bias_function:
                        bias = function(bias)
                weight = self.quantized_weight(input.device)
                side_paths, functions = split_weight_functions(self.weight_function)
                if functions:
                    patched = weight.dequantize(torch.float32)
                    for function in functions:
                        patched = function(patched)
                    weight = quantize_weight(patched.to(torch.float32), fmt, method)
                out = linear(input, weight, bias)
                if self.gguf_patches is not None:  # a plain LoRA handed over by nodes.gguf_patcher
                    side_paths.append(self.gguf_patches)
                for patches in side_paths:
                    out = out + patches.side_path(input)
                return out

    return W8A8Operations
