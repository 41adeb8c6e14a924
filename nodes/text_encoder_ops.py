"""Host custom operations for the text encoder: Linear weights stored as float8_e4m3fn + fp32 scale, 16/32-bit compute.

Every other layer (embeddings, relative-attention bias) is the host's ``manual_cast`` one, kept in the 16-bit
dtype the host builds the encoder with. The Linear plugs into the host's own mechanisms: weights are quantised
while ``load_state_dict`` hands them over (any file precision, see ``wan_accel_kernels/fp8/scaling.py``), forwards go
through ``forward_comfy_cast_weights``, and ``convert_weight``/``set_weight`` let the host's LoRA paths
dequantise, patch and re-quantise with the layer's own scale (stochastic rounding, as the host does for its
scaled fp8 files), so the host's unpatch, which restores only ``weight``, stays exact.
"""
from __future__ import annotations

from typing import Callable

import comfy.float
import comfy.model_management
import comfy.ops
import torch

from ..wan_accel_kernels.fp8 import FP8_DTYPE, FP8_MAX, scaled_linear, weight_from_file


def make_fp8_text_encoder_ops(storage_dtype: torch.dtype, granularity: str,
                              quantize_device: torch.device | None = None,
                              on_weight_loaded: Callable[[], None] | None = None) -> type:
    """An operations class for the host's ``model_options["custom_operations"]``.

    Weights are quantised on ``quantize_device`` (the load device: the GPU when there is one, also when the host
    first builds the encoder on the CPU, whose fp8 conversions are slow) and stored where the layer lives.
    """

    class Fp8TextEncoderOps(comfy.ops.manual_cast):
        class Linear(comfy.ops.manual_cast.Linear):
            def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
                super().__init__(in_features, out_features, bias=bias, device="meta", dtype=dtype)
                self.weight = torch.nn.Parameter(
                    torch.empty(out_features, in_features, dtype=storage_dtype, device=device), requires_grad=False)
                scale_shape = (out_features,) if granularity == "per_row" else ()
                self.weight_scale = torch.nn.Parameter(
                    torch.ones(scale_shape, dtype=torch.float32, device=device), requires_grad=False)
                if bias:
                    self.bias = torch.nn.Parameter(torch.empty(out_features, dtype=dtype, device=device),
                                                   requires_grad=False)

            def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs):
                device = self.weight.device
                key = prefix + "weight"
                if key not in state_dict:
                    missing_keys.append(key)
                else:
                    file_scale = state_dict.get(prefix + "scale_weight")
                    source = state_dict[key].to(quantize_device or device)
                    try:
                        weight, scale = weight_from_file(source, file_scale, granularity, storage_dtype)
                    except ValueError as error:
                        raise ValueError(f"{key}: {error}") from error
                    self.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
                    self.weight_scale = torch.nn.Parameter(scale.to(device), requires_grad=False)
                    if on_weight_loaded is not None:
                        on_weight_loaded()
                if self.bias is not None:
                    if prefix + "bias" in state_dict:
                        self.bias = torch.nn.Parameter(state_dict[prefix + "bias"].to(device, self.bias.dtype),
                                                       requires_grad=False)
                    else:
                        missing_keys.append(prefix + "bias")

            def forward_comfy_cast_weights(self, input: torch.Tensor) -> torch.Tensor:
                device = input.device
                non_blocking = comfy.model_management.device_supports_non_blocking(device)
                weight = comfy.model_management.cast_to(self.weight, None, device, non_blocking=non_blocking,
                                                        copy=len(self.weight_function) > 0)
                for function in self.weight_function:
                    weight = function(weight)
                bias = None
                if self.bias is not None:
                    bias = comfy.model_management.cast_to(self.bias, None, device, non_blocking=non_blocking,
                                                          copy=len(self.bias_function) > 0)
                    for function in self.bias_function:
                        bias = function(bias)
                return scaled_linear(input, weight, self.weight_scale, bias)

            def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
                """Host hook: the stored weight (already cast to float by the host) times its scale."""
                scale = self.weight_scale.to(device=weight.device, dtype=weight.dtype).reshape(-1, 1)
                return weight.mul_(scale) if inplace else weight * scale

            def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed: int | None = None,
                           return_weight: bool = False, **kwargs) -> torch.Tensor | None:
                """Host hook: a patched float weight re-quantised with the layer's unchanged scale."""
                scaled = weight / self.weight_scale.to(device=weight.device, dtype=weight.dtype).reshape(-1, 1)
                if storage_dtype == FP8_DTYPE:
                    stored = comfy.float.stochastic_rounding(scaled.clamp(-FP8_MAX, FP8_MAX), storage_dtype,
                                                             seed=seed or 0)
                else:
                    stored = scaled.to(storage_dtype)
                if return_weight:
                    return stored
                if inplace_update:
                    self.weight.data.copy_(stored)
                else:
                    self.weight = torch.nn.Parameter(stored, requires_grad=False)
                return None

    return Fp8TextEncoderOps
