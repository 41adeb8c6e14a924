"""Builds the host's Wan model (Wan 2.1 I2V 14B, a Wan 2.2 I2V A14B expert) from a GGUF file, weights kept quantised.

Host glue, no numerics. A Wan 2.2 I2V expert has no CLIP-vision branch: the host builds it as its ``WAN21_T2V``
with ``in_dim`` 36 and adds the image latent and mask channels itself. The Wan 2.2 TI2V 5B is refused by name."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import torch

from ..wan_accel_kernels.gguf import DEQUANTIZE_TYPES, dequantize
from ..wan_accel_kernels.gguf.reader import GGUFFileError, GGUFModelFile, read_gguf
from ..wan_accel_kernels.w8a8 import matmul_support, runs_on
from ..wan_accel_kernels.wan_layout import WanLayout, unsupported_reason, wan_layout
from .gguf_memory import reserve_dequant_memory
from .gguf_ops import make_gguf_operations
from .gguf_patcher import GGUFModelPatcher
from .w8a8_ops import is_w8a8, make_w8a8_operations

WAN_ARCHITECTURES = {"wan", None}
"""``general.architecture`` values accepted: ours/ComfyUI-GGUF's ``wan``, or none (older converters)."""

KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

SIXTEEN_BIT = "bf16/fp16"
COMPUTE_CHOICES = {SIXTEEN_BIT: None, "int8 W8A8": "int8", "fp8 W8A8": "fp8"}
"""How the block linears multiply: dequantised to the compute dtype (the winner's path), or W8A8 int8/fp8."""

_fallbacks_logged: set[str] = set()
_dynamic_vram_noted = False

log = logging.getLogger("wan_accel")


@dataclass(frozen=True)
class LoadedGGUFModel:
    """The host model plus what the node reports about it."""

    patcher: comfy.model_patcher.ModelPatcher
    source: GGUFModelFile
    compute_dtype: torch.dtype
    resident_weight_bytes: int
    w8a8: str | None = None
    w8a8_note: str = ""
    w8a8_layers: int = 0
    layout: WanLayout | None = None

    def summary(self) -> str:
        types = ", ".join(f"{name} x{count}" for name, count in sorted(self.source.type_counts().items()))
        name = self.source.path.name + (f" ({self.layout.description})" if self.layout else "")
        return (f"{name}: {types}; weights in memory {self.resident_weight_bytes / 2**20:.1f} MiB "
                f"(file {self.source.file_size / 2**20:.1f} MiB), compute {str(self.compute_dtype).split('.')[-1]}"
                + (f"; {self.w8a8} W8A8 block linears x{self.w8a8_layers}" if self.w8a8 else "")
                + (f" ({self.w8a8_note})" if self.w8a8_note else ""))


def _model_state_dict(gguf_file: GGUFModelFile) -> dict:
    """Host key names; float tensors become plain tensors, quantised weights stay raw for our layers.

    Every tensor is copied out of the file's read-only memory map: ComfyUI 0.33 pins offloaded weights in place
    (``cudaHostRegister``), which fails on read-only file pages (ComfyUI-GGUF crashed on exactly this)."""
    state_dict = {}
    for name, tensor in gguf_file.tensors.items():
        for prefix in KEY_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if tensor.is_float:
            state_dict[name] = tensor.to_float_tensor().clone()
        elif len(tensor.shape) < 2:
            state_dict[name] = dequantize(tensor.data, tensor.qtype, tensor.shape)
        else:
            state_dict[name] = dataclasses.replace(tensor, data=tensor.data.clone())
    return state_dict


def _check_types(gguf_file: GGUFModelFile) -> None:
    unsupported = sorted({t.qtype.name for t in gguf_file.tensors.values() if t.qtype not in DEQUANTIZE_TYPES})
    if unsupported:
        supported = ", ".join(t.name for t in DEQUANTIZE_TYPES)
        raise GGUFFileError(f"{gguf_file.path.name} holds GGUF types {', '.join(unsupported)}, which this loader "
                            f"cannot dequantise (supported: {supported}); use a Q6_K or Q8_0 file, or convert "
                            "one with `python -m wan_accel.convert`")


def _detect_wan_config(state_dict: dict, path: Path):
    shapes = {name: torch.empty(tuple(tensor.shape), device="meta") for name, tensor in state_dict.items()}
    model_config = comfy.model_detection.model_config_from_unet(shapes, "")
    if model_config is None:
        raise GGUFFileError(f"{path.name} is not a diffusion model the host recognises; this loader expects a "
                            "Wan 2.1 DiT (head.modulation, patch_embedding, blocks.N)")
    family = model_config.unet_config.get("image_model")
    if family != "wan2.1":
        raise GGUFFileError(f"{path.name} is a {family or type(model_config).__name__} model; "
                            "this loader expects Wan 2.1")
    return model_config


def _choose_compute_dtype(choice: str, model_config, parameters: int) -> torch.dtype:
    if choice in COMPUTE_DTYPES:
        return COMPUTE_DTYPES[choice]
    supported = list(model_config.supported_inference_dtypes)
    load_device = comfy.model_management.get_torch_device()
    unet_dtype = comfy.model_management.unet_dtype(model_params=parameters, supported_dtypes=supported)
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device, supported)
    return manual_cast or unet_dtype


def choose_w8a8(compute: str, device: torch.device) -> tuple[str | None, str]:
    """(format or None, note): the W8A8 format ``compute`` asks for where ``device`` can run it, else None and
    why (logged once per reason): a GPU without int8/fp8 tensor cores falls back to the 16-bit path."""
    if compute not in COMPUTE_CHOICES:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE_CHOICES)}, got {compute!r}")
    fmt = COMPUTE_CHOICES[compute]
    if fmt is None:
        return None, ""
    support = matmul_support(device, fmt)
    if runs_on(device, fmt):
        return fmt, "" if support.native else support.reason
    note = f"{compute} unavailable, block linears compute in 16 bits: {support.reason}"
    if note not in _fallbacks_logged:
        _fallbacks_logged.add(note)
        log.warning("wan-accel: %s", note)
    return None, note


def _note_dynamic_vram_opt_out() -> None:
    """Logs once that our model keeps the classic ``ModelPatcher`` where the host would build dynamic-VRAM ones."""
    global _dynamic_vram_noted
    core = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    if core is comfy.model_patcher.ModelPatcher or _dynamic_vram_noted:
        return
    _dynamic_vram_noted = True
    log.info("wan-accel: the GGUF DiT uses the classic ModelPatcher, not dynamic VRAM: dynamic VRAM streams weights "
             "through the host's own float and QuantizedTensor casts, and ours are raw GGUF blocks that our layers "
             "dequantise themselves; low-VRAM partial loading still applies")


def _resident_weight_bytes(model: torch.nn.Module) -> int:
    return sum(param.nbytes for param in model.parameters()) + sum(buf.nbytes for buf in model.buffers())


def load_wan_gguf(path: str | Path, compute_dtype: str = "auto", compute: str = SIXTEEN_BIT) -> LoadedGGUFModel:
    """Loads ``path`` as a host MODEL whose Linear/Conv3d weights stay as raw ggml blocks, or, with a W8A8
    ``compute``, whose block linears are requantised to resident 8-bit weights."""
    path = Path(path)
    gguf_file = read_gguf(path)
    if gguf_file.architecture not in WAN_ARCHITECTURES:
        raise GGUFFileError(f"{path.name} is a {gguf_file.architecture} model; this loader expects Wan 2.1")
    layout = wan_layout({name: tensor.shape for name, tensor in gguf_file.tensors.items()})
    refusal = unsupported_reason(path.name, layout)
    if refusal:
        raise GGUFFileError(refusal)
    _check_types(gguf_file)
    state_dict = _model_state_dict(gguf_file)
    model_config = _detect_wan_config(state_dict, path)
    parameters = sum(int(torch.Size(t.shape).numel()) for t in state_dict.values())
    dtype = _choose_compute_dtype(compute_dtype, model_config, parameters)
    model_config.set_inference_dtype(dtype, dtype)
    load_device = comfy.model_management.get_torch_device()
    fmt, note = choose_w8a8(compute, load_device)
    model_config.custom_operations = make_w8a8_operations(dtype, fmt) if fmt else make_gguf_operations(dtype)
    model = model_config.get_model(state_dict, "")
    model.load_model_weights(state_dict, "")
    still_meta = [name for name, param in model.diffusion_model.named_parameters() if param.is_meta]
    if still_meta:
        raise GGUFFileError(f"{path.name} lacks {len(still_meta)} tensors the Wan model needs "
                            f"(first: {still_meta[0]}); the file is incomplete or of another Wan variant")
    _note_dynamic_vram_opt_out()
    reserve_dequant_memory(model, dtype, load_device)
    patcher = GGUFModelPatcher(model, load_device=load_device,
                               offload_device=comfy.model_management.unet_offload_device())
    layers = sum(1 for module in model.diffusion_model.modules() if is_w8a8(module))
    loaded = LoadedGGUFModel(patcher, gguf_file, dtype, _resident_weight_bytes(model.diffusion_model), fmt, note,
                             layers, layout)
    log.info("wan-accel: loaded %s", loaded.summary())
    return loaded
