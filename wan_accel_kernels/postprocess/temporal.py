"""Gaussian smoothing along the frame axis, gated by a motion estimate so moving regions are not ghosted."""
from __future__ import annotations

import torch

from .filters import gaussian_kernel1d, gaussian_radius, reflect101


def temporal_radius(sigma: float, frames: int) -> int:
    """Halo in frames needed by the temporal Gaussian; 0 when disabled (``sigma`` 0) or for a single frame."""
    return 0 if sigma <= 0 or frames < 2 else gaussian_radius(sigma)


def window_indices(start: int, stop: int, radius: int, frames: int) -> list[int]:
    """Absolute frame indices ``start - radius .. stop + radius - 1``, reflected (reflect-101) at the video's ends."""
    return reflect101(torch.arange(start - radius, stop + radius), frames).tolist()


def temporal_matrix(count: int, window: list[int], sigma: float, radius: int, frames: int) -> torch.Tensor:
    """[count, frames] weights: row i is the Gaussian over ``window[i : i + 2r + 1]``, reflected taps on real frames."""
    taps = gaussian_kernel1d(sigma, radius).to(torch.float32)
    weights = torch.zeros(count, frames, dtype=torch.float32)
    for i in range(count):
        weights[i].index_add_(0, torch.tensor(window[i : i + 2 * radius + 1]), taps)
    return weights


def motion_weight(bases: torch.Tensor, threshold: float) -> torch.Tensor:
    """Smoothing weight in (0, 1] of frames 1..n-2 of blurred luma ``bases`` [n, H, W]: exp(-(m / threshold)^2).

    m is the larger absolute change to the previous or next frame; the blur keeps noise from counting as motion.
    """
    change = (bases[1:] - bases[:-1]).abs_()
    motion = torch.maximum(change[:-1], change[1:])
    return motion.square_().mul_(-1.0 / (threshold * threshold)).exp_()
