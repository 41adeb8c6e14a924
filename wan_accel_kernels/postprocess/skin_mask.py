"""Skin mask from OpenCV's 8-bit BGR->YCrCb thresholds, cleaned by open/close and feathered by a Gaussian."""
from __future__ import annotations

import torch

from .filters import gaussian_blur, morph_open_close

# OpenCV's fixed-point RGB->YCrCb (14 fractional bits, results rounded half up and saturated to 0..255):
# Y = R*0.299 + G*0.587 + B*0.114, Cr = (R - Y) * 0.713 + 128, Cb = (B - Y) * 0.564 + 128.
_SHIFT = 14
_Y_COEFFS = (4899, 9617, 1868)
_CR_COEFF = 11682
_CB_COEFF = 9241


def quantise_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """Integer-valued float32 copy of ``rgb`` in [0, 1] on the 0..255 scale, rounded half to even (``np.rint``)."""
    return rgb.to(torch.float32).mul(255.0).round_()


def _difference_bounds(low: int, high: int, coeff: int) -> tuple[float, float]:
    """Integer range of ``C - Y`` whose saturated ``((C - Y) * coeff + 128.5 * 2^14) >> 14`` lies in [low, high]."""
    offset = (128 << _SHIFT) + (1 << (_SHIFT - 1))
    lower = -((offset - low * (1 << _SHIFT)) // coeff) if low > 0 else -float("inf")
    upper = -((offset - (high + 1) * (1 << _SHIFT)) // coeff) - 1 if high < 255 else float("inf")
    return float(lower), float(upper)


def skin_binary(rgb: torch.Tensor, cr_range: tuple[int, int], cb_range: tuple[int, int]) -> torch.Tensor:
    """Bool [N, H, W]: pixels of planar ``rgb`` [N, 3, H, W] whose 8-bit Cr and Cb lie in the inclusive ranges."""
    q = quantise_8bit(rgb)
    # (sum(q * coeff) + 2^13) >> 14 exactly in float32: dyadic coefficients, every partial sum below 2^22.
    scale = 1.0 / (1 << _SHIFT)
    y = q[:, 0].mul(_Y_COEFFS[0] * scale).add_(q[:, 1], alpha=_Y_COEFFS[1] * scale)
    y.add_(q[:, 2], alpha=_Y_COEFFS[2] * scale).add_(0.5).floor_()
    cr_low, cr_high = _difference_bounds(*cr_range, _CR_COEFF)
    cb_low, cb_high = _difference_bounds(*cb_range, _CB_COEFF)
    red = q[:, 0] - y
    blue = q[:, 2] - y
    inside = (red >= cr_low) & (red <= cr_high)
    inside &= blue >= cb_low
    inside &= blue <= cb_high
    return inside


def skin_mask(rgb: torch.Tensor, cr_range: tuple[int, int], cb_range: tuple[int, int],
              morph_size: int, feather_sigma: float) -> torch.Tensor:
    """Soft skin mask [N, H, W] in [0, 1] of planar ``rgb`` [N, 3, H, W]: thresholds, open/close, Gaussian feather."""
    binary = morph_open_close(skin_binary(rgb, cr_range, cb_range), morph_size)
    return gaussian_blur(binary.to(torch.float32), feather_sigma)
