"""I2V subject: DINO ViT-B/16 features of the input image and of every frame, compared as VBench's ``i2v_subject``.

The network is timm's ``vit_base_patch16_224.dino`` loaded from Meta's original DINO file, the one VBench gets through
``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')``; the feature is its CLS token after the final norm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .features import ImageSimilarityMetric
from .weights import WeightSpec, locate

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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


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


class SubjectMetric(ImageSimilarityMetric):
    """DINO ViT-B/16 on ``device``; :meth:`measure` gives VBench's I2V subject score of one video."""

    name = "subject"
    image_transform = staticmethod(dino_image)
    frames_transform = staticmethod(dino_frames)


def load(device: str, weights_dir: Path | None) -> SubjectMetric:
    """timm's DINO ViT-B/16 from ``dino_vitbase16_pretrain.pth`` (never downloaded: :class:`MissingWeights`)."""
    path = locate(WEIGHTS[0], weights_dir)
    import timm

    model = timm.create_model(TIMM_ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return SubjectMetric(model.eval().requires_grad_(False).to(device), device)
