"""Baseline of the host tier: the host's own nodes run the tiny Wan 2.1 I2V DiT end to end.

UNETLoader (tiny safetensors DiT) -> [LoraLoaderModelOnly] -> CLIPLoader(umt5 stub, wan) ->
T5TokenizerOptions -> CLIPTextEncode x2 -> EmptyHunyuanLatentVideo 64x64x5 -> KSampler uni_pc,
4 steps, cfg 1.0 -> SaveLatent. Uses only core nodes (fixture ``comfy``, not ``wan_pack``), so it
also guards the harness itself; later tests compare our nodes against these numbers.
"""
from __future__ import annotations

import time

import pytest
import torch

from tests.support.comfy_server import ComfyServer, read_latent
from tests.support.graphs import latent_shape, tiny_i2v_graph

# Measured on the 2-core CPU, host v0.3.64 (64x64x5, 4 steps uni_pc, cfg 1): output std 3.49
# (absmax 13.3); relative L2 between seeds 0 and 1: 1.31; the LoRA moves the seed-0 output by a
# relative L2 of 0.191 at strength 1.0 and 0.092 at 0.5. The bounds leave wide margins.
MIN_STD = 0.5
MIN_SEED_REL_L2 = 0.5
MIN_LORA_REL_L2 = 0.05

_cache: dict[tuple, torch.Tensor] = {}


def run_tiny(comfy: ComfyServer, **kw) -> torch.Tensor:
    """Run :func:`tiny_i2v_graph` (``**kw``) on the host; returns the saved latent (memoised)."""
    key = tuple(sorted(kw.items()))
    if key not in _cache:
        t0 = time.monotonic()
        hist = comfy.run(tiny_i2v_graph(**kw), timeout=600)
        [path] = comfy.output_files(hist, "latents")
        _cache[key] = read_latent(path)
        print(f"\n[host] tiny I2V graph {kw} ran in {time.monotonic() - t0:.1f} s -> {path.name}")
    return _cache[key]


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_tiny_dit_latent_is_finite_and_nontrivial(comfy: ComfyServer) -> None:
    lat = run_tiny(comfy, seed=0)
    assert tuple(lat.shape) == latent_shape(64, 64, 5) == (1, 16, 2, 8, 8)
    assert torch.isfinite(lat).all()
    std = float(lat.float().std())
    print(f"[host] baseline latent: mean {float(lat.float().mean()):+.4f} std {std:.4f} "
          f"absmax {float(lat.abs().max()):.3f}")
    assert std > MIN_STD


def test_tiny_dit_seed_changes_output(comfy: ComfyServer) -> None:
    a = run_tiny(comfy, seed=0)
    b = run_tiny(comfy, seed=1)
    d = rel_l2(b, a)
    print(f"[host] seed 0 vs seed 1: relative L2 {d:.4f}")
    assert d > MIN_SEED_REL_L2


def test_tiny_lora_changes_output(comfy: ComfyServer, comfy_models: dict[str, str]) -> None:
    a = run_tiny(comfy, seed=0)
    b = run_tiny(comfy, seed=0, lora_name=comfy_models["lora"])
    assert torch.isfinite(b).all()
    d = rel_l2(b, a)
    print(f"[host] LoRA strength 1.0 vs none (seed 0): relative L2 {d:.4f}")
    assert d > MIN_LORA_REL_L2
    half = run_tiny(comfy, seed=0, lora_name=comfy_models["lora"], lora_strength=0.5)
    d_half = rel_l2(half, a)
    print(f"[host] LoRA strength 0.5 vs none (seed 0): relative L2 {d_half:.4f}")
    assert 0.0 < d_half < d


@pytest.mark.parametrize("node", ["UNETLoader", "CLIPLoader", "LoraLoaderModelOnly"])
def test_tiny_files_are_listed(comfy: ComfyServer, comfy_models: dict[str, str], node: str) -> None:
    info = comfy.object_info(node)[node]["input"]["required"]
    field = {"UNETLoader": "unet_name", "CLIPLoader": "clip_name", "LoraLoaderModelOnly": "lora_name"}[node]
    want = {"UNETLoader": "dit", "CLIPLoader": "umt5", "LoraLoaderModelOnly": "lora"}[node]
    assert comfy_models[want] in info[field][0]
