"""LoRA on raw GGUF layers without a dense copy: plain LoRA as a low-rank side path, other patches per forward.

The host's patch list of one weight (``ModelPatcher.patches[key]``: tuples ``(strength, adapter, strength_model,
offset, function)``) is applied at every forward. When every entry is a plain LoRA (up, down, optional alpha; no
mid, DoRA, reshape, offset, function or model-strength scaling), the layer adds ``s * (x @ down.T) @ up.T`` to its
dequantised matmul: O(tokens x rank x width) and no weight-sized temporary. Anything else (LoCon, LoHa, LoKr, diff,
set, ...) goes through the host's own ``comfy.lora.calculate_weight`` on the dequantised temporary of that
forward. Either way the raw blocks stay resident and unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import torch

try:
    from comfy.weight_adapter.lora import LoRAAdapter
except ImportError:  # a host without weight adapters: every patch takes the per-forward path
    LoRAAdapter = None


@dataclass(frozen=True)
class LowRankTerm:
    """One plain LoRA: ``scale * up @ down`` with up [out, rank] and down [rank, in]."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float

    @property
    def nbytes(self) -> int:
        return self.up.nbytes + self.down.nbytes


def low_rank_terms(patches: list) -> list[LowRankTerm] | None:
    """The plain-LoRA terms of a patch list, or None when any entry needs the host's full weight calculation."""
    terms = []
    for strength, adapter, strength_model, offset, function in (tuple(p[:5]) for p in patches):
        if LoRAAdapter is None or not isinstance(adapter, LoRAAdapter):
            return None
        up, down, alpha, mid, dora_scale, reshape = tuple(adapter.weights[:6])
        if (mid is not None or dora_scale is not None or reshape is not None or offset is not None
                or function is not None or strength_model != 1.0 or up.ndim != 2 or down.ndim != 2):
            return None
        rank_scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        terms.append(LowRankTerm(up, down, float(strength) * rank_scale))
    return terms


def patch_bytes(patches: list) -> int:
    """Bytes of every tensor a patch list holds (what it adds to the model's memory)."""
    total = 0
    for patch in patches:
        adapter = patch[1]
        values = getattr(adapter, "weights", adapter)
        for value in values if isinstance(values, (tuple, list)) else (values,):
            if isinstance(value, torch.Tensor):
                total += value.nbytes
    return total


@dataclass(frozen=True)
class AttachedPatches:
    """A weight's patches as a GGUF layer applies them at each forward."""

    key: str
    patches: list
    terms: list[LowRankTerm] | None

    @classmethod
    def of(cls, key: str, patches: list, linear: bool) -> "AttachedPatches":
        """``patches`` of ``key``; the side path only for a Linear layer (a conv takes every patch per forward)."""
        return cls(key, list(patches), low_rank_terms(patches) if linear else None)

    def patch_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The dequantised weight with the patches that cannot ride the side path applied (host's own maths)."""
        if self.terms is not None:
            return weight
        # imported here: comfy.lora loads every host model (comfy.model_base, with torchvision), which the GPU
        # suite's bare image lacks when it builds the shipped W8A8 layers (benchmarks/README.md)
        import comfy.lora

        patched = comfy.lora.calculate_weight(self.patches, weight.float(), self.key)
        return patched.to(weight.dtype)

    def side_path(self, x: torch.Tensor) -> torch.Tensor | None:
        """``sum_i s_i * (x @ down_i.T) @ up_i.T`` in x's dtype and device, None when there is no side path."""
        if not self.terms:
            return None
        out = None
        for term in self.terms:
            down = comfy.model_management.cast_to_device(term.down, x.device, x.dtype)
            up = comfy.model_management.cast_to_device(term.up, x.device, x.dtype)
            delta = torch.nn.functional.linear(torch.nn.functional.linear(x, down), up) * term.scale
            out = delta if out is None else out + delta
        return out


def split_weight_functions(functions: list) -> tuple[list[AttachedPatches], list]:
    """The host's low-VRAM weight functions split into plain-LoRA patches (for a side path) and the rest.

    A ``LowVramPatch`` names its weight (``key``) and the patcher's patch dict (``patches``); any other function,
    or patches that are not all plain LoRA, stay functions to run on the dequantised weight."""
    side, rest = [], []
    for function in functions:
        key, patches = getattr(function, "key", None), getattr(function, "patches", None)
        terms = low_rank_terms(patches[key]) if isinstance(patches, dict) and key in patches else None
        if terms is not None:
            side.append(AttachedPatches(key, list(patches[key]), terms))
        else:
            rest.append(function)
    return side, rest
