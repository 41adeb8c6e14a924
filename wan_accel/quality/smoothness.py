"""Motion smoothness: how well AMT-S, given a video's even frames, predicts its odd ones (VBench's
``motion_smoothness``).

The network is the AMT-S that VBench ships (``vbench.third_party.amt``, built from its packaged ``cfgs/AMT-S.yaml``).
Importing it imports the ``vbench`` package, whose ``__init__`` needs ``decord``; AMT's utilities need ``imageio``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from .formulas import smoothness_score
from .metric import MetricValue
from .video_io import Video
from .weights import WeightSpec, locate

WEIGHTS = (
    WeightSpec(metric="smoothness", file="amt-s.pth", size_mb=12,
               source="https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth",
               licence="CC BY-NC 4.0 (MCG-NKU/AMT, non-commercial use only)",
               cache_dir="~/.cache/vbench/amt_model"),
)

#: VBench pads frames to a multiple of 16 and runs AMT-S at scale 1. Its VRAM-derived scale applies only when its
#: device is the string ``'cuda'``; its evaluate.py and evaluate_i2v.py pass ``torch.device("cuda")``, which does not
#: equal ``'cuda'``, so they take its no-resize branch on GPUs too (and at 480×832 any GPU over 3.4 GB gives scale 1).
AMT_PADDING, AMT_SCALE = 16, 1.0
#: AMT-S pools its correlation volume 3 times; under 128 padded px a side its last level is 1 px wide and it divides
#: by zero (VBench then scores NaN frames as black).
AMT_MIN_PADDED_SIDE = 128
#: The time of the predicted frame between its two inputs.
AMT_EMBT = 0.5


def amt_config_path() -> Path:
    """VBench's packaged AMT-S configuration."""
    import vbench

    return Path(vbench.__file__).parent / "third_party" / "amt" / "cfgs" / "AMT-S.yaml"


class MotionSmoothness:
    """AMT-S on one device: ``measure`` interpolates each pair of even frames and compares the result with the odd
    frame between them."""

    name = "smoothness"
    needs_image = False

    def __init__(self, model, device: str):
        import torch

        self.model = model
        self.device = torch.device(device)
        self.embt = torch.tensor(AMT_EMBT).float().view(1, 1, 1, 1).to(self.device)

    def interpolated_odd_frames(self, frames: np.ndarray) -> np.ndarray:
        """AMT-S's prediction of each odd frame from the even frames on either side, (K, H, W, 3) uint8."""
        import torch
        from vbench.third_party.amt.utils.utils import InputPadder, img2tensor, tensor2img

        inputs = frames[0::2]
        padder = InputPadder(frames.shape[1:3], AMT_PADDING)
        predicted = []
        previous = padder.pad(img2tensor(inputs[0]).to(self.device))
        for frame in inputs[1:]:
            current = padder.pad(img2tensor(frame).to(self.device))
            with torch.no_grad():
                out = self.model(previous, current, self.embt, scale_factor=AMT_SCALE, eval=True)["imgt_pred"]
            predicted.append(tensor2img(padder.unpad(out.cpu())))
            previous = current
        return np.stack(predicted)

    def measure(self, video: Video) -> MetricValue:
        """``(255 − mean |predicted odd − real odd|) / 255`` over every odd frame that has an even frame after it."""
        padded_side = -(-min(video.height, video.width) // AMT_PADDING) * AMT_PADDING
        if len(video.frames) < 3 or padded_side < AMT_MIN_PADDED_SIDE:
            raise UsageError(f"motion smoothness cannot measure {video.path}: it needs 3 frames or more of at least "
                             f"{AMT_MIN_PADDED_SIDE - AMT_PADDING + 1} px a side, got {len(video.frames)} of "
                             f"{video.width}x{video.height}")
        predicted = self.interpolated_odd_frames(video.frames)
        return MetricValue(smoothness_score(predicted, video.frames[1::2][:len(predicted)]))


def load(device: str, weights_dir: Path | None) -> MotionSmoothness:
    """AMT-S with ``amt-s.pth`` (a dict whose ``state_dict`` holds the weights) on ``device``."""
    path = locate(WEIGHTS[0], weights_dir)
    import torch
    from omegaconf import OmegaConf
    from vbench.third_party.amt.utils.build_utils import build_from_cfg

    model = build_from_cfg(OmegaConf.load(amt_config_path()).network)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    return MotionSmoothness(model.to(device).eval(), device)
