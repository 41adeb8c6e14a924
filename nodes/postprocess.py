"""Node "Texture & Colour Enhance": skin-aware detail, grain, colour and anti-flicker post-process for video frames."""
from __future__ import annotations

import time

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..wan_accel_kernels.postprocess import (DEFAULT_CHUNK_FRAMES, DEVICE_CHOICES, GRAIN_MODES, EnhanceParams,
                                   compute_device_for, enhance_video_with_mask)
from .input_checks import first_problem, float_problem, int_problem
from .stats import NodeStats, report_node_stats

NODE_ID = "WanAccelTextureColourEnhance"
_DEFAULTS = EnhanceParams()


def _float(name: str, low: float, high: float, step: float, tooltip: str) -> io.Float.Input:
    """Float widget for the EnhanceParams field ``name``, defaulting to the field's default."""
    return io.Float.Input(name, default=getattr(_DEFAULTS, name), min=low, max=high, step=step, tooltip=tooltip)


def _int(name: str, low: int, high: int, tooltip: str, step: int = 1) -> io.Int.Input:
    """Int widget for the EnhanceParams field ``name``, defaulting to the field's default."""
    return io.Int.Input(name, default=getattr(_DEFAULTS, name), min=low, max=high, step=step, tooltip=tooltip)


def _cross_field_problem(cr_min: int | None, cr_max: int | None, cb_min: int | None, cb_max: int | None,
                         mask_morph_size: int | None) -> str | None:
    """Why the skin thresholds or the mask clean-up size contradict each other, or None (links are not checked)."""
    for channel, low, high in (("cr", cr_min, cr_max), ("cb", cb_min, cb_max)):
        if low is not None and high is not None and low > high:
            return (f"{channel}_min {low} is above {channel}_max {high}: no colour would count as skin; "
                    f"make {channel}_min <= {channel}_max")
    if mask_morph_size is not None and mask_morph_size % 2 == 0:
        return f"mask_morph_size {mask_morph_size} is even; give an odd size (1 = no clean-up)"
    return None


class TextureColourEnhance(io.ComfyNode):
    """Post-processes generated video the way the ACM MM 2025 I2V winner did: skin texture, grain, colour, deflicker."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Texture & Colour Enhance",
            category="wan-accel/postprocess",
            description="Finds skin with YCrCb thresholds, boosts fine detail (mostly on skin), adds soft seeded grain "
                        "on skin mid-tones, adjusts saturation and contrast, and smooths flicker with a Gaussian "
                        "across frames that backs off where things move. Runs a chunk of frames at a time on the "
                        "GPU when there is one (device auto), returning the frames where they came from. The second "
                        "output previews the skin mask.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames (a batch of images), e.g. the VAE-decoded Wan output."),
                io.Boolean.Input("skin_only", default=_DEFAULTS.skin_only,
                                 tooltip="On: detail boost and grain act only through the skin mask. Off: the "
                                         "*_global values apply outside skin."),
                _float("detail_gain", 0.0, 4.0, 0.01, "Multiplier of fine detail on skin (1.0 = unchanged)."),
                _float("detail_gain_global", 0.0, 4.0, 0.01,
                       "Multiplier of fine detail outside skin (1.0 = unchanged); ignored when skin_only is on."),
                _float("detail_sigma", 0.3, 10.0, 0.1,
                       "Gaussian sigma in pixels separating the smooth base from the detail that gets boosted."),
                _float("grain_strength", 0.0, 0.1, 0.001,
                       "Standard deviation of the grain on skin mid-tones, in 0..1 units (0 = no grain)."),
                _float("grain_strength_global", 0.0, 0.1, 0.001,
                       "Grain standard deviation outside skin; ignored when skin_only is on."),
                _float("grain_sigma", 0.3, 5.0, 0.1, "Gaussian sigma in pixels of the grain's blur (its size)."),
                io.Combo.Input("grain_mode", options=list(GRAIN_MODES), default=_DEFAULTS.grain_mode,
                               tooltip="temporal_coherent: a static grain field blended with a per-frame one, so "
                                       "grain does not flicker; per_frame: new grain every frame."),
                _float("grain_coherence", 0.0, 1.0, 0.01,
                       "Share of the static field in temporal_coherent grain (1 = frozen grain, 0 = per-frame)."),
                _int("seed", 0, 2**63 - 1, "Seed of the grain noise; the same seed gives the same output."),
                _float("saturation", 0.0, 2.0, 0.01, "Saturation about the luma (1.0 = unchanged)."),
                _float("contrast", 0.0, 2.0, 0.01, "Contrast about mid-grey (1.0 = unchanged)."),
                _float("temporal_sigma", 0.0, 5.0, 0.1,
                       "Gaussian sigma in frames of the anti-flicker smoothing (0 = off)."),
                _float("motion_threshold", 0.0, 0.5, 0.001,
                       "Change of blurred luma to a neighbouring frame at which smoothing falls to 1/e; lower "
                       "protects motion more (0 = smooth everywhere)."),
                _int("cr_min", 0, 255, "Lowest Cr (OpenCV 8-bit YCrCb) counted as skin."),
                _int("cr_max", 0, 255, "Highest Cr counted as skin."),
                _int("cb_min", 0, 255, "Lowest Cb counted as skin."),
                _int("cb_max", 0, 255, "Highest Cb counted as skin."),
                _int("mask_morph_size", 1, 31, "Odd square size in pixels of the mask's open/close clean-up "
                                               "(1 = none).", step=2),
                _float("mask_feather_sigma", 0.3, 20.0, 0.1, "Gaussian sigma in pixels feathering the mask's edge."),
                io.Int.Input("chunk_frames", default=DEFAULT_CHUNK_FRAMES, min=1, max=1024,
                             tooltip="Frames processed at once; lower uses less memory, the result is the same."),
                io.Combo.Input("device", options=list(DEVICE_CHOICES), default=DEVICE_CHOICES[0], optional=True,
                               tooltip="auto: process on the host's GPU (frames move there a chunk at a time and "
                                       "come back), or where the frames are when there is no GPU; cpu: always on "
                                       "the CPU."),
            ],
            outputs=[
                io.Image.Output("enhanced", tooltip="The enhanced frames."),
                io.Mask.Output("skin_mask", tooltip="The feathered skin mask per frame (1 = skin)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, detail_gain: float | None = None, detail_gain_global: float | None = None,
                        detail_sigma: float | None = None, grain_strength: float | None = None,
                        grain_strength_global: float | None = None, grain_sigma: float | None = None,
                        grain_coherence: float | None = None, saturation: float | None = None,
                        contrast: float | None = None, temporal_sigma: float | None = None,
                        motion_threshold: float | None = None, mask_feather_sigma: float | None = None,
                        cr_min: int | None = None, cr_max: int | None = None, cb_min: int | None = None,
                        cb_max: int | None = None, mask_morph_size: int | None = None) -> bool | str:
        """Refuses, at queue time, a NaN, infinite or out-of-range float (NaN saturation made black frames), and
        the cross-field mistakes EnhanceParams would only raise after everything upstream ran."""
        values = dict(locals())
        del values["cls"]
        ints = {name: values.pop(name) for name in ("cr_min", "cr_max", "cb_min", "cb_max", "mask_morph_size")}
        schema = cls.define_schema()
        return first_problem(float_problem(schema, values), int_problem(schema, ints), _cross_field_problem(**ints))

    @classmethod
    def execute(cls, images: torch.Tensor, chunk_frames: int, device: str = DEVICE_CHOICES[0],
                **params) -> io.NodeOutput:
        progress = comfy.utils.ProgressBar(max(1, images.shape[0]))
        started = time.perf_counter()
        compute = compute_device_for(device, images.device, comfy.model_management.get_torch_device())
        enhanced, mask = enhance_video_with_mask(
            images, EnhanceParams(**params), chunk_frames=chunk_frames, compute_device=compute,
            on_chunk=lambda done, total: progress.update_absolute(done, total),
        )
        frames, height, width = images.shape[:3]
        where = compute.type if compute == images.device else f"{compute.type} (frames from {images.device.type})"
        report_node_stats(NODE_ID, NodeStats(
            seconds_per_frame=(time.perf_counter() - started) / max(frames, 1),
            notes=(f"{frames} frames {width}×{height} on {where}",)))
        return io.NodeOutput(enhanced, mask)
