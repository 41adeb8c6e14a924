"""Film-like grain: seeded Gaussian noise blurred to a natural grain size, optionally coherent across frames."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .filters import gaussian_blur, gaussian_kernel1d, gaussian_radius

_SEED_STRIDE = 1_000_003  # distinct (seed, frame) pairs get distinct generator seeds for videos under 1M frames


def raw_noise(seed: int, index: int, height: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Unit Gaussian [H, W] float32 on CPU for frame ``index`` (-1: the static field), independent of chunking."""
    generator = torch.Generator(device="cpu").manual_seed((seed * _SEED_STRIDE + index + 1) % (1 << 63))
    return torch.randn((height, width), generator=generator, dtype=torch.float32, out=out)


def blurred_noise_std(sigma: float) -> float:
    """Standard deviation left in unit white noise by ``gaussian_blur(., sigma)``: the sum of the squared 1-D taps."""
    taps = gaussian_kernel1d(sigma, gaussian_radius(sigma))
    return float((taps * taps).sum())


class GrainSource:
    """Unit-variance blurred grain for any frame of one video; "temporal_coherent" blends in a static field."""

    def __init__(self, seed: int, height: int, width: int, sigma: float, mode: str, coherence: float,
                 device: torch.device | str):
        self.seed, self.height, self.width, self.sigma, self.device = seed, height, width, sigma, device
        self.static = raw_noise(seed, -1, height, width).to(device) if mode == "temporal_coherent" else None
        norm = (coherence**2 + (1.0 - coherence) ** 2) ** 0.5  # keeps the blend at unit variance
        self.fresh_weight, self.static_weight = (1.0 - coherence) / norm, coherence / norm

    def fields(self, indices: Sequence[int]) -> torch.Tensor:
        """Grain [len(indices), H, W] of absolute frames ``indices``; the same frame always gets the same field."""
        fresh = torch.empty((len(indices), self.height, self.width), dtype=torch.float32)
        for row, index in enumerate(indices):
            raw_noise(self.seed, index, self.height, self.width, out=fresh[row])
        fresh = fresh.to(self.device)
        if self.static is not None:
            fresh.mul_(self.fresh_weight).add_(self.static, alpha=self.static_weight)
        return gaussian_blur(fresh, self.sigma).mul_(1.0 / blurred_noise_std(self.sigma))
