"""A toy causal video decoder with the ``wan_accel_kernels.vae.chunked_decode.CausalFrameDecoder`` interface, for unit tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wan_accel_kernels.vae.chunked_decode import one_frame_at_a_time


class ToyCausalDecoder:
    """A causal temporal conv (kernel 3, cache of two frames) then 2x nearest upsampling, in float64."""

    def __init__(self, channels: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64, gain: float = 1.0,
                 schedule=one_frame_at_a_time):
        generator = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.projection = torch.randn(channels, channels, generator=generator, dtype=torch.float64).to(dtype)
        self.weight = (torch.randn(3, channels, 3, 1, 1, generator=generator, dtype=torch.float64) * gain).to(dtype)
        self.steps = 0
        self.schedule = schedule

    def prepare(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bcthw->bothw", self.projection, latent.to(self.dtype))

    def new_cache(self) -> list:
        return [None]

    def decode_step(self, frames: torch.Tensor, cache: list) -> torch.Tensor:
        self.steps += 1
        history = cache[0] if cache[0] is not None else torch.zeros_like(frames[:, :, :1]).repeat(1, 1, 2, 1, 1)
        window = torch.cat([history, frames], dim=2)
        cache[0] = window[:, :, -2:].clone()
        return self._upsample(F.conv3d(window, self.weight))

    def full(self, latent: torch.Tensor) -> torch.Tensor:
        """The whole video at once: the reference the streamed decode must equal."""
        x = F.pad(self.prepare(latent), (0, 0, 0, 0, 2, 0))
        return self._upsample(F.conv3d(x, self.weight))

    @staticmethod
    def _upsample(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
