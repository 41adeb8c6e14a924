"""Node "Load Text Encoder (fp8)": Wan's umt5-xxl from a bf16/fp16/fp32/fp8 file, Linear weights stored as fp8.

The host builds its own umt5 encoder (``comfy.text_encoders.wan``) with our operations
(``nodes/text_encoder_ops.py``) and the shape found in the file, and returns its own ``CLIP`` object, so
``CLIPTextEncode``, ``T5TokenizerOptions`` and CLIP LoRAs work unchanged and the host's model management
loads it for encoding and offloads it when another model needs the memory.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import comfy.model_management
import comfy.sd
import comfy.text_encoders.wan
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..wan_accel_kernels.fp8 import GRANULARITIES, StorageSupport, compute_dtype_for, storage_support
from ..wan_accel_kernels.fp8.umt5_file import TOKENIZER_KEY, TextEncoderFileError, UMT5File, inspect_umt5_file
from .model_files import ModelFileInput
from .stats import NodeStats, report_node_stats
from .text_encoder_ops import make_fp8_text_encoder_ops

log = logging.getLogger("wan_accel")

TEXT_ENCODER_EXTENSIONS = {".safetensors", ".sft"}
TEXT_ENCODER_FILE = ModelFileInput("clip_name", "text_encoders", frozenset(TEXT_ENCODER_EXTENSIONS))
DEVICES = ("gpu", "cpu")
SIXTEEN_BIT = {"F16": torch.float16, "BF16": torch.bfloat16}
DROPPED_KEYS = ("scaled_fp8",)
NO_GPU = "no GPU found: the text encoder loads and runs on the CPU"
_fallbacks_reported: set[str] = set()


def _report_once(message: str) -> None:
    """Logs a fallback warning the first time it happens in this process."""
    if message not in _fallbacks_reported:
        _fallbacks_reported.add(message)
        log.warning("wan-accel: %s", message)


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: how summaries and cache keys spell a dtype."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LoadedTextEncoder:
    """The host CLIP plus what the node reports about it."""

    clip: comfy.sd.CLIP
    source: UMT5File
    storage: StorageSupport
    granularity: str
    load_device: torch.device
    device_note: str
    resident_bytes: int
    bf16_bytes: int
    missing: tuple[str, ...]
    seconds: float

    @property
    def compute_dtype(self) -> torch.dtype:
        """What the Linear layers compute in on the load device."""
        return compute_dtype_for(self.load_device)

    @property
    def ratio(self) -> float:
        """Weight bytes held against a bf16 load of the same encoder."""
        return self.resident_bytes / self.bf16_bytes

    def summary(self) -> str:
        storage = (f"fp8 e4m3fn, {self.granularity} scale" if self.storage.fp8
                   else f"{dtype_name(self.storage.storage_dtype)} (fp8 unsupported: {self.storage.reason})")
        text = (f"{self.source.path.name}: {len(self.source.linear_weights)} Linear weights "
                f"{self.source.weight_dtype} -> {storage}; embeddings/norms "
                f"{dtype_name(SIXTEEN_BIT[self.source.sixteen_bit])}; "
                f"{self.resident_bytes / 2**30:.2f} GiB vs {self.bf16_bytes / 2**30:.2f} GiB as bf16 "
                f"(ratio {self.ratio:.2f}); compute {dtype_name(self.compute_dtype)} on {self.load_device}; "
                f"loaded in {self.seconds:.1f} s")
        if self.missing:
            text += f"; {len(self.missing)} tensors missing from the file (left uninitialised)"
        if self.device_note:
            text += f"; {self.device_note}"
        return text

    def stats(self) -> NodeStats:
        """The editor badge: how the Linear weights are stored, the bytes kept against bf16, where it computes."""
        storage = "F8_E4M3" if self.storage.fp8 else dtype_name(self.storage.storage_dtype)
        warnings = [] if self.storage.fp8 else [f"fp8 unsupported: {self.storage.reason}"]
        if self.missing:
            warnings.append(f"{len(self.missing)} tensors missing from the file (left uninitialised)")
        if self.device_note:
            warnings.append(self.device_note)
        return NodeStats(weight_types={storage: len(self.source.linear_weights)}, resident_bytes=self.resident_bytes,
                         notes=(f"{self.ratio:.2f}× the bytes of bf16 · compute {dtype_name(self.compute_dtype)} "
                                f"on {self.load_device.type}",), warnings=tuple(warnings))


def encoder_devices(device: str) -> tuple[torch.device, torch.device]:
    """``(load_device, offload_device)`` for the node's device option, through the host's model management."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    load_device = comfy.model_management.get_torch_device()
    if load_device.type == "cpu":
        _report_once(NO_GPU)
    return load_device, comfy.model_management.text_encoder_offload_device()


def storage_for_devices(load_device: torch.device, offload_device: torch.device) -> StorageSupport:
    """fp8 storage if both devices support it, else 16-bit; the fallback is logged once per reason."""
    support = storage_support(load_device)
    if support.fp8 and offload_device != load_device:
        support = storage_support(offload_device)
    if not support.fp8:
        _report_once(f"{support.reason}; the text encoder's Linear weights are stored in 16 bits instead "
                     "(about twice the memory of fp8)")
    return support


def _state_dict(source: UMT5File) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(weights, tokenizer_data)`` of the file, weights memory-mapped by the host's loader."""
    state_dict = comfy.utils.load_torch_file(str(source.path), safe_load=True)
    tokenizer_data = {TOKENIZER_KEY: state_dict.pop(TOKENIZER_KEY)}
    for key in [k for k in state_dict if k in DROPPED_KEYS or k.endswith(".scale_input")]:
        del state_dict[key]
    return state_dict, tokenizer_data


def load_umt5_fp8(path: str, device: str = "gpu", granularity: str = "per_row") -> LoadedTextEncoder:
    """Loads a umt5-xxl file as a host CLIP whose Linear weights are float8_e4m3fn (16-bit where unsupported)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"scaling must be one of {GRANULARITIES}, got {granularity!r}")
    started = time.perf_counter()
    source = inspect_umt5_file(path)
    load_device, offload_device = encoder_devices(device)
    support = storage_for_devices(load_device, offload_device)
    sixteen = SIXTEEN_BIT[source.sixteen_bit]
    storage_dtype = support.storage_dtype if support.fp8 else sixteen
    progress = comfy.utils.ProgressBar(max(len(source.linear_weights), 1))
    operations = make_fp8_text_encoder_ops(storage_dtype, granularity, quantize_device=load_device,
                                           on_weight_loaded=lambda: progress.update(1))
    model_options = {"custom_operations": operations, "dtype": sixteen, "load_device": load_device,
                     "offload_device": offload_device, "umt5xxl_model_config": dict(source.config)}
    target = SimpleNamespace(params={}, clip=comfy.text_encoders.wan.te(dtype_t5=sixteen),
                             tokenizer=comfy.text_encoders.wan.WanT5Tokenizer)
    linear_share = source.linear_parameters // 2 if support.fp8 else source.linear_parameters
    state_dict, tokenizer_data = _state_dict(source)
    clip = comfy.sd.CLIP(target, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                         tokenizer_data=tokenizer_data, parameters=linear_share + source.other_parameters,
                         model_options=model_options)
    try:
        missing, _ = clip.load_sd(state_dict)
    except ValueError as error:
        raise TextEncoderFileError(f"{source.path.name}: {error}; the file is damaged, download it again") from error
    del state_dict
    if missing:
        log.warning("wan-accel: %s lacks %d encoder tensors (first: %s); they stay uninitialised",
                    source.path.name, len(missing), missing[0])
    weights = clip.cond_stage_model.state_dict()
    loaded = LoadedTextEncoder(
        clip=clip, source=source, storage=support, granularity=granularity, load_device=load_device,
        device_note=NO_GPU if device == "gpu" and load_device.type == "cpu" else "",
        resident_bytes=comfy.model_management.module_size(clip.cond_stage_model),
        bf16_bytes=2 * sum(t.numel() for name, t in weights.items() if not name.endswith("weight_scale")),
        missing=tuple(missing), seconds=time.perf_counter() - started)
    log.info("wan-accel: loaded %s", loaded.summary())
    return loaded


class LoadTextEncoderFP8(io.ComfyNode):
    """Loads Wan's umt5-xxl with fp8 Linear weights: about half the Linear-weight memory of a bf16 load."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelLoadTextEncoderFP8",
            display_name="Load Text Encoder (fp8)",
            category="wan-accel/loaders",
            description="Loads Wan's umt5-xxl text encoder from models/text_encoders (bf16, fp16, fp32 or fp8 "
                        "safetensors) and stores its Linear weights as float8_e4m3fn with a scale, computing in "
                        "bf16 on a GPU (fp32 on CPU); embeddings, norms and the relative-attention bias stay "
                        "16-bit. Returns a normal CLIP for CLIPTextEncode. Falls back to 16-bit storage where "
                        "torch or the device has no float8.",
            inputs=[
                TEXT_ENCODER_FILE.combo_input("umt5-xxl file, e.g. umt5_xxl_fp16.safetensors"),
                io.Combo.Input("device", options=list(DEVICES), default="gpu",
                               tooltip="gpu: encode on the GPU, offloaded by the host when the DiT needs the "
                                       "memory; cpu: load and encode on the CPU (slower, no VRAM)"),
                io.Combo.Input("scaling", options=list(GRANULARITIES), default="per_row",
                               tooltip="fp8 scale per output row (more accurate) or one per weight"),
            ],
            outputs=[io.Clip.Output()],
        )

    @classmethod
    def validate_inputs(cls, clip_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a file name that is not in the dropdown (see nodes/model_files.py)."""
        return TEXT_ENCODER_FILE.validate(clip_name)

    @classmethod
    def execute(cls, clip_name: str, device: str, scaling: str) -> io.NodeOutput:
        loaded = load_umt5_fp8(TEXT_ENCODER_FILE.resolve(clip_name), device, scaling)
        report_node_stats("WanAccelLoadTextEncoderFP8", loaded.stats())
        return io.NodeOutput(loaded.clip, ui=ui.PreviewText(loaded.summary()))
