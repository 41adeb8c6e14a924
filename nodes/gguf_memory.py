"""Makes the host reserve memory for our GGUF layers' dequantised weight, besides the raw blocks it already counts.

The host sizes a model's weights by its parameters (for us: raw ggml blocks) and its working memory by
``BaseModel.memory_required`` (activations). Each forward of a GGUF layer also holds that layer's dequantised
weight at the compute dtype, with the PyTorch path's unpacking scratch (``wan_accel_kernels/gguf/memory.py``); for the 14B
DiT's 13824x5120 FFN matrices that is 141 MB in bf16 from the Triton kernels and 513 MB from the PyTorch path. A
host that filled memory to what it was told would run out at the first forward, so the largest of these is added
to the model's ``memory_required``: the host then frees (or offloads) that much more before sampling.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..wan_accel_kernels.gguf.backend import TORCH, choose_path_on
from ..wan_accel_kernels.gguf.memory import dequant_peak_bytes
from .gguf_ops import is_quantized

log = logging.getLogger("wan_accel")


def largest_dequant_bytes(diffusion_model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> int:
    """The most bytes one GGUF layer of ``diffusion_model`` holds while it is dequantised to ``dtype`` on
    ``device``, by the path that device will take."""
    largest = 0
    for module in diffusion_model.modules():
        if not is_quantized(module):
            continue
        try:
            path, _ = choose_path_on(device, module.gguf_qtype, dtype)
        except RuntimeError:  # WAN_ACCEL_GGUF_DEQUANT=triton where Triton cannot run: the forward says why
            path = TORCH
        largest = max(largest, dequant_peak_bytes(module.gguf_qtype, module.gguf_shape, dtype, path))
    return largest


def reserve_dequant_memory(model, dtype: torch.dtype, device: torch.device) -> int:
    """Adds the largest dequantised temporary to ``model.memory_required`` (the host's ``BaseModel``, whose
    estimate the samplers pass to ``load_models_gpu``); returns the bytes added."""
    reserve = largest_dequant_bytes(model.diffusion_model, dtype, device)
    estimate: Callable = model.memory_required

    def memory_required(input_shape, cond_shapes: dict | None = None) -> float:
        return estimate(input_shape, cond_shapes={} if cond_shapes is None else cond_shapes) + reserve

    model.memory_required = memory_required
    model.wan_accel_dequant_reserve = reserve
    log.info("wan-accel: the GGUF model reserves %.1f MiB for its largest dequantised layer (%s)",
             reserve / 2**20, str(dtype).split(".")[-1])
    return reserve
