"""Node "Load VAE (precision)": a VAE file from models/vae in the precision the user picks, as the host's VAE object."""
from __future__ import annotations

import os
import pickle

import comfy.sd
import comfy.utils
import torch
from comfy_api.latest import io, ui

from .model_files import ModelFileInput
from .stats import NodeStats, report_node_stats

VAE_EXTENSIONS = {".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".sft"}
PRECISIONS: dict[str, torch.dtype | None] = {
    "auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VAE_FILE = ModelFileInput("vae_name", "vae", frozenset(VAE_EXTENSIONS))


def precision_name(dtype: torch.dtype) -> str:
    """``fp16`` / ``bf16`` / ``fp32`` for a dtype, its torch name otherwise."""
    return next((name for name, value in PRECISIONS.items() if value == dtype), str(dtype).replace("torch.", ""))


def load_vae(path: str, precision: str) -> comfy.sd.VAE:
    """The host's ``comfy.sd.VAE`` for ``path``, weights and compute in ``precision`` (auto: the host's choice)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:  # safe_load: torch.load(weights_only=True) for pickled formats, whatever the host's default
        state_dict = comfy.utils.load_torch_file(path, safe_load=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{os.path.basename(path)} holds more than weights (a pickle that would run code to load); "
                         "use a .safetensors VAE, e.g. wan_2.1_vae.safetensors, in models/vae") from None
    vae = comfy.sd.VAE(sd=state_dict, dtype=PRECISIONS[precision])
    if vae.first_stage_model is None:
        raise ValueError(f"{os.path.basename(path)} holds no VAE weights the host recognises; "
                         "put a VAE file (e.g. wan_2.1_vae.safetensors) in models/vae")
    return vae


class LoadVAEPrecision(io.ComfyNode):
    """Loads a VAE with a per-node precision instead of the host's global --fp16-vae/--bf16-vae/--fp32-vae flags."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAccelLoadVAE",
            display_name="Load VAE (precision)",
            category="wan-accel/loaders",
            description="Loads a VAE from models/vae with its weights and computation in fp16, bf16 or fp32 "
                        "(auto: the host's choice). Returns the host's VAE, so VAEDecode, WanImageToVideo and the "
                        "rest work unchanged; decode with 'VAE Decode (bounded memory)' to get the fp32 redo "
                        "when fp16 overflows.",
            inputs=[
                VAE_FILE.combo_input("VAE file, e.g. wan_2.1_vae.safetensors"),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="dtype of the VAE's weights and computation; auto follows the host "
                                       "(start-up flags, else what the device supports)"),
            ],
            outputs=[io.Vae.Output()],
        )

    @classmethod
    def validate_inputs(cls, vae_name: str | None = None) -> bool | str:
        """Refuses, at queue time, a file name that is not in the dropdown (see nodes/model_files.py)."""
        return VAE_FILE.validate(vae_name)

    @classmethod
    def execute(cls, vae_name: str, precision: str) -> io.NodeOutput:
        vae = load_vae(VAE_FILE.resolve(vae_name), precision)
        dtype = next(vae.first_stage_model.parameters()).dtype
        millions = sum(p.numel() for p in vae.first_stage_model.parameters()) / 1e6
        text = (f"{vae_name}: weights {precision_name(dtype)} (asked {precision}), {millions:.0f} M parameters, "
                f"runs on {vae.device}")
        report_node_stats("WanAccelLoadVAE", NodeStats(
            resident_bytes=sum(p.nbytes for p in vae.first_stage_model.parameters()),
            notes=(f"precision {precision_name(dtype)} (asked {precision}) on {vae.device.type}",)))
        return io.NodeOutput(vae, ui=ui.PreviewText(text))
