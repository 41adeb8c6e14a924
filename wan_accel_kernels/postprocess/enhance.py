"""Texture and colour enhancement of a whole video, chunked over frames with a temporal halo."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .colour import luma, offset_and_colour
from .filters import gaussian_blur
from .grain import GrainSource
from .params import EnhanceParams, resolve_params
from .skin_mask import skin_mask
from .temporal import motion_weight, temporal_matrix, temporal_radius, window_indices

# 6 planar float RGB frames of 832x480 (29 MB) stay under glibc's 32 MiB mmap ceiling, so freed memory is reused
# instead of mapped afresh; measured faster on CPU than 8 or 16.
DEFAULT_CHUNK_FRAMES = 6


@dataclass
class _Segment:
    """Per-frame results of the consecutive frames ``first .. stop - 1``."""

    first: int
    rgb: torch.Tensor  # [n, 3, H, W] enhanced, not yet smoothed or clamped
    base: torch.Tensor  # [n, H, W] blurred input luma: the motion estimate's signal
    mask: torch.Tensor  # [n, H, W] feathered skin mask

    @property
    def stop(self) -> int:
        """One past the last frame held."""
        return self.first + self.rgb.shape[0]


def _planar_clean_rgb(frames: torch.Tensor) -> torch.Tensor:
    """Float32 planar [N, 3, H, W] copy of the RGB of ``frames`` [N, H, W, C], NaN -> 0, clamped to [0, 1]."""
    count, height, width, _ = frames.shape
    planar = torch.empty((count, 3, height, width), dtype=torch.float32, device=frames.device)
    torch.clamp(frames[..., :3].permute(0, 3, 1, 2).to(torch.float32), 0.0, 1.0, out=planar)
    return planar.nan_to_num_(nan=0.0)


def _mask_weighted(mask: torch.Tensor, on_skin: float, elsewhere: float) -> torch.Tensor:
    """Per-pixel value ``on_skin`` where the mask is 1 and ``elsewhere`` where it is 0, linear in between."""
    return mask.mul(on_skin - elsewhere).add_(elsewhere)


def _enhance_frames(rgb: torch.Tensor, indices: Sequence[int], p: EnhanceParams,
                    grain: GrainSource | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detail, grain and colour of clean planar ``rgb`` [n,3,H,W] (frames ``indices``) -> (rgb, blurred luma, mask)."""
    y = luma(rgb)
    mask = skin_mask(rgb, (p.cr_min, p.cr_max), (p.cb_min, p.cb_max), p.mask_morph_size, p.mask_feather_sigma)
    base = gaussian_blur(y, p.detail_sigma)
    extra_gain = _mask_weighted(mask, p.detail_gain - 1.0, 0.0 if p.skin_only else p.detail_gain_global - 1.0)
    offset = extra_gain.mul_(y - base)
    if grain is not None:
        amplitude = _mask_weighted(mask, p.grain_strength, p.grain_elsewhere)
        amplitude.mul_(y.mul(1.0 - y).mul_(4.0))  # strongest in mid-tones, none in black or white
        offset.addcmul_(amplitude, grain.fields(indices))
    return offset_and_colour(rgb, y, offset, p.saturation, p.contrast), base, mask


def _gather(segments: list[_Segment], field: str, indices: list[int]) -> torch.Tensor:
    """``field`` ("rgb", "base" or "mask") of absolute frames ``indices`` in order, one slice per consecutive run."""
    pieces, run_start = [], 0
    for k in range(1, len(indices) + 1):
        if k < len(indices) and indices[k] == indices[k - 1] + 1:
            continue
        first, last = indices[run_start], indices[k - 1]
        while first <= last:
            segment = next(s for s in segments if s.first <= first < s.stop)
            stop = min(last + 1, segment.stop)
            pieces.append(getattr(segment, field)[first - segment.first : stop - segment.first])
            first = stop
        run_start = k
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _smooth_chunk(segments: list[_Segment], start: int, stop: int, window: list[int], p: EnhanceParams,
                  radius: int) -> torch.Tensor:
    """Temporally smoothed, motion-gated planar RGB [stop - start, 3, H, W] of a chunk: one GEMM per segment."""
    count = stop - start
    weights = temporal_matrix(count, window, p.temporal_sigma, radius, segments[-1].stop).to(segments[0].rgb.device)
    smooth = None
    for segment in segments:
        used = [i for i in set(window) if segment.first <= i < segment.stop]
        if not used:
            continue
        lo, hi = min(used), max(used) + 1
        part = weights[:, lo:hi] @ segment.rgb[lo - segment.first : hi - segment.first].reshape(hi - lo, -1)
        smooth = part if smooth is None else smooth.add_(part)
    smooth = smooth.view(count, *segments[0].rgb.shape[1:])
    if p.motion_threshold > 0:
        gate = motion_weight(_gather(segments, "base", window[radius - 1 : radius + count + 1]), p.motion_threshold)
        for segment in segments:  # blend with each segment's own frames: no copy of the chunk
            lo, hi = max(start, segment.first), min(stop, segment.stop)
            if lo < hi:
                part = smooth[lo - start : hi - start]
                own = segment.rgb[lo - segment.first : hi - segment.first]
                torch.lerp(own, part, gate[lo - start : hi - start].unsqueeze(1), out=part)
    return smooth


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: the one place frames move between their home and the compute device."""
    return tensor.to(device)


def _write_rgb(target: torch.Tensor, planar: torch.Tensor, moving: bool) -> None:
    """Clamps planar float32 [n,3,H,W] (may clamp it in place) into the channels-last view ``target`` [n,H,W,3];
    ``moving``: the target lives on the frames' home device, not the compute device."""
    if target.dtype == torch.float32 and not moving:
        torch.clamp(planar.permute(0, 2, 3, 1), 0.0, 1.0, out=target)
    else:
        target.copy_(_to(planar.clamp_(0.0, 1.0), target.device).permute(0, 2, 3, 1))


def enhance_video_with_mask(frames: torch.Tensor, params: EnhanceParams | None = None, *,
                            chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                            on_chunk: Callable[[int, int], None] | None = None,
                            compute_device: torch.device | str | None = None,
                            **overrides: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Enhanced ``frames`` [B,H,W,C] (same dtype and device, alpha kept) and the skin mask [B,H,W] float32.

    Frames are processed ``chunk_frames`` at a time; each frame's per-frame work is done once and kept while the
    temporal halo of later chunks needs it, so memory stays bounded and the result equals the unchunked one.
    With ``compute_device`` (default: the frames' device) each chunk moves there, is processed there and its
    results come back to the frames' device, so only a chunk and its halo occupy the compute device.
    ``on_chunk(done, total)`` reports progress after each chunk.
    """
    p = resolve_params(params, overrides)
    if frames.dim() != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"expected frames [B, H, W, 3|4], got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise TypeError(f"expected floating-point frames, got {frames.dtype}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    total, height, width, channels = frames.shape
    compute = frames.device if compute_device is None else torch.device(compute_device)
    moving = compute != frames.device
    masks = torch.empty((total, height, width), dtype=torch.float32, device=frames.device)
    if total == 0:
        return frames, masks
    out = torch.empty_like(frames)
    radius = temporal_radius(p.temporal_sigma, total)
    grain = None
    if p.has_grain:
        grain = GrainSource(p.seed, height, width, p.grain_sigma, p.grain_mode, p.grain_coherence, compute)
    segments: list[_Segment] = []
    computed = 0
    for start in range(0, total, chunk_frames):
        stop = min(total, start + chunk_frames)
        window = window_indices(start, stop, radius, total)
        needed = max(window) + 1
        if needed > computed:
            rgb = _planar_clean_rgb(_to(frames[computed:needed], compute) if moving else frames[computed:needed])
            segments.append(_Segment(computed, *_enhance_frames(rgb, range(computed, needed), p, grain)))
            computed = needed
        segments = [s for s in segments if s.stop > min(window)]
        core = list(range(start, stop))
        if radius > 0:
            _write_rgb(out[start:stop, ..., :3], _smooth_chunk(segments, start, stop, window, p, radius), moving)
        else:  # without a halo no later chunk reads these frames, so clamping them in place is harmless
            _write_rgb(out[start:stop, ..., :3], _gather(segments, "rgb", core), moving)
        if channels == 4:
            out[start:stop, ..., 3] = frames[start:stop, ..., 3]
        mask = _gather(segments, "mask", core)
        masks[start:stop] = _to(mask, masks.device) if moving else mask
        if on_chunk is not None:
            on_chunk(stop, total)
    return out, masks


def enhance_video(frames: torch.Tensor, params: EnhanceParams | None = None, *,
                  chunk_frames: int = DEFAULT_CHUNK_FRAMES, **overrides: Any) -> torch.Tensor:
    """Skin-aware detail boost, grain, saturation/contrast and anti-flicker smoothing of ``frames`` [B,H,W,C]."""
    return enhance_video_with_mask(frames, params, chunk_frames=chunk_frames, **overrides)[0]
