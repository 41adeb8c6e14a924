"""OpenCV reference of the post-process: the skin mask and blurs the tests compare with, and a naive per-frame loop."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from wan_accel_kernels.postprocess.filters import gaussian_radius
from wan_accel_kernels.postprocess.grain import blurred_noise_std, raw_noise
from wan_accel_kernels.postprocess.params import EnhanceParams, resolve_params
from wan_accel_kernels.postprocess.temporal import temporal_radius


def gaussian_blur_cv2(image: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur`` of float32 ``image`` with the pack's kernel size (2 * round(3 sigma) + 1), reflect-101."""
    size = 2 * gaussian_radius(sigma) + 1
    return cv2.GaussianBlur(image.astype(np.float32), (size, size), sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT_101)


def skin_mask_cv2(rgb: np.ndarray, cr_range: tuple[int, int], cb_range: tuple[int, int],
                  morph_size: int, feather_sigma: float) -> np.ndarray:
    """Float32 [H, W] skin mask of ``rgb`` [H, W, 3] in [0, 1]: 8-bit BGR2YCrCb, inRange, open/close, GaussianBlur."""
    bgr = np.rint(rgb[..., ::-1] * np.float32(255.0)).astype(np.uint8)
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    binary = cv2.inRange(ycrcb, (0, cr_range[0], cb_range[0]), (255, cr_range[1], cb_range[1]))
    if morph_size > 1:
        kernel = np.ones((morph_size, morph_size), np.uint8)
        binary = cv2.morphologyEx(cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    return gaussian_blur_cv2(binary.astype(np.float32) / np.float32(255.0), feather_sigma)


def _grain_cv2(p: EnhanceParams, index: int, height: int, width: int, static: np.ndarray | None) -> np.ndarray:
    """Unit-variance blurred grain of one frame, the same noise draws as the torch path."""
    fresh = raw_noise(p.seed, index, height, width).numpy()
    if static is not None:
        c = p.grain_coherence
        norm = (c**2 + (1.0 - c) ** 2) ** 0.5
        fresh = fresh * np.float32((1.0 - c) / norm) + static * np.float32(c / norm)
    return gaussian_blur_cv2(fresh, p.grain_sigma) * np.float32(1.0 / blurred_noise_std(p.grain_sigma))


def _reflect101(index: int, count: int) -> int:
    """Frame index ``index`` folded into ``0..count-1`` the reflect-101 way."""
    period = 2 * (count - 1)
    index %= period
    return period - index if index >= count else index


def enhance_video_naive_cv2(frames: np.ndarray, params: EnhanceParams | None = None, **overrides: Any) -> np.ndarray:
    """Straightforward per-frame OpenCV/NumPy ``enhance_video`` of RGB float32 [B, H, W, 3]: the same operations."""
    p = resolve_params(params, overrides)
    total, height, width, _ = frames.shape
    static = None
    if p.grain_mode == "temporal_coherent":
        static = raw_noise(p.seed, -1, height, width).numpy()
    enhanced, bases = [], []
    for t in range(total):
        x = np.clip(np.nan_to_num(frames[t, ..., :3].astype(np.float32), nan=0.0), 0.0, 1.0)
        y = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        mask = skin_mask_cv2(x, (p.cr_min, p.cr_max), (p.cb_min, p.cb_max), p.mask_morph_size, p.mask_feather_sigma)
        base = gaussian_blur_cv2(y, p.detail_sigma)
        other_gain = 1.0 if p.skin_only else p.detail_gain_global
        gain = mask * np.float32(p.detail_gain) + (1.0 - mask) * np.float32(other_gain)
        offset = (gain - 1.0) * (y - base)
        if p.has_grain:
            amplitude = mask * np.float32(p.grain_strength) + (1.0 - mask) * np.float32(p.grain_elsewhere)
            offset += amplitude * 4.0 * y * (1.0 - y) * _grain_cv2(p, t, height, width, static)
        z = x + offset[..., None]
        z_luma = cv2.cvtColor(z, cv2.COLOR_RGB2GRAY)[..., None]
        z = z_luma + np.float32(p.saturation) * (z - z_luma)
        z = np.float32(0.5) + np.float32(p.contrast) * (z - np.float32(0.5))
        enhanced.append(z)
        bases.append(base)
    radius = temporal_radius(p.temporal_sigma, total)
    taps = cv2.getGaussianKernel(2 * radius + 1, p.temporal_sigma, ktype=cv2.CV_32F)[:, 0] if radius else None
    out = np.empty((total, height, width, 3), np.float32)
    for t in range(total):
        result = enhanced[t]
        if radius:
            smooth = sum(taps[k] * enhanced[_reflect101(t + k - radius, total)] for k in range(2 * radius + 1))
            if p.motion_threshold > 0:
                prev_base, next_base = bases[_reflect101(t - 1, total)], bases[_reflect101(t + 1, total)]
                motion = np.maximum(cv2.absdiff(bases[t], prev_base), cv2.absdiff(bases[t], next_base))
                gate = np.exp(-((motion / np.float32(p.motion_threshold)) ** 2))[..., None]
                result = result + gate * (smooth - result)
            else:
                result = smooth
        out[t] = np.clip(result, 0.0, 1.0)
    return out
