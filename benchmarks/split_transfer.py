"""Bytes on the wire and error of each transfer format of a split run, at the Wan 2.1 480p latent.

A split of one KSampler (``wan-accel run --split-at K``) carries a history: the K denoised predictions stage A's
uni_pc made (one per step), which stage B replays. A split of the host's two-expert KSamplerAdvanced pair carries
the latent the first sampler returns with leftover noise: for Wan's flow model ``x_K / (1 - sigma_K)`` with
``x_K = (1 - sigma_K) x0 + sigma_K noise`` (the host's ``CONST.inverse_noise_scaling``). This script builds both at
832x480x81 (latent 16x21x60x104) from a smooth stand-in ``x0`` (channel scales of a Wan latent), seeded noise, and
for the predictions ``x0`` plus a deviation that shrinks with sigma (a stand-in, not a DiT's output), at each split
step of the winner's schedule (8 steps, shift 8, ``simple``), and round-trips them through every payload format of
``wan_accel_kernels/latent_payload.py``. The fp32 payload is the baseline measured in the same run (bit-exact,
asserted). For scale, the leftover latent stored as GGUF Q8_0 and Q6_K (the winner's DiT weight format) is measured
too. CPU only; a few minutes on 2 cores (the Q6_K quantiser and the larger histories are most of it).

    python -m benchmarks.split_transfer [--splits 2 4 6] [--json out.json]

The error of the final latent and of the decoded video (which includes the rest of the denoising) is measured on
the tiny hosts by ``tests/host/test_host_split_denoise.py``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from gguf import GGMLQuantizationType

from wan_accel_kernels.gguf import dequantize
from wan_accel_kernels.gguf.quantize import quantize
from wan_accel_kernels.latent_payload import FORMATS, RunKey, decode_history, decode_payload, encode_history, \
    encode_payload

LATENT_SHAPE = (1, 16, 21, 60, 104)   # Wan 2.1 VAE latent of 832x480, 81 frames
STEPS, SHIFT, SEED = 8, 8.0, 42
GGUF_BYTES_PER_BLOCK = {GGMLQuantizationType.Q8_0: (34, 32), GGMLQuantizationType.Q6_K: (210, 256)}


def split_sigma(step: int, steps: int = STEPS, shift: float = SHIFT) -> float:
    """sigma at ``step`` of the host's ``simple`` schedule for a flow model with ``shift`` (ModelSamplingSD3)."""
    t = 1.0 - step / steps
    return shift * t / (1.0 + (shift - 1.0) * t)


def stand_in_x0(seed: int = SEED) -> torch.Tensor:
    """A smooth latent with channels of different scales, standing in for a clean Wan latent."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 16, 6, 8, 14, generator=generator)
    x0 = torch.nn.functional.interpolate(coarse, size=LATENT_SHAPE[2:], mode="trilinear", align_corners=False)
    return x0 * torch.linspace(0.4, 1.6, 16).reshape(1, 16, 1, 1, 1)


def leftover_latent(sigma: float, seed: int = SEED) -> torch.Tensor:
    """What Export Latent hands over at ``sigma``: ``((1 - sigma) x0 + sigma noise) / (1 - sigma)``."""
    noise = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed + 1))
    return ((1.0 - sigma) * stand_in_x0(seed) + sigma * noise) / (1.0 - sigma)


def predictions(split: int, seed: int = SEED) -> tuple[list[torch.Tensor], list[float]]:
    """The history a Split Sampler (stage A) hands over: one prediction of ``x0`` per step before ``split``."""
    x0, sigmas = stand_in_x0(seed), [split_sigma(step) for step in range(split)]
    generator = torch.Generator().manual_seed(seed + 2)
    return [x0 + 0.3 * sigma * torch.randn(LATENT_SHAPE, generator=generator) for sigma in sigmas], sigmas


def _row(name: str, wire_bytes: int, back: torch.Tensor, latent: torch.Tensor, fp32_bytes: int,
         seconds: float) -> dict:
    error = (back.float() - latent).float()
    rmse = float(error.pow(2).mean().sqrt())
    peak = float(latent.abs().max())
    return {"format": name, "bytes": wire_bytes, "vs_fp32": wire_bytes / fp32_bytes,
            "bits_per_value": 8 * wire_bytes / latent.numel(), "rel_l2": float(error.norm() / latent.norm()),
            "max_abs": float(error.abs().max()), "psnr_db": math.inf if rmse == 0 else 20 * math.log10(peak / rmse),
            "seconds": seconds}


def _round_trips(split: int, kind: str, tensors: list[torch.Tensor], sigmas: list[float]) -> list[dict]:
    """Every payload format of ``tensors`` (a history, or the one leftover latent), fp32 first as the baseline."""
    key = RunKey(LATENT_SHAPE, SEED, STEPS, split, "uni_pc simple cfg 1" if kind == "history" else "")
    whole = torch.stack(tensors)
    rows, fp32_bytes = [], None
    for fmt in FORMATS:
        started = time.perf_counter()
        if kind == "history":
            payload = encode_history(tensors, sigmas, fmt, key)
            back = torch.stack(decode_history(payload, key).outputs)
        else:
            payload = encode_payload(tensors[0], fmt, SEED, STEPS, split)
            back = decode_payload(payload, key)[None]
        seconds = time.perf_counter() - started
        if fmt == "fp32":
            fp32_bytes = len(payload)
            assert torch.equal(back, whole), "fp32 transfer is not bit-exact"
        rows.append(_row(f"{kind} {fmt}", len(payload), back, whole, fp32_bytes, seconds))
    return rows


def measure(split: int) -> list[dict]:
    """Every payload format of the history and of the leftover latent at ``split``, and for scale GGUF Q8_0 / Q6_K
    of the leftover latent."""
    history, sigmas = predictions(split)
    latent = leftover_latent(split_sigma(split))
    rows = _round_trips(split, "history", history, sigmas) + _round_trips(split, "latent", [latent], [])
    fp32_bytes = rows[len(FORMATS)]["bytes"]
    for qtype, (block_bytes, block_values) in GGUF_BYTES_PER_BLOCK.items():
        started = time.perf_counter()
        flat = latent.reshape(-1, block_values)
        back = dequantize(quantize(flat, qtype), qtype, flat.shape).reshape(LATENT_SHAPE)
        wire = latent.numel() // block_values * block_bytes
        seconds = time.perf_counter() - started
        rows.append(_row(f"latent as GGUF {qtype.name}", wire, back, latent, fp32_bytes, seconds))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[2, 4, 6], help="split steps of the 8 (default 2 4 6)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    report = {}
    for split in args.splits:
        sigma = split_sigma(split)
        rows = measure(split)
        report[str(split)] = {"sigma": sigma, "rows": rows}
        print(f"\nsplit at step {split} of {STEPS} (sigma {sigma:.3f}), latent {list(LATENT_SHAPE)}, "
              f"{math.prod(LATENT_SHAPE)} values; history of {split} predictions; baseline: each kind's fp32 "
              f"payload, measured in this run")
        print(f"{'format':26} {'bytes':>10} {'vs fp32':>8} {'bits/val':>9} {'rel. L2':>10} {'max abs':>9} "
              f"{'PSNR dB':>8} {'enc+dec s':>9}")
        for r in rows:
            print(f"{r['format']:26} {r['bytes']:>10} {r['vs_fp32']:>8.3f} {r['bits_per_value']:>9.3f} "
                  f"{r['rel_l2']:>10.2e} {r['max_abs']:>9.2e} {r['psnr_db']:>8.2f} {r['seconds']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
