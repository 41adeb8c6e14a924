"""API-format Wan 2.2 A14B two-expert graphs for the host tier: our Expert Sampler, or the host's two KSamplerAdvanced.

(``tests/support/wan22_graphs.py`` builds the host's pattern with LoRAs for the loader tests; this one adds our
Expert Sampler and a model patch per expert, for the switch and step-cache tests.) Node ids are fixed strings:

=====  ==============================  ============================================================
 id     class_type                      role
=====  ==============================  ============================================================
 "1"    UNETLoader (or a given loader)  high-noise expert
 "2"    UNETLoader (or a given loader)  low-noise expert
 "3"    ModelSamplingSD3                high-noise shift
 "4"    ModelSamplingSD3                low-noise shift
 "5"    (optional model patch)          on the high-noise expert, e.g. a step cache or calibration
 "6"    (optional model patch)          on the low-noise expert
 "10"   CLIPLoader                      umt5 stub, type ``wan``
 "11"   T5TokenizerOptions              prompt tokens only (fast stub encodes)
 "12"   CLIPTextEncode                  positive
 "13"   CLIPTextEncode                  negative
 "14"   EmptyHunyuanLatentVideo         16-channel latent (the I2V image conditioning stays the host's zeros)
 "20"   WanAccelExpertSampler           ``sampler="expert"``; or KSamplerAdvanced, high-noise (``"host"``)
 "21"   KSamplerAdvanced                low-noise (``"host"`` only)
 "30"   SaveLatent                      ``ui.latents``
=====  ==============================  ============================================================
"""
from __future__ import annotations

from typing import Any, Optional

from tests.support.graphs import UMT5_NAME

NODE = {"high": "1", "low": "2", "high_shift": "3", "low_shift": "4", "high_patch": "5", "low_patch": "6",
        "sampler": "20", "low_sampler": "21", "save": "30"}


def _expert_chain(g: dict, loader: tuple[str, dict], loader_id: str, shift_id: str, patch_id: str, shift: float,
                  patch: Optional[tuple[str, dict]]) -> list:
    g[loader_id] = {"class_type": loader[0], "inputs": dict(loader[1])}
    g[shift_id] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [loader_id, 0], "shift": float(shift)}}
    if patch is None:
        return [shift_id, 0]
    g[patch_id] = {"class_type": patch[0], "inputs": {"model": [shift_id, 0], **patch[1]}}
    return [patch_id, 0]


def expert_graph(high_loader: tuple[str, dict], low_loader: tuple[str, dict], *, sampler: str = "expert",
                 steps: int = 4, switch_step: int = 2, switch_at: str = "boundary sigma", boundary: float = 0.9,
                 cfg: tuple[float, float] = (1.0, 1.0), sampler_name: str = "euler", scheduler: str = "simple",
                 shift: float = 5.0, seed: int = 0, high_patch: Optional[tuple[str, dict]] = None,
                 low_patch: Optional[tuple[str, dict]] = None, width: int = 64, height: int = 64, length: int = 5,
                 filename_prefix: str = "latents/wan22") -> dict[str, Any]:
    """Two experts -> shift -> [patch] -> our Expert Sampler (``sampler="expert"``) or the host's two
    KSamplerAdvanced split at ``switch_step`` (``"host"``) -> SaveLatent."""
    g: dict[str, Any] = {}
    high = _expert_chain(g, high_loader, NODE["high"], NODE["high_shift"], NODE["high_patch"], shift, high_patch)
    low = _expert_chain(g, low_loader, NODE["low"], NODE["low_shift"], NODE["low_patch"], shift, low_patch)
    g["10"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": UMT5_NAME, "type": "wan", "device": "default"}}
    g["11"] = {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["10", 0], "min_padding": 0, "min_length": 0}}
    g["12"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat walks on the beach", "clip": ["11", 0]}}
    g["13"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "low quality", "clip": ["11", 0]}}
    g["14"] = {"class_type": "EmptyHunyuanLatentVideo",
               "inputs": {"width": width, "height": height, "length": length, "batch_size": 1}}
    common = {"steps": steps, "sampler_name": sampler_name, "scheduler": scheduler, "positive": ["12", 0],
              "negative": ["13", 0]}
    if sampler == "expert":
        g[NODE["sampler"]] = {"class_type": "WanAccelExpertSampler", "inputs": {
            **common, "high_noise_model": high, "low_noise_model": low, "latent_image": ["14", 0],
            "noise_seed": seed, "cfg_high": float(cfg[0]), "cfg_low": float(cfg[1]), "switch_at": switch_at,
            "boundary": float(boundary), "switch_step": switch_step}}
        result = [NODE["sampler"], 0]
    elif sampler == "host":
        g[NODE["sampler"]] = {"class_type": "KSamplerAdvanced", "inputs": {
            **common, "model": high, "add_noise": "enable", "noise_seed": seed, "cfg": float(cfg[0]),
            "latent_image": ["14", 0], "start_at_step": 0, "end_at_step": switch_step,
            "return_with_leftover_noise": "enable"}}
        g[NODE["low_sampler"]] = {"class_type": "KSamplerAdvanced", "inputs": {
            **common, "model": low, "add_noise": "disable", "noise_seed": seed, "cfg": float(cfg[1]),
            "latent_image": [NODE["sampler"], 0], "start_at_step": switch_step, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}}
        result = [NODE["low_sampler"], 0]
    else:
        raise ValueError(f"sampler is 'expert' or 'host', not {sampler!r}")
    g[NODE["save"]] = {"class_type": "SaveLatent", "inputs": {"samples": result, "filename_prefix": filename_prefix}}
    return g
