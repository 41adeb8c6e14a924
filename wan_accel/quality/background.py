"""I2V background: DreamSim (ensemble of DINO, CLIP and OpenCLIP ViT-B/16 with LoRA) embeddings of the input image
and of every frame, compared as VBench's ``i2v_background``.

DreamSim's ``dreamsim(pretrained=True, cache_dir=...)`` reads everything from one folder: its unzipped ensemble
checkpoint, and, for its DINO branch, a torch.hub cache (the ``facebookresearch/dino`` code and the DINO backbone
file) because it calls ``torch.hub.set_dir(cache_dir)``. Every file is checked first, so nothing downloads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .features import ImageSimilarityMetric
from .weights import WeightSpec, locate

#: DreamSim's default ``cache_dir`` (relative to the working directory, as VBench's ``dreamsim(pretrained=True)``).
CACHE_DIR = "./models"
ENSEMBLE_ZIP = ("https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
                "dreamsim_ensemble_checkpoint.zip (unzipped)")
DINO_REPO = "https://github.com/facebookresearch/dino/archive/refs/heads/main.zip (unzipped as facebookresearch_dino_main)"
DINO_BACKBONE = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"
SIZE = 224


def _spec(file: str, size_mb: float, source: str, licence: str) -> WeightSpec:
    return WeightSpec("background", file, size_mb, source, licence, CACHE_DIR)


WEIGHTS = (
    _spec("ensemble_lora/adapter_config.json", 0.001, ENSEMBLE_ZIP, "MIT (DreamSim)"),
    _spec("ensemble_lora/adapter_model.safetensors", 3.6, ENSEMBLE_ZIP, "MIT (DreamSim)"),
    _spec("dino_vitb16_pretrain.pth", 343.0, ENSEMBLE_ZIP, "MIT (DreamSim); DINO weights Apache-2.0"),
    _spec("clip_vitb16_pretrain.pth.tar", 344.0, ENSEMBLE_ZIP, "MIT (DreamSim); OpenAI CLIP weights MIT"),
    _spec("open_clip_vitb16_pretrain.pth.tar", 344.0, ENSEMBLE_ZIP, "MIT (DreamSim); OpenCLIP weights MIT"),
    _spec("facebookresearch_dino_main/hubconf.py", 0.006, DINO_REPO, "Apache-2.0 (facebookresearch/dino code)"),
    _spec("facebookresearch_dino_main/vision_transformer.py", 0.013, DINO_REPO,
          "Apache-2.0 (facebookresearch/dino code)"),
    _spec("facebookresearch_dino_main/utils.py", 0.03, DINO_REPO, "Apache-2.0 (facebookresearch/dino code)"),
    _spec("checkpoints/dino_vitbase16_pretrain.pth", 343.2, DINO_BACKBONE, "Apache-2.0 (facebookresearch/dino)"),
)


def dreamsim_frames(frames):
    """VBench's ``dreamsim_transform(224)``: bicubic resize of the float frames to 224×224, /255."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.resize(frames, [SIZE, SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True).float().div(255.0)


def dreamsim_image(image: np.ndarray):
    """VBench's ``dreamsim_transform_Image(224)`` on the input image: PIL bicubic resize to 224×224, to tensor."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    pil = TF.resize(Image.fromarray(image), [SIZE, SIZE], interpolation=InterpolationMode.BICUBIC)
    return TF.to_tensor(pil).unsqueeze(0)


class BackgroundMetric(ImageSimilarityMetric):
    """DreamSim on ``device``; :meth:`measure` gives VBench's I2V background score of one video."""

    name = "background"
    image_transform = staticmethod(dreamsim_image)
    frames_transform = staticmethod(dreamsim_frames)

    def embed(self, batch):
        """DreamSim's ensemble embedding (its ``embed``, not its image-pair distance ``forward``)."""
        return self.model.embed(batch)


def load(device: str, weights_dir: Path | None) -> BackgroundMetric:
    """DreamSim's ensemble through ``dreamsim(pretrained=True)`` from the folder that holds every file of
    :data:`WEIGHTS` (:class:`MissingWeights` for the first one missing, before anything is loaded)."""
    for spec in WEIGHTS:
        locate(spec, weights_dir)
    folder = WEIGHTS[0].folder(weights_dir)
    import torch
    from dreamsim import dreamsim

    hub_dir = torch.hub.get_dir()
    try:
        model, _ = dreamsim(pretrained=True, device=device, cache_dir=str(folder), normalize_embeds=True,
                            dreamsim_type="ensemble")
    finally:
        torch.hub.set_dir(hub_dir)
    return BackgroundMetric(model, device)
