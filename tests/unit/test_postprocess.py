"""Texture & colour post-process (kernels/postprocess): OpenCV agreement, quality figures, determinism, edge cases."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.postprocess import EnhanceParams, enhance_video, enhance_video_with_mask, gaussian_blur, skin_mask
from kernels.postprocess.filters import gaussian_radius, morph_open_close
from kernels.postprocess.metrics import flicker, luma_ssim
from kernels.postprocess.reference_cv2 import enhance_video_naive_cv2, gaussian_blur_cv2, skin_mask_cv2
from kernels.postprocess.skin_mask import skin_binary

SKIN_RGB = (0.86, 0.62, 0.52)  # 8-bit YCrCb (162, 167, 106): inside the default Cr/Cb box
DEFAULT = EnhanceParams()
CR, CB = (DEFAULT.cr_min, DEFAULT.cr_max), (DEFAULT.cb_min, DEFAULT.cb_max)


def _texture(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """[1, H, W] zero-mean fine texture (3x3-averaged uniform noise)."""
    return F.avg_pool2d(torch.rand((1, 1, height, width), generator=generator), 3, 1, 1)[0] - 0.5


def make_scene(frames: int = 16, height: int = 64, width: int = 96, motion: int = 1, seed: int = 0) -> torch.Tensor:
    """[frames, H, W, 3] video: textured background panning ``motion`` px/frame, a textured skin ellipse moving twice as fast."""
    generator = torch.Generator().manual_seed(seed)
    pad = 2 * motion * frames
    coarse = torch.rand((1, 3, height // 8 + 1, (width + pad) // 8 + 1), generator=generator)
    canvas = F.interpolate(coarse, size=(height, width + pad), mode="bicubic", align_corners=False)[0] * 0.5 + 0.2
    canvas = canvas + 0.15 * _texture(generator, height, width + pad)
    face = torch.tensor(SKIN_RGB).view(3, 1, 1) + 0.06 * _texture(generator, height, width + pad)
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    video = torch.empty((frames, height, width, 3))
    for t in range(frames):
        shift = 2 * motion * t
        inside = ((rows - height / 2) / (0.3 * height)) ** 2 + ((cols - 0.35 * width - shift) / (0.2 * width)) ** 2 <= 1
        frame = torch.where(inside, face[:, :, pad - shift : pad - shift + width], canvas[:, :, motion * t : motion * t + width])
        video[t] = frame.clamp(0.0, 1.0).permute(1, 2, 0)
    return video


def add_noise(video: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    """``video`` plus independent per-pixel, per-frame Gaussian noise, clamped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (video + std * torch.randn(video.shape, generator=generator)).clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    return make_scene()
