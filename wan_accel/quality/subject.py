"""I2V subject: DINO ViT-B/16 features of the input image and of every frame, compared as VBench's ``i2v_subject``.

The network is timm's ``vit_base_patch16_224.dino`` loaded from Meta's original DINO file, the one VBench gets through
``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')``; the feature is its CLS token after the final norm.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import formulas
from .metric import MetricValue
from .video_io import Video
from .weights import WeightSpec, locate
from ..errors import UsageError

#: Meta's DINO ViT-B/16 backbone; torch.hub (as VBench and DreamSim use it) caches it under the hub's checkpoints.
WEIGHTS = (
    WeightSpec(
        metric="subject",
        file="dino_vitbase16_pretrain.pth",
        size_mb=343.2,
        source="https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        licence="Apache-2.0 (facebookresearch/dino)",
        cache_dir="~/.cache/torch/hub/checkpoints",
    ),
)
TIMM_ARCH = "vit_base_patch16_224.dino"
#: Frames per forward pass: the features do not depend on it beyond float rounding.
BATCH = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


def frames_to_tensor(frames: np.ndarray):
    """(T, H, W, 3) uint8 frames as the (T, 3, H, W) float32 tensor of 0..255 values VBench's ``load_video`` gives."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2)


def dino_frames(frames):
    """VBench's ``dino_transform_internet``: bicubic resize of the float frames (short side 256), centre crop 224,
    /255, ImageNet normalisation."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    frames = TF.resize(frames, RESIZE, interpolation=InterpolationMode.BICUBIC, antialias=True)
    frames = TF.center_crop(frames, CROP).float().div(255.0)
    return TF.normalize(frames, IMAGENET_MEAN, IMAGENET_STD)


def dino_image(image: np.ndarray):
    """VBench's ``dino_transform_Image_internet`` on the input image: PIL bicubic resize (short side 256), centre crop
    224, to tensor, ImageNet normalisation; (1, 3, 224, 224)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pil = TF.center_crop(TF.resize(Image.fromarray(image), RESIZE, interpolation=InterpolationMode.BICUBIC), CROP)
    return TF.normalize(TF.to_tensor(pil), IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)


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


class SubjectMetric:
    """DINO ViT-B/16 on ``device``; :meth:`measure` gives VBench's I2V subject score of one video."""

    name = "subject"
    needs_image = True

    def __init__(self, model, device: str):
        self.model = model
        self.device = device

    def measure(self, video: Video) -> MetricValue:
        """0.4·max similarity to the image + 0.3·mean + 0.3·min similarity of consecutive frames."""
        image = dino_image(require_image(video, self.name)).to(self.device)
        image_feature = embed_image(self.model, image)
        frame_features = embed_frames(self.model, video.frames, dino_frames, self.device)
        return similarity_value(image_feature, frame_features)


def load(device: str, weights_dir: Path | None) -> SubjectMetric:
    """timm's DINO ViT-B/16 from ``dino_vitbase16_pretrain.pth`` (never downloaded: :class:`MissingWeights`)."""
    path = locate(WEIGHTS[0], weights_dir)
    import timm

    model = timm.create_model(TIMM_ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return SubjectMetric(model.eval().requires_grad_(False).to(device), device)
