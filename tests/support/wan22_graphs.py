"""API-format graph of the host's own Wan 2.2 I2V A14B pattern, for the host test tier.

As in the host's template ``video_wan2_2_14B_i2v.json``: one model loader per expert, an optional
``LoraLoaderModelOnly`` on each, ``ModelSamplingSD3`` (shift 5) on each, and two ``KSamplerAdvanced`` splitting the
steps at ``switch_step`` (the high-noise one adds the noise and returns the leftover noise, the low-noise one
finishes), at cfg 1. The image conditioning (``WanImageToVideo``) needs a VAE and is left out: the experts' extra
20 input channels are then zeros, made by the host's own ``concat_cond``. Node ids are fixed strings:

=====  =========================================  =====  =========================================
 id     node                                        id     node
=====  =========================================  =====  =========================================
 "11"   high-noise model loader (parameter)        "12"   low-noise model loader (parameter)
 "21"   LoraLoaderModelOnly on "11" (optional)     "22"   LoraLoaderModelOnly on "12" (optional)
 "31"   ModelSamplingSD3 on the high-noise model   "32"   ModelSamplingSD3 on the low-noise model
 "3"    CLIPLoader (umt5 stub)                      "4"    T5TokenizerOptions (no padding)
 "5"    CLIPTextEncode positive                     "6"    CLIPTextEncode negative
 "7"    EmptyHunyuanLatentVideo                     "81"   KSamplerAdvanced, high noise
 "82"   KSamplerAdvanced, low noise                 "9"    SaveLatent
=====  =========================================  =====  =========================================
"""
from __future__ import annotations

from typing import Any

from tests.support.graphs import UMT5_NAME

EXPERT_NODES = {"high": {"model": "11", "lora": "21", "shift": "31", "sampler": "81"},
                "low": {"model": "12", "lora": "22", "shift": "32", "sampler": "82"}}


def two_expert_graph(high: tuple[str, dict], low: tuple[str, dict], *,
                     loras: dict[str, tuple[str, float]] | None = None, steps: int = 4, switch_step: int = 2,
                     shift: float = 5.0, seed: int = 0, cfg: float = 1.0,
                     sampler_name: str = "euler", scheduler: str = "simple", width: int = 64, height: int = 64,
                     length: int = 5, positive: str = "a cat walks on the beach", negative: str = "low quality",
                     filename_prefix: str = "latents/wan22") -> dict[str, Any]:
    """``high``/``low``: ``(class_type, inputs)`` of each expert's MODEL loader; ``loras``: ``{"high": (lora_name,
    strength), "low": ...}`` for a ``LoraLoaderModelOnly`` on that expert."""
    graph: dict[str, Any] = {
        "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": UMT5_NAME, "type": "wan", "device": "default"}},
        "4": {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["3", 0], "min_padding": 0, "min_length": 0}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 0]}},
        "7": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}},
    }
    latent = ["7", 0]
    for expert, (class_type, inputs) in (("high", high), ("low", low)):
        ids = EXPERT_NODES[expert]
        graph[ids["model"]] = {"class_type": class_type, "inputs": dict(inputs)}
        model = [ids["model"], 0]
        if loras and expert in loras:
            name, strength = loras[expert]
            graph[ids["lora"]] = {"class_type": "LoraLoaderModelOnly",
                                  "inputs": {"model": model, "lora_name": name, "strength_model": float(strength)}}
            model = [ids["lora"], 0]
        graph[ids["shift"]] = {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": float(shift)}}
        first = expert == "high"
        graph[ids["sampler"]] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": [ids["shift"], 0], "add_noise": "enable" if first else "disable", "noise_seed": int(seed),
            "steps": int(steps), "cfg": float(cfg), "sampler_name": sampler_name, "scheduler": scheduler,
            "positive": ["5", 0], "negative": ["6", 0], "latent_image": latent,
            "start_at_step": 0 if first else int(switch_step), "end_at_step": int(switch_step) if first else 10000,
            "return_with_leftover_noise": "enable" if first else "disable"}}
        latent = [ids["sampler"], 0]
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": latent, "filename_prefix": filename_prefix}}
    return graph
