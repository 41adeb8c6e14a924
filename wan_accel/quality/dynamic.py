"""Dynamic degree: whether a video moves, from RAFT's optical flow between sampled frames (VBench's
``dynamic_degree``). Reported beside the final score, not in it.

The network is torchvision's ``raft_large`` with its ``C_T_V1`` weights, which torchvision ported from the original
RAFT's ``raft-things.pth`` (FlyingChairs + FlyingThings3D), the checkpoint VBench uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from .formulas import dynamic_interval, is_dynamic, top_flow_magnitude
from .metric import MetricValue
from .video_io import Video
from .weights import WeightSpec, locate

WEIGHTS = (
    WeightSpec(metric="dynamic", file="raft_large_C_T_V1-22a6c225.pth", size_mb=20.1,
               source="https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth",
               licence="BSD-3-Clause (princeton-vl/RAFT, ported by torchvision)",
               cache_dir="~/.cache/torch/hub/checkpoints"),
)

#: RAFT's flow updates per pair, as VBench runs it.
RAFT_ITERS = 20
#: RAFT needs sides that are multiples of 8: VBench pads centred ("sintel" mode), repeating the edge pixels.
RAFT_MULTIPLE = 8
#: torchvision's RAFT pools its correlation volume 3 times and refuses padded frames under 128 px a side.
RAFT_MIN_SIDE = 128


def sintel_padding(height: int, width: int) -> list[int]:
    """``F.pad``'s (left, right, top, bottom) that centre a frame in the next multiple of 8."""
    pad_h = -height % RAFT_MULTIPLE
    pad_w = -width % RAFT_MULTIPLE
    return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]


class DynamicDegree:
    """RAFT on one device: ``measure`` is 1.0 when enough sampled pairs move, with each pair's flow in ``curves``."""

    name = "dynamic"
    needs_image = False

    def __init__(self, model, device: str):
        import torch

        self.model = model
        self.device = torch.device(device)

    def _as_input(self, frame: np.ndarray):
        """A (H, W, 3) uint8 frame as RAFT's padded (1, 3, H', W') input in [-1, 1]."""
        import torch
        import torch.nn.functional as F

        pixels = torch.tensor(frame).permute(2, 0, 1).float()[None].to(self.device)
        padded = F.pad(pixels, sintel_padding(frame.shape[0], frame.shape[1]), mode="replicate")
        return 2 * (padded / 255.0) - 1.0

    def pair_magnitude(self, first: np.ndarray, second: np.ndarray) -> float:
        """Mean of the largest 5 % flow magnitudes from ``first`` to ``second``, over the padded frame."""
        import torch

        with torch.no_grad():
            flow = self.model(self._as_input(first), self._as_input(second), num_flow_updates=RAFT_ITERS)[-1]
        return top_flow_magnitude(flow[0].permute(1, 2, 0).cpu().numpy())

    def measure(self, video: Video) -> MetricValue:
        """Frames every ``dynamic_interval(fps)``; a video with a single sampled frame has no pair and does not move,
        as in VBench."""
        if min(video.height, video.width) + RAFT_MULTIPLE - 1 < RAFT_MIN_SIDE:
            raise UsageError(f"dynamic degree cannot measure {video.path}: its {video.width}x{video.height} frames "
                             f"are under RAFT's {RAFT_MIN_SIDE - RAFT_MULTIPLE + 1} px a side; score larger videos")
        sampled = video.frames[::dynamic_interval(video.fps)]
        magnitudes = [self.pair_magnitude(a, b) for a, b in zip(sampled[:-1], sampled[1:])]
        moving = bool(magnitudes) and is_dynamic(magnitudes, len(sampled), video.height, video.width)
        return MetricValue(1.0 if moving else 0.0, {"flow_top5": magnitudes})


def load(device: str, weights_dir: Path | None) -> DynamicDegree:
    """torchvision's ``raft_large`` with the state dict in ``raft_large_C_T_V1-22a6c225.pth`` on ``device``."""
    path = locate(WEIGHTS[0], weights_dir)
    import torch
    from torchvision.models.optical_flow import raft_large

    model = raft_large(weights=None, progress=False)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return DynamicDegree(model.to(device).eval(), device)
