"""Film-like grain: seeded Gaussian noise blurred to a natural grain size, optionally coherent across frames."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .filters import gaussian_blur, gaussian_kernel1d, gaussian_radius

_SEED_STRIDE = 1_000_003  # distinct (seed, frame) pairs map to distinct generator seeds for videos under a million frames


def raw_noise(seed: int, index: int, height: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unit Gaussian [H, W] float32 field on CPU for frame ``index`` (``-1``: the static field); independent of chunking."""
    generator = torch.Generator(device="cpu").manual_seed((seed * _SEED_STRIDE + index + 1) % (1 << 63))
    return torch.randn((height, width), generator=generator, dtype=torch.float32, out=out)


def blurred_noise_std(sigma: float) -> float:
    """Standard deviation left in unit white noise by ``gaussian_blur(., sigma)``: the sum of the squared 1-D taps."""
    taps = gaussian_kernel1d(sigma, gaussian_radius(sigma))
    return float((taps * taps).sum())


def grain_fields(seed: int, indices: Sequence[int], height: int, width: int, sigma: float,
                 mode: str, coherence: float, device: torch.device | str) -> torch.Tensor:
    """Unit-variance grain [len(indices), H, W] on ``device``; "temporal_coherent" blends a static field with per-frame ones."""
    fresh = torch.empty((len(indices), height, width), dtype=torch.float32)
    for row, index in enumerate(indices):
        raw_noise(seed, index, height, width, out=fresh[row])
    fresh = fresh.to(device)
    scale = 1.0 / blurred_noise_std(sigma)
    if mode == "temporal_coherent":
        norm = (coherence**2 + (1.0 - coherence) ** 2) ** 0.5
        fresh.mul_((1.0 - coherence) / norm).add_(raw_noise(seed, -1, height, width).to(device), alpha=coherence / norm)
    return gaussian_blur(fresh, sigma).mul_(scale)
