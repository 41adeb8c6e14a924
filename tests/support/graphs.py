"""API-format graphs (``POST /prompt`` bodies) for the host test tier.

Node ids are fixed strings so tests can find a node's output in the history:

=====  ==========================  =============================================
 id     class_type                  role
=====  ==========================  =============================================
 "1"    (model loader, parameter)   ``UNETLoader`` by default; any node whose
                                    output 0 is a MODEL (e.g. our GGUF loader)
 "2"    LoraLoaderModelOnly         only when ``lora_name`` is given
 "3"    CLIPLoader                  umt5 stub, type ``wan``
 "4"    T5TokenizerOptions          only when ``t5_min_length`` is not None
 "5"    CLIPTextEncode              positive
 "6"    CLIPTextEncode              negative
 "7"    EmptyHunyuanLatentVideo     16-channel Wan latent
 "8"    KSampler
 "9"    SaveLatent                  ``ui.latents`` -> ``ComfyServer.output_files(h, "latents")``
=====  ==========================  =============================================
"""
from __future__ import annotations

from typing import Any, Union

__all__ = ["NODE", "DIT_NAME", "UMT5_NAME", "LORA_NAME", "unet_loader", "tiny_i2v_graph",
           "latent_shape"]

NODE = {"model": "1", "lora": "2", "clip": "3", "t5_options": "4", "positive": "5",
        "negative": "6", "latent": "7", "sampler": "8", "save": "9"}

# File names the host-tier fixture (tests/host/conftest.py) installs.
DIT_NAME = "wan_tiny_i2v.safetensors"      # models/diffusion_models/
UMT5_NAME = "umt5_tiny_stub.safetensors"   # models/text_encoders/
LORA_NAME = "wan_tiny_lora.safetensors"    # models/loras/


def unet_loader(unet_name: str = DIT_NAME, weight_dtype: str = "default") -> tuple[str, dict]:
    """``(class_type, inputs)`` of the host's own ``UNETLoader``."""
    return "UNETLoader", {"unet_name": unet_name, "weight_dtype": weight_dtype}


def latent_shape(width: int = 64, height: int = 64, length: int = 5, batch_size: int = 1) -> tuple[int, ...]:
    """Shape of the latent ``EmptyHunyuanLatentVideo`` makes (and SaveLatent saves) for a Wan 2.1 graph."""
    return (batch_size, 16, (length - 1) // 4 + 1, height // 8, width // 8)


def tiny_i2v_graph(*, loader: Union[tuple[str, dict], None] = None, lora_name: Union[str, None] = None,
                   lora_strength: float = 1.0, clip_name: str = UMT5_NAME,
                   positive: str = "a cat walks on the beach", negative: str = "low quality",
                   t5_min_length: Union[int, None] = 0, width: int = 64, height: int = 64,
                   length: int = 5, batch_size: int = 1, seed: int = 0, steps: int = 4,
                   cfg: float = 1.0, sampler_name: str = "uni_pc", scheduler: str = "simple",
                   denoise: float = 1.0, filename_prefix: str = "latents/tiny_i2v") -> dict[str, Any]:
    """Model loader -> [LoRA] -> KSampler(umt5 stub prompts, empty Wan latent) -> SaveLatent.

    ``loader`` is ``(class_type, inputs)`` of the node producing the MODEL (default:
    :func:`unet_loader` on the tiny DiT). ``t5_min_length=0`` inserts the core
    ``T5TokenizerOptions`` node so the stub encoder runs only the prompt's tokens instead of 512
    (~1.5-8 s per encode instead of ~60 s on a 2-core CPU); ``None`` leaves the host's padding.
    ``width``/``height`` must be multiples of 16, ``length`` of the form 4k+1.
    """
    if width % 16 or height % 16:
        raise ValueError("width and height must be multiples of 16 (Wan: VAE /8 and patch 2)")
    if length < 1 or (length - 1) % 4:
        raise ValueError("length must be 4k+1 (EmptyHunyuanLatentVideo step)")
    cls, inputs = loader if loader is not None else unet_loader()
    g: dict[str, Any] = {NODE["model"]: {"class_type": cls, "inputs": dict(inputs)}}
    model_ref = [NODE["model"], 0]
    if lora_name is not None:
        g[NODE["lora"]] = {"class_type": "LoraLoaderModelOnly",
                           "inputs": {"model": model_ref, "lora_name": lora_name,
                                      "strength_model": float(lora_strength)}}
        model_ref = [NODE["lora"], 0]
    g[NODE["clip"]] = {"class_type": "CLIPLoader",
                       "inputs": {"clip_name": clip_name, "type": "wan", "device": "default"}}
    clip_ref = [NODE["clip"], 0]
    if t5_min_length is not None:
        g[NODE["t5_options"]] = {"class_type": "T5TokenizerOptions",
                                 "inputs": {"clip": clip_ref, "min_padding": 0,
                                            "min_length": int(t5_min_length)}}
        clip_ref = [NODE["t5_options"], 0]
    g[NODE["positive"]] = {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": clip_ref}}
    g[NODE["negative"]] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": clip_ref}}
    g[NODE["latent"]] = {"class_type": "EmptyHunyuanLatentVideo",
                         "inputs": {"width": width, "height": height, "length": length,
                                    "batch_size": batch_size}}
    g[NODE["sampler"]] = {"class_type": "KSampler",
                          "inputs": {"model": model_ref, "seed": int(seed), "steps": int(steps),
                                     "cfg": float(cfg), "sampler_name": sampler_name,
                                     "scheduler": scheduler, "positive": [NODE["positive"], 0],
                                     "negative": [NODE["negative"], 0], "latent_image": [NODE["latent"], 0],
                                     "denoise": float(denoise)}}
    g[NODE["save"]] = {"class_type": "SaveLatent",
                       "inputs": {"samples": [NODE["sampler"], 0], "filename_prefix": filename_prefix}}
    return g
