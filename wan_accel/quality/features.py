"""The steps the network metrics share: frames as tensors, L2-normalised embeddings, and the I2V similarity score
that subject (DINO) and background (DreamSim) compute the same way from different networks."""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import formulas
from .metric import MetricValue
from .video_io import Video
from ..errors import UsageError

#: Frames per forward pass: the features do not depend on it beyond float rounding.
BATCH = 16


def frames_to_tensor(frames: np.ndarray):
    """(T, H, W, 3) uint8 frames as the (T, 3, H, W) float32 tensor of 0..255 values VBench's ``load_video`` gives."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2)


def embed_frames(embed: Callable, frames: np.ndarray, transform: Callable, device: str,
                 batch: int = BATCH) -> np.ndarray:
    """``embed(transform(frames))`` batch by batch, L2-normalised rows as (T, D) float64."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            chunk = transform(frames_to_tensor(frames[start:start + batch])).to(device)
            out.append(F.normalize(embed(chunk).float(), dim=-1, p=2).cpu().double().numpy())
    return np.concatenate(out)


def embed_image(embed: Callable, image) -> np.ndarray:
    """``embed`` of one transformed image (1, 3, H, W), L2-normalised, as (D,) float64."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        return F.normalize(embed(image).float(), dim=-1, p=2).cpu().double().numpy().reshape(-1)


def similarity_value(image_feature: np.ndarray, frame_features: np.ndarray) -> MetricValue:
    """The I2V similarity score of one video from its features, with the to-image and consecutive curves."""
    to_image, consecutive = formulas.clamped_similarities(image_feature, frame_features)
    return MetricValue(formulas.i2v_similarity_score(to_image, consecutive),
                       {"to_image": to_image, "consecutive": consecutive})


def require_image(video: Video, metric: str) -> np.ndarray:
    """The video's input image, or a :class:`UsageError` that says how to give it."""
    if video.image is None:
        raise UsageError(f"metric {metric} compares {video.path} with its input image: pass the image the video "
                         f"was made from")
    return video.image


class NetworkMetric:
    """A metric's loaded network (``model``) and the device its inputs are moved to."""

    name: str
    needs_image: bool

    def __init__(self, model, device: str):
        self.model = model
        self.device = device


class ImageSimilarityMetric(NetworkMetric):
    """An I2V similarity metric: a subclass names its network's preprocessing of the input image and of the frames
    (VBench's transforms) and, where the network is not called directly, how it embeds."""

    needs_image = True
    #: The input image, (H, W, 3) uint8, as the network's (1, 3, H', W') input (a staticmethod in the subclass).
    image_transform: Callable
    #: (T, 3, H, W) float 0..255 frames as the network's input batch (a staticmethod in the subclass).
    frames_transform: Callable

    def embed(self, batch):
        """The network's feature of each item of a prepared batch, (N, D)."""
        return self.model(batch)

    def measure(self, video: Video) -> MetricValue:
        """0.4·max similarity to the image + 0.3·mean + 0.3·min similarity of consecutive frames."""
        image = self.image_transform(require_image(video, self.name)).to(self.device)
        image_feature = embed_image(self.embed, image)
        frame_features = embed_frames(self.embed, video.frames, self.frames_transform, self.device)
        return similarity_value(image_feature, frame_features)
