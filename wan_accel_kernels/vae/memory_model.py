"""Peak device memory of a frame-by-frame causal VAE decode, from measured per-step activation sizes.

A decode step of a causal video VAE holds the causal cache (two frames per causal conv, at every stage's
resolution) and the activations of one latent frame's worth of output frames. Both grow with the output pixels
per frame and not with the number of frames, so the peak is ``weights + fixed + a * H * W`` elements of the
compute dtype, plus the single-head attention scores of the middle block (``(h * w) ** 2`` at latent resolution;
kept in the estimate although PyTorch's fused attention on a GPU does not materialise them). ``a`` and ``fixed``
are fitted to steps measured at small sizes (:func:`measure_step_peaks`); the Wan 2.1 values are stored in
:data:`WAN21_DECODE` and :data:`WAN21_DECODE_STREAMED`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .chunked_decode import CausalFrameDecoder
from ..memory_probe import LiveTensorBytes


@dataclass(frozen=True)
class DecodeMemoryModel:
    """Device elements held by one decode step: ``fixed + per_pixel * H * W`` plus ``score_matrices`` attention score
    matrices of ``(H * W / spatial_scale**2) ** 2`` elements, times the dtype size."""

    per_pixel: float
    fixed: float
    spatial_scale: int = 8
    score_matrices: int = 1

    def activation_bytes(self, height: int, width: int, dtype_bytes: int) -> float:
        """Activation and cache bytes of the largest decode step for output frames of ``height`` x ``width``."""
        tokens = (height // self.spatial_scale) * (width // self.spatial_scale)
        return (self.fixed + self.per_pixel * height * width + self.score_matrices * tokens * tokens) * dtype_bytes

    def peak_bytes(self, height: int, width: int, dtype_bytes: int, weight_bytes: int) -> float:
        """Peak device bytes of the exact frame-by-frame decode: weights plus the largest step."""
        return weight_bytes + self.activation_bytes(height, width, dtype_bytes)

    def scaled(self, factor: float) -> "DecodeMemoryModel":
        """The same model with every term multiplied by ``factor`` (a device's safety margin)."""
        return replace(self, per_pixel=self.per_pixel * factor, fixed=self.fixed * factor,
                       score_matrices=self.score_matrices * factor)

    def largest_tile(self, budget_bytes: float, dtype_bytes: int, minimum: int = 32) -> int | None:
        """Side in output pixels (``minimum`` plus a multiple of 4 latent pixels) of the largest square tile whose step
        fits ``budget_bytes``; None if not even ``minimum`` fits."""
        step = 4 * self.spatial_scale
        side = minimum
        if self.activation_bytes(side, side, dtype_bytes) > budget_bytes:
            return None
        while self.activation_bytes(side + step, side + step, dtype_bytes) <= budget_bytes:
            side += step
        return side


def measure_step_peaks(decoder: CausalFrameDecoder, latent: torch.Tensor) -> list[int]:
    """Peak live bytes (cache + activations + that step's pixels) of every step of a frame-by-frame decode."""
    peaks = []
    with LiveTensorBytes() as live:
        prepared = decoder.prepare(latent)
        cache = decoder.new_cache()
        for start, stop in decoder.schedule(prepared.shape[2]):
            live.reset_peak()
            pixels = decoder.decode_step(prepared[:, :, start:stop], cache)
            del pixels
            peaks.append(live.peak)
    return peaks


def fit_decode_model(samples: Sequence[tuple[int, int, float]], spatial_scale: int = 8,
                     score_matrices: int = 1) -> DecodeMemoryModel:
    """Least-squares ``fixed + per_pixel * H * W`` through ``(height, width, elements)`` samples, after removing the
    attention-score term the model adds back."""
    xs, ys = [], []
    for height, width, elements in samples:
        tokens = (height // spatial_scale) * (width // spatial_scale)
        xs.append(float(height * width))
        ys.append(elements - score_matrices * tokens * tokens)
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("fit_decode_model needs samples at two or more output sizes")
    per_pixel = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return DecodeMemoryModel(per_pixel=per_pixel, fixed=mean_y - per_pixel * mean_x, spatial_scale=spatial_scale,
                             score_matrices=score_matrices)


def relative_fit_error(model: DecodeMemoryModel, samples: Sequence[tuple[int, int, float]]) -> float:
    """Largest ``|model - measured| / measured`` over ``(height, width, elements)`` samples."""
    return max(math.fabs(model.activation_bytes(h, w, 1) - e) / e for h, w, e in samples)


#: The host's Wan 2.1 VAE (dim 96): fit of the steady-state step (the third latent frame on; the cache is then full)
#: measured with :class:`LiveTensorBytes` at 16x16, 32x32, 32x64 and 64x64 output pixels in bf16 and fp32 (same
#: element counts), largest misfit 1.0 % (also at 48x80). Re-measured by ``python -m benchmarks.vae --memory`` and
#: checked by ``tests/host/test_host_vae.py``.
WAN21_DECODE = DecodeMemoryModel(per_pixel=4312.0, fixed=43496.0)

#: The same VAE in hosts whose decoder takes the first latent frame, then two at a time, and streams its upsampling
#: as chunks (ComfyUI 0.33): fit of the largest step measured the same way at 16x16, 32x32, 32x64 and 64x64 px,
#: largest misfit 0.05 % (also at 48x80).
WAN21_DECODE_STREAMED = DecodeMemoryModel(per_pixel=3402.0, fixed=693.0)

#: Device bytes on CUDA over the CPU-fitted live bytes: the fits count tensors alive at once, not the CUDA caching
#: allocator's fragmentation and cuDNN workspaces. The host budgets its own Wan VAE decode at 7000 elements per
#: output pixel; 1.6 lifts our 4312 to that level. Applied on CUDA only.
CUDA_SAFETY_FACTOR = 1.6
