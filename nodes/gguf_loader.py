"""Node "Load Wan DiT (GGUF)": a Wan 2.1 DiT from a .gguf file, weights dequantised per layer at run time."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..kernels.gguf.backend import choose_path
from .gguf_model import COMPUTE_CHOICES, COMPUTE_DTYPES, SIXTEEN_BIT, LoadedGGUFModel, load_wan_gguf
from .model_files import list_model_files, resolve_model_file
from .stats import NodeStats, report_node_stats

GGUF_EXTENSIONS = {".gguf"}
NODE_ID = "WanAccelLoadDiTGGUF"


class LoadWanDiTGGUF(io.ComfyNode):
    """Loads a GGUF Wan 2.1 DiT (e.g. Q6_K) so a 14B model fits a 24 GB GPU."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Load Wan DiT (GGUF)",
            category="wan-accel/loaders",
            description="Loads a Wan 2.1 diffusion model from a .gguf file in models/diffusion_models or "
                        "models/unet. Weights stay quantised in memory and are dequantised per layer, on the "
                        "compute device, at every forward; LoRAs apply after dequantisation. compute 'int8 W8A8' / "
                        "'fp8 W8A8' instead requantises the block linears (attention, FFN) once at load and keeps "
                        "them resident in 8 bits (1.22x the Q6_K bytes of those layers, +2.9 GB at 14B; requantising "
                        "per forward would redo that work at every step), multiplying 8-bit activations (one scale "
                        "per token; int8 Hadamard-rotated) on int8/fp8 tensor cores. A LoRA is added to the "
                        "dequantised weight, which is then requantised. A GPU without such tensor cores falls back "
                        "to 16 bits and says why; fp8 on CPU is an emulation.",
            inputs=[
                io.Combo.Input("unet_name", options=list_model_files("diffusion_models", GGUF_EXTENSIONS),
                               tooltip="GGUF file, e.g. wan2.1-i2v-14b-480p-Q6_K.gguf"),
                io.Combo.Input("compute_dtype", options=["auto", *COMPUTE_DTYPES], default="auto",
                               tooltip="dtype the weights are dequantised to and the DiT computes in; "
                                       "auto follows the host's choice for the device"),
                io.Combo.Input("compute", options=list(COMPUTE_CHOICES), default=SIXTEEN_BIT, optional=True,
                               tooltip="bf16/fp16: dequantise and multiply in compute_dtype (the winner's path). "
                                       "int8/fp8 W8A8: block linears in 8 bits; per layer int8 errs less than "
                                       "Q6_K, fp8 about 1.6x more; other layers stay 16-bit"),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, unet_name: str, compute_dtype: str, compute: str = SIXTEEN_BIT) -> io.NodeOutput:
        loaded = load_wan_gguf(resolve_model_file("diffusion_models", unet_name), compute_dtype, compute)
        report_node_stats(NODE_ID, _stats(loaded))
        return io.NodeOutput(loaded.patcher, ui=ui.PreviewText(loaded.summary()))


def _stats(loaded: LoadedGGUFModel) -> NodeStats:
    """The editor badge's numbers: where the weights get dequantised, their GGUF types, the bytes kept resident."""
    device = loaded.patcher.load_device
    dtype = str(loaded.compute_dtype).removeprefix("torch.")
    path, reason = choose_path(torch.empty(0, dtype=torch.uint8, device=device), loaded.dominant_qtype,
                               loaded.compute_dtype)
    warnings = ("weights dequantise on the CPU: no GPU in use",) if device.type == "cpu" else ()
    if loaded.w8a8_note:
        warnings += (loaded.w8a8_note,)
    linears = f"; block linears {loaded.w8a8} W8A8 x{loaded.w8a8_layers}" if loaded.w8a8 else ""
    return NodeStats(dequant_path=f"{path} per layer → {dtype} on {device.type} ({reason}){linears}",
                     weight_types=loaded.source.type_counts(),
                     resident_bytes=loaded.resident_weight_bytes, warnings=warnings)
