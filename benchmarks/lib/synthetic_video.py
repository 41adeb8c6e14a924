"""A synthetic clip for the post-process benchmarks: textured background, a moving skin-toned ellipse, light noise.

Its own file so the GPU suite can use it without OpenCV (which ``postprocess.py`` imports for its baseline).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """[frames, H, W, 3] float32: smooth texture panning 1 px/frame, a skin-toned ellipse, light per-frame noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, height // 16 + 1, (width + frames) // 16 + 1), generator=generator)
    canvas = F.interpolate(coarse, size=(height, width + frames), mode="bicubic", align_corners=False)[0]
    canvas = canvas.mul(0.5).add(0.25)
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    skin = torch.tensor([0.85, 0.6, 0.5]).view(3, 1, 1)
    video = torch.empty((frames, height, width, 3))
    for t in range(frames):
        frame = canvas[:, :, t : t + width].clone()
        inside = ((rows - height / 2) / (height / 4)) ** 2 + ((cols - width / 3 - t) / (width / 8)) ** 2 <= 1.0
        frame = torch.where(inside, skin, frame)
        noise = torch.randn((3, height, width), generator=generator) * 0.01
        video[t] = frame.add(noise).clamp(0.0, 1.0).permute(1, 2, 0)
    return video
