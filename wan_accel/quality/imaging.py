"""Imaging quality: pyiqa's MUSIQ trained on SPAQ scores every frame, as VBench's ``imaging_quality`` does.

Frames are prepared in VBench's default "longer" mode: a frame whose long side exceeds 512 is resized (bilinear,
no antialiasing) so the long side is 512, then divided by 255; the video's score is the mean frame score over 100.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import formulas
from .features import NetworkMetric, frames_to_tensor
from .metric import MetricValue
from .video_io import Video
from .weights import WeightSpec, locate

#: pyiqa caches its downloads in ``<torch hub dir>/pyiqa``.
WEIGHTS = (
    WeightSpec(
        metric="imaging",
        file="musiq_spaq_ckpt-358bb6af.pth",
        size_mb=109.0,
        source="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth",
        licence="non-commercial: pyiqa is PolyForm-Noncommercial-1.0.0 (+ S-Lab License 1.0, non-commercial)",
        cache_dir="~/.cache/torch/hub/pyiqa",
    ),
)
LONG_SIDE = 512


def longer_side_frames(frames):
    """VBench's ``transform(images, 'longer')`` on (T, 3, H, W) float 0..255 frames: long side to 512 when larger
    (size ``int(scale·H), int(scale·W)``, antialias off), then /255."""
    from torchvision.transforms import functional as TF

    height, width = frames.shape[-2:]
    if max(height, width) > LONG_SIDE:
        scale = LONG_SIDE / max(height, width)
        frames = TF.resize(frames, [int(scale * height), int(scale * width)], antialias=False)
    return frames / 255.0


class ImagingMetric(NetworkMetric):
    """MUSIQ on ``device``; :meth:`measure` gives VBench's imaging quality of one video and its per-frame scores."""

    name = "imaging"
    needs_image = False

    def frame_scores(self, frames: np.ndarray) -> list[float]:
        """MUSIQ's score (0..100) of each frame, one frame per forward pass as VBench runs it."""
        import torch

        scores = []
        with torch.inference_mode():
            for frame in frames:
                tensor = longer_side_frames(frames_to_tensor(frame[None])).to(self.device)
                scores.append(float(self.model(tensor)))
        return scores

    def measure(self, video: Video) -> MetricValue:
        """Mean MUSIQ score of the frames / 100; the curve ``frame`` holds each frame's score."""
        scores = self.frame_scores(video.frames)
        return MetricValue(formulas.imaging_quality_score(scores), {"frame": scores})


def load(device: str, weights_dir: Path | None) -> ImagingMetric:
    """pyiqa's MUSIQ from ``musiq_spaq_ckpt-358bb6af.pth`` (never downloaded: :class:`MissingWeights`)."""
    path = locate(WEIGHTS[0], weights_dir)
    from pyiqa.archs.musiq_arch import MUSIQ

    model = MUSIQ(pretrained_model_path=str(path))
    return ImagingMetric(model.eval().requires_grad_(False).to(device), device)
