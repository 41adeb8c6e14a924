"""The renaming that turns torchvision's RAFT state dict into the original RAFT's (``raft-things.pth``), so VBench's
own RAFT can run the same weights, and the frames the flow tests use (their random-weight files:
``benchmarks/lib/score_weights.py``)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

#: torchvision name -> original RAFT name, applied in order to each key (after the encoder prefixes are renamed).
_RAFT_RENAMES = (
    (r"^feature_encoder\.", "fnet."),
    (r"^context_encoder\.", "cnet."),
    (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."),
    (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.convnormrelu([12])\.0\.", r".conv\1."),
    (r"\.convnormrelu([12])\.1\.", r".norm\1."),
    (r"\.motion_encoder\.convcorr([12])\.0\.", r".encoder.convc\1."),
    (r"\.motion_encoder\.convflow([12])\.0\.", r".encoder.convf\1."),
    (r"\.motion_encoder\.conv\.0\.", ".encoder.conv."),
    (r"\.recurrent_block\.convgru([12])\.conv([zrq])\.", r".gru.conv\2\1."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
    (r"^mask_predictor\.conv\.", "update_block.mask.2."),
)


def original_raft_state_dict(torchvision_state: dict) -> dict:
    """torchvision's ``raft_large`` weights under the original RAFT's names, ``module.``-prefixed as in
    ``raft-things.pth``; each downsampling norm also appears as ``norm3``, the original's second name for it."""
    renamed = {}
    for key, value in torchvision_state.items():
        for pattern, replacement in _RAFT_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
        if ".downsample.1." in key and key.startswith("cnet."):
            renamed[key.replace(".downsample.1.", ".norm3.")] = value
    return {f"module.{key}": value for key, value in renamed.items()}


def write_frame_folder(folder: Path, frames: np.ndarray) -> Path:
    """``frames`` (T, H, W, 3) uint8 RGB as lossless numbered BMPs: a video VBench reads from an image folder (the
    cv2 installed here fails on PIL's PNGs)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:04d}.bmp")
    return folder


def panning_frames(count: int, height: int, width: int, step: int, seed: int) -> np.ndarray:
    """A smooth random texture shifted ``step`` px right per frame, (count, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(height // 8 + 2, (width + step * count) // 8 + 2, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=8,
                                              mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    frames = [texture[:height, step * (count - i):step * (count - i) + width] for i in range(count)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)
