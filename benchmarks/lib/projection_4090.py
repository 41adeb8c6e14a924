"""Projects measured H100/H200 times to an RTX 4090 as a range, each part scaled by what bounds it.

A DiT step is split into: the per-token linears (compute-bound: each configuration's own measured matmul time in
the arithmetic it multiplies in, bf16, int8 or fp8, scaled by that arithmetic's tensor-core peak ratio), attention
(the backend's measured time scaled by the peak ratio of the precision it runs in: bf16 for SDPA, int8 for Sage)
and the rest (dequantisation, activation quantisation, norms, RoPE, elementwise: memory-bound, scaled by the
bandwidth ratio). A rest below zero means the parts were measured inconsistently and is an error, never a zero.
The fast end assumes the 4090 reaches the same fraction of its peak as the measured GPU; the slow end assumes it
reaches ``SLOW_END_EFFICIENCY`` of that fraction. The VAE has no measured split, so its range runs from
bandwidth-bound to compute-bound scaling. These are projections, never measurements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from benchmarks.lib.gpu_specs import RTX_4090, GPUSpec

SLOW_END_EFFICIENCY = 0.75
PCIE4_X16_PINNED_GBS = 25.0     # a 4090's host-to-device copy from pinned RAM (PCIe 4.0 x16, about 80% of 31.5 GB/s)
PCIE4_X16_PAGEABLE_GBS = 12.5   # from pageable RAM: the driver stages through a pinned buffer, about half
VIDEO_STEPS = 8
RTX4090_MEMORY_GIB = 24.0
ARITHMETICS = ("bf16", "int8", "fp8")
LABEL = "a projection from datasheet ratios, not a 4090 measurement"

ASSUMPTIONS = (
    f"{VIDEO_STEPS} steps at cfg 1 (one DiT forward per step); text and CLIP encoders excluded (cached or once)",
    "linears: each configuration's own measured per-token matmul time at the DiT's shapes, in its arithmetic "
    "(bf16 F.linear for bf16 and GGUF rows, the int8 or fp8 matmul alone for W8A8 rows) x (this GPU's / the "
    "4090's dense tensor-core peak in that arithmetic)",
    "attention: measured time of the row's backend at the DiT's shape x the peak ratio of its precision "
    "(bf16 for SDPA, int8 for Sage)",
    "the rest of the step (measured total - linears - attention: dequantisation, W8A8 activation quantisation, "
    "norms, RoPE, elementwise): x the memory-bandwidth ratio; a negative rest is an error, not a zero",
    f"fast end: the 4090 reaches the same fraction of its peak as this GPU; slow end: {SLOW_END_EFFICIENCY:.0%} of it",
    "VAE encode + decode: from bandwidth-bound (bandwidth ratio) to compute-bound (bf16 peak ratio) scaling",
    f"rows whose peak memory exceeds {RTX4090_MEMORY_GIB:.0f} GiB would need offloading on a 24 GB card "
    "(not modelled)",
)


@dataclass(frozen=True)
class Range:
    """A projected time in seconds, fast and slow end."""

    fast: float
    slow: float

    def __add__(self, other: "Range") -> "Range":
        return Range(self.fast + other.fast, self.slow + other.slow)

    def scaled(self, factor: float) -> "Range":
        return Range(self.fast * factor, self.slow * factor)

    def describe(self) -> str:
        return f"{self.fast:.0f}-{self.slow:.0f} s"


def _span(seconds: float, ratio: float) -> Range:
    return Range(seconds * ratio, seconds * ratio / SLOW_END_EFFICIENCY)


def peak(spec: GPUSpec, arithmetic: str) -> float:
    """``spec``'s dense tensor-core peak (TFLOPS / TOPS) in ``arithmetic``: "bf16", "int8" or "fp8"."""
    peaks = {"bf16": spec.bf16_tflops, "int8": spec.int8_tops, "fp8": spec.fp8_tflops}
    if arithmetic not in peaks:
        raise ValueError(f"benchmarks/lib/projection_4090.py: no tensor-core peak for {arithmetic!r}; "
                         f"use one of {ARITHMETICS}")
    return peaks[arithmetic]


def peak_ratio(spec: GPUSpec, arithmetic: str) -> float:
    """This GPU's peak / the 4090's, both in ``arithmetic``."""
    return peak(spec, arithmetic) / peak(RTX_4090, arithmetic)


def attention_ratio(spec: GPUSpec, backend: str) -> float:
    """This GPU's peak / the 4090's in the precision ``backend`` computes QK^T in."""
    return peak_ratio(spec, "int8" if backend == "sage" else "bf16")


def dit_step(spec: GPUSpec, configuration: str, total_s: float, linear_s: float, arithmetic: str,
             attention_s: float, backend: str) -> Range:
    """One DiT step of ``configuration`` on a 4090 from this GPU's measured seconds of that step: in total, in its
    per-token matmuls (``arithmetic``) and in attention (``backend``). A ValueError when those parts exceed the
    total."""
    rest = total_s - linear_s - attention_s
    if rest < 0:
        raise ValueError(f"benchmarks/lib/projection_4090.py: {configuration}: its {arithmetic} linears "
                         f"({linear_s:.4g} s) + {backend} attention ({attention_s:.4g} s) exceed its measured step "
                         f"({total_s:.4g} s) by {-rest:.4g} s; the parts were measured under other conditions than "
                         "the step: rerun the linears and attention sections in the same run as the DiT before "
                         "projecting")
    return (_span(linear_s, peak_ratio(spec, arithmetic)) + _span(attention_s, attention_ratio(spec, backend))
            + _span(rest, spec.bandwidth_tbs / RTX_4090.bandwidth_tbs))


def vae(spec: GPUSpec, seconds: float) -> Range:
    """VAE encode + decode on a 4090: bandwidth-bound to compute-bound scaling of the measured seconds."""
    ratios = sorted((spec.bandwidth_tbs / RTX_4090.bandwidth_tbs, spec.bf16_tflops / RTX_4090.bf16_tflops))
    return Range(seconds * ratios[0], seconds * ratios[1])


def video(step: Range, vae_range: Optional[Range]) -> Range:
    """An 8-step video: ``VIDEO_STEPS`` DiT steps plus the VAE (when it was measured)."""
    total = step.scaled(VIDEO_STEPS)
    return total + vae_range if vae_range is not None else total


def expert_switch(bytes_moved: int) -> Range:
    """One Wan 2.2 expert switch on a 4090 (a term of its own in a Wan 2.2 video): the next expert's bytes over PCIe
    4.0 x16, from pinned RAM (fast end) to pageable RAM (slow end); nothing of it overlaps compute."""
    return Range(bytes_moved / (PCIE4_X16_PINNED_GBS * 1e9), bytes_moved / (PCIE4_X16_PAGEABLE_GBS * 1e9))


def wan22_video(step_high: Range, step_low: Range, steps_high: int, steps_low: int, switch: Range,
                vae_range: Optional[Range]) -> Range:
    """A Wan 2.2 video: each expert's steps, plus one switch, plus the VAE (when it was measured)."""
    total = step_high.scaled(steps_high) + step_low.scaled(steps_low) + switch
    return total + vae_range if vae_range is not None else total


def project_row(spec: GPUSpec, dit: dict, linear_s: float, attention_s: float, vae_range: Optional[Range]) -> dict:
    """The projection row of one measured DiT row (keys ``configuration``, ``s_per_step``, ``arithmetic``,
    ``attention``, ``peak_gib``, ``model``): the measured inputs, then the projected step and video ranges."""
    step = dit_step(spec, dit["configuration"], dit["s_per_step"], linear_s, dit["arithmetic"], attention_s,
                    dit["attention"])
    clip = video(step, vae_range)
    peak_gib = dit["peak_gib"]
    return {"configuration": dit["configuration"], "arithmetic": dit["arithmetic"],
            "measured_s_per_step": dit["s_per_step"], "measured_linear_s": linear_s,
            "measured_attention_s": attention_s, "projected_4090_step_fast_s": step.fast,
            "projected_4090_step_slow_s": step.slow, "projected_4090_video_fast_s": clip.fast,
            "projected_4090_video_slow_s": clip.slow,
            "fits_24_gib": None if peak_gib is None or math.isnan(peak_gib) else
            dit["model"] != "bf16" and peak_gib <= RTX4090_MEMORY_GIB}
