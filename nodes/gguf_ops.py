"""Host custom operations whose weights stay as raw GGUF blocks and are dequantised per layer at forward.

The layers plug into the host's own mechanisms: ``comfy_cast_weights`` routes every forward through
``forward_comfy_cast_weights``; ``weight_function`` (the host's low-VRAM LoRA patches) runs on the
dequantised weight; a full-load LoRA is handed to the layer by ``nodes.gguf_patcher.GGUFModelPatcher`` and
applied per forward (a low-rank side path for plain LoRA), so the raw blocks stay resident.
``convert_weight``/``set_weight`` remain for the host's other weight paths (merging, saving), which get a
patched float weight.
"""
from __future__ import annotations

import comfy.model_management
import comfy.ops
import torch

from ..wan_accel_kernels.gguf import dequantize
from ..wan_accel_kernels.gguf.backend import TritonFailures, dequantize_on_device
from ..wan_accel_kernels.gguf.reader import GGUFFileError, GGUFTensor


def is_quantized(module: torch.nn.Module) -> bool:
    """True while ``module.weight`` holds raw ggml blocks (not a float or LoRA-patched weight)."""
    return getattr(module, "gguf_qtype", None) is not None and module.weight.dtype == torch.uint8


class GGUFWeightLayer:
    """Mixin for host layers: loads GGUF tensors without allocating float weights first."""

    comfy_cast_weights = True
    gguf_patches = None  # nodes.gguf_lora.AttachedPatches while a full-load LoRA is applied per forward
    gguf_qtype = None
    gguf_shape: tuple[int, ...] = ()
    gguf_failures: TritonFailures | None = None
    """Triton failures of this layer's model (one per ``make_gguf_operations``), so one does not outlive it."""
    patched_weight_dtype = torch.float32

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in ("weight", "bias"):
            key = prefix + name
            if getattr(self, name, None) is None:
                continue
            if key not in state_dict:
                missing_keys.append(key)
                continue
            _check_shape(key, getattr(self, name), state_dict[key])
            tensor = self._take(name, state_dict[key])
            setattr(self, name, torch.nn.Parameter(tensor, requires_grad=False))
            # ComfyUI 0.33 archives each parameter's dtype when the model is built (ours are then empty meta
            # tensors of the compute dtype) and later casts and sizes weights to it: record what is really stored.
            setattr(self, f"{name}_comfy_model_dtype", tensor.dtype)

    def _take(self, name: str, entry) -> torch.Tensor:
        if isinstance(entry, GGUFTensor):
            if entry.is_float:
                return entry.to_float_tensor()
            if name != "weight":
                raise ValueError(f"{entry.name} is quantised ({entry.qtype.name}); only weights may be")
            self.gguf_qtype = entry.qtype
            self.gguf_shape = entry.shape
            return entry.data
        return entry

    def dequantized_weight(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The layer's weight as a float tensor of ``dtype`` on ``device``."""
        non_blocking = comfy.model_management.device_supports_non_blocking(device)
        if not is_quantized(self):
            return comfy.model_management.cast_to(self.weight, dtype, device, non_blocking=non_blocking,
                                                  copy=len(self.weight_function) > 0)
        raw = self.weight.to(device, non_blocking=non_blocking)
        return dequantize_on_device(raw, self.gguf_qtype, self.gguf_shape, dtype, failures=self.gguf_failures,
                                    layer=type(self).__name__)

    def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
        """Host hook: raw blocks (as handed over by the patcher, possibly cast to float) to a float weight."""
        if self.gguf_qtype is None or weight.numel() == _numel(self.gguf_shape):
            return weight
        return dequantize(weight.to(torch.uint8), self.gguf_qtype, self.gguf_shape, torch.float32)

    def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed: int | None = None,
                   return_weight: bool = False) -> torch.Tensor | None:
        """Host hook: keep a LoRA-patched weight in float; the host's unpatch restores the raw blocks."""
        if return_weight:
            return weight
        self.weight = torch.nn.Parameter(weight.to(self.patched_weight_dtype), requires_grad=False)
        return None

    def cast_bias_weight(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like the host's ``cast_bias_weight`` but dequantising first, then applying weight functions."""
        dtype, device = input.dtype, input.device
        bias = None
        if self.bias is not None:
            bias = comfy.model_management.cast_to(self.bias, dtype, device, copy=len(self.bias_function) > 0)
            for function in self.bias_function:
                bias = function(bias)
        weight = self.dequantized_weight(dtype, device)
        if self.gguf_patches is not None:
            weight = self.gguf_patches.patch_weight(weight)
        for function in self.weight_function:
            weight = function(weight)
        return weight.to(dtype), bias

    def lora_side_path(self, input: torch.Tensor) -> torch.Tensor | None:
        """The plain-LoRA terms' contribution to this layer's output, None without any."""
        return None if self.gguf_patches is None else self.gguf_patches.side_path(input)


def _check_shape(key: str, declared: torch.Tensor, entry) -> None:
    """Refuses, at load, a file tensor whose shape is not the layer's (a corrupt row count would otherwise
    fail only at the first forward, inside the host's matmul)."""
    if not isinstance(entry, GGUFTensor) or not declared.is_meta or tuple(declared.shape) == tuple(entry.shape):
        return
    raise GGUFFileError(f"{entry.source or 'the GGUF file'}: tensor {entry.name} is {entry.qtype.name} "
                        f"{list(entry.shape)}, but the model's {key} needs {list(declared.shape)}; the file is "
                        "corrupt or of another Wan variant: download it again or re-convert it with "
                        "`python -m wan_accel.convert`")


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def make_gguf_operations(compute_dtype: torch.dtype) -> type:
    """A host ``operations`` namespace whose Linear and Conv3d take GGUF tensors; others are the host's. Its
    layers share one :class:`TritonFailures`: a Triton failure sends this model's later calls of that type to
    PyTorch, and the next model loaded tries Triton again."""
    failures = TritonFailures()

    class GGUFOperations(comfy.ops.manual_cast):
        class Linear(GGUFWeightLayer, comfy.ops.manual_cast.Linear):
            patched_weight_dtype = compute_dtype
            gguf_failures = failures

            def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
                super().__init__(in_features, out_features, bias=bias, device="meta", dtype=dtype)

            def forward_comfy_cast_weights(self, input):
                weight, bias = self.cast_bias_weight(input)
                out = torch.nn.functional.linear(input, weight, bias)
                side = self.lora_side_path(input)
                return out if side is None else out + side

        class Conv3d(GGUFWeightLayer, comfy.ops.manual_cast.Conv3d):
            patched_weight_dtype = compute_dtype
            gguf_failures = failures

            def __init__(self, *args, device=None, **kwargs):
                super().__init__(*args, device="meta", **kwargs)

            def forward_comfy_cast_weights(self, input):
                weight, bias = self.cast_bias_weight(input)
                return self._conv_forward(input, weight, bias)

    return GGUFOperations
