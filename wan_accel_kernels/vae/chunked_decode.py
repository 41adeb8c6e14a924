"""Bounded-memory decode of a causal video VAE: one latent frame per step, the causal cache carried across steps.

The interface (:class:`CausalFrameDecoder`) is what a Wan-style VAE offers: a pointwise projection of the whole
latent, a fresh causal feature cache, the schedule of latent-frame slices its own full decode feeds the decoder
(one frame at a time in older hosts; the first frame, then pairs, in newer ones), and a decoder step that turns
the next slice into pixels while updating that cache in place. Calling the step on the decoder's own schedule
performs the same operations as the VAE's full decode, so the result is bit-identical to it; the difference is
that each step's pixels leave the compute device at once, so the device never holds the whole video, and a step
that overflows (NaN/Inf) stops the decode at once instead of after the last frame.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch


class CausalFrameDecoder(Protocol):
    """A causal video decoder driven frame by frame (the host adapter lives in ``nodes/vae_decode.py``)."""

    def prepare(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent [B, C, T, h, w] on the compute device and dtype, after the per-frame input projection."""

    def new_cache(self) -> list:
        """An empty causal cache for one video."""

    def schedule(self, num_frames: int) -> list[tuple[int, int]]:
        """The ``(start, stop)`` latent-frame slices, in order, that the VAE's own full decode feeds its decoder."""

    def decode_step(self, frames: torch.Tensor, cache: list) -> torch.Tensor:
        """Raw pixels [B, 3, t, H, W] of the next prepared latent frames, updating ``cache`` in place."""


class NonFiniteDecode(FloatingPointError):
    """A decode step produced NaN or Inf (typically fp16 overflow); ``step`` is the latent frame index."""

    def __init__(self, step: int):
        super().__init__(f"the VAE decode produced NaN/Inf at latent frame {step}")
        self.step = step


def one_frame_at_a_time(num_frames: int) -> list[tuple[int, int]]:
    """The schedule of a decoder fed one latent frame per call."""
    return [(step, step + 1) for step in range(num_frames)]


def decode_frame_by_frame(decoder: CausalFrameDecoder, latent: torch.Tensor, *,
                          output_device: torch.device | str = "cpu",
                          postprocess: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                          on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Decodes ``latent`` [B, C, T, h, w] on the decoder's schedule; returns float32 pixels on ``output_device``.

    ``postprocess`` runs on each step's float32 pixels after the finiteness check (e.g. the host's clamp to [0, 1]).
    ``on_step`` gets the first latent frame of each finished step. Raises :class:`NonFiniteDecode` at the first step
    whose raw output is not finite.
    """
    prepared = decoder.prepare(latent)
    cache = decoder.new_cache()
    chunks = []
    for start, stop in decoder.schedule(prepared.shape[2]):
        pixels = decoder.decode_step(prepared[:, :, start:stop], cache)
        if not bool(torch.isfinite(pixels).all()):
            raise NonFiniteDecode(start)
        chunks.append(postprocess(pixels.to(output_device).float()))
        del pixels
        if on_step is not None:
            on_step(start)
    return torch.cat(chunks, dim=2)
