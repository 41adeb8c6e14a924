"""The host's ModelPatcher for our GGUF DiT, with patched weights that stay quantised.

On a full load the host patches a module by dequantising its weight, adding the LoRA and storing the result
(``patch_weight_to_device``): for raw GGUF blocks that is a dense copy the host never budgeted (a 14B Q6_K DiT
with a step-distillation LoRA on every block would grow from about 12.5 to 30 GiB). This patcher instead hands a
quantised layer its patch list (:mod:`nodes.gguf_lora`), which the layer applies at each forward; unpatching
just takes it back. A W8A8 layer takes a plain LoRA the same way, as a 16-bit side path on its 8-bit matmul. Under low-VRAM partial loading the host's own per-forward ``LowVramPatch`` already runs on our
dequantised temporary and is left as it is. ``model_size`` counts the patch tensors, so the host budgets them.
"""
from __future__ import annotations

import comfy.model_patcher
import comfy.utils
import torch

from .gguf_lora import AttachedPatches, low_rank_terms, patch_bytes
from .gguf_ops import is_quantized
from .w8a8_ops import is_w8a8


def quantised_layer(model: torch.nn.Module, key: str, patches: list) -> torch.nn.Module | None:
    """The layer whose ``weight`` is ``key`` when it applies ``patches`` per forward: a raw-block GGUF layer (any
    patch), or a W8A8 layer (plain LoRA only: other patches are requantised into its 8-bit weight); else None."""
    if not key.endswith(".weight"):
        return None
    try:
        module = comfy.utils.get_attr(model, key[: -len(".weight")])
    except AttributeError:
        return None
    if is_quantized(module) or (is_w8a8(module) and low_rank_terms(patches) is not None):
        return module
    return None


class GGUFModelPatcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher whose patches of raw GGUF weights are applied per forward instead of stored dense."""

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False, **kwargs):
        layer = quantised_layer(self.model, key, self.patches[key]) if key in self.patches else None
        if layer is None or kwargs.get("return_weight") or kwargs.get("force_cast"):
            return super().patch_weight_to_device(key, device_to, inplace_update, **kwargs)
        layer.gguf_patches = AttachedPatches.of(key, self.patches[key], linear=isinstance(layer, torch.nn.Linear))
        return None

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            for module in self.model.modules():
                if getattr(module, "gguf_patches", None) is not None:
                    module.gguf_patches = None
        return super().unpatch_model(device_to, unpatch_weights)

    def model_size(self) -> int:
        """The host's size of the model plus the tensors of the patches our layers apply per forward."""
        extra = sum(patch_bytes(patches) for key, patches in self.patches.items()
                    if quantised_layer(self.model, key, patches) is not None)
        return super().model_size() + extra
