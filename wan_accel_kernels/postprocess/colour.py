"""Luma and the fused luma-offset + saturation + contrast step."""
from __future__ import annotations

import torch

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601, as OpenCV's RGB2GRAY and the Y of YCrCb


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma ``[N, H, W]`` of planar float ``rgb`` ``[N, 3, H, W]``."""
    red, green, blue = LUMA_WEIGHTS
    return rgb[:, 0].mul(red).add_(rgb[:, 1], alpha=green).add_(rgb[:, 2], alpha=blue)


def offset_and_colour(rgb: torch.Tensor, rgb_luma: torch.Tensor, offset: torch.Tensor,
                      saturation: float, contrast: float) -> torch.Tensor:
    """Adds ``offset`` [N,H,W] to every channel of planar ``rgb`` [N,3,H,W], then saturation and contrast, in one pass.

    With y = rgb + offset (luma Y + offset), saturation s about the luma and contrast c about 0.5:
    0.5 + c * (Y' + s * (y - Y') - 0.5) = c*s*rgb + [c*offset + c*(1-s)*Y + 0.5*(1-c)].
    """
    per_pixel = offset.mul(contrast).add_(rgb_luma, alpha=contrast * (1.0 - saturation)).add_(0.5 * (1.0 - contrast))
    return torch.add(per_pixel.unsqueeze(1), rgb, alpha=contrast * saturation)
