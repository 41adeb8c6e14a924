"""Video quality figures used by the tests and the benchmark: luma SSIM and frame-to-frame flicker."""
from __future__ import annotations

import torch

from .colour import luma
from .filters import gaussian_blur

_SSIM_SIGMA = 1.5  # Wang et al. 2004: 11-tap Gaussian window, sigma 1.5
_C1 = 0.01**2
_C2 = 0.03**2


def video_luma(frames: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma [B, H, W] float32 of channels-last ``frames`` [B, H, W, C>=3]."""
    return luma(frames[..., :3].permute(0, 3, 1, 2).to(torch.float32))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Gaussian-window SSIM of two [..., H, W] images with values in [0, 1]."""
    a, b = a.to(torch.float32), b.to(torch.float32)
    mu_a, mu_b = gaussian_blur(a, _SSIM_SIGMA), gaussian_blur(b, _SSIM_SIGMA)
    var_a = gaussian_blur(a * a, _SSIM_SIGMA) - mu_a * mu_a
    var_b = gaussian_blur(b * b, _SSIM_SIGMA) - mu_b * mu_b
    cov = gaussian_blur(a * b, _SSIM_SIGMA) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    denominator = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    return float((numerator / denominator).mean())


def luma_ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM of the luma of ``video`` against ``reference`` (both [B, H, W, C] in [0, 1])."""
    return ssim(video_luma(video), video_luma(reference))


def flicker(video: torch.Tensor) -> float:
    """Mean absolute frame-to-frame change of the luma of ``video`` [B, H, W, C]: flicker, on a still scene."""
    y = video_luma(video)
    return float((y[1:] - y[:-1]).abs().mean())
