"""Texture and colour post-process for generated video (skin mask, detail boost, grain, colour, temporal smoothing)."""
from .device import DEVICE_CHOICES, compute_device_for
from .enhance import DEFAULT_CHUNK_FRAMES, enhance_video, enhance_video_with_mask
from .filters import gaussian_blur
from .params import GRAIN_MODES, EnhanceParams
from .skin_mask import skin_mask

__all__ = ["DEFAULT_CHUNK_FRAMES", "DEVICE_CHOICES", "EnhanceParams", "GRAIN_MODES", "compute_device_for",
           "enhance_video", "enhance_video_with_mask", "gaussian_blur", "skin_mask"]
