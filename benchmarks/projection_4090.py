"""Projects measured H100/H200 times to an RTX 4090 as a range, each part scaled by what bounds it.

A DiT step is split into: the per-token linears (compute-bound: their measured bf16 time scales by the bf16
tensor-core peak ratio), attention (scaled from the backend's measured TOPS by the peak ratio of the precision it
runs in: bf16 for SDPA, int8 for Sage) and the rest (dequantisation, norms, RoPE, elementwise: memory-bound, scaled
by the bandwidth ratio). The fast end assumes the 4090 reaches the same fraction of its peak as the measured GPU;
the slow end assumes it reaches ``SLOW_END_EFFICIENCY`` of that fraction. The VAE has no measured split, so its
range runs from bandwidth-bound to compute-bound scaling. These are projections, never measurements.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpu_specs import RTX_4090, GPUSpec

SLOW_END_EFFICIENCY = 0.75
VIDEO_STEPS = 8
RTX4090_MEMORY_GIB = 24.0

ASSUMPTIONS = (
    f"{VIDEO_STEPS} steps at cfg 1 (one DiT forward per step); text and CLIP encoders excluded (cached or once)",
    "linears: measured bf16 F.linear time at the DiT's shapes x (this GPU's / the 4090's dense bf16 peak)",
    "attention: measured time of the row's backend at the DiT's shape x the peak ratio of its precision "
    "(bf16 for SDPA, int8 for Sage)",
    "the rest of the step (measured total - linears - attention: dequantisation, norms, RoPE, elementwise): "
    "x the memory-bandwidth ratio",
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


def attention_ratio(spec: GPUSpec, backend: str) -> float:
    """This GPU's peak / the 4090's in the precision ``backend`` computes QK^T in."""
    if backend == "sage":
        return spec.int8_tops / RTX_4090.int8_tops
    return spec.bf16_tflops / RTX_4090.bf16_tflops


def dit_step(spec: GPUSpec, total_s: float, linear_s: float, attention_s: float, backend: str) -> Range:
    """One DiT step on a 4090 from this GPU's measured total, linear and attention seconds of that step."""
    rest = max(total_s - linear_s - attention_s, 0.0)
    return (_span(linear_s, spec.bf16_tflops / RTX_4090.bf16_tflops)
            + _span(attention_s, attention_ratio(spec, backend))
            + _span(rest, spec.bandwidth_tbs / RTX_4090.bandwidth_tbs))


def vae(spec: GPUSpec, seconds: float) -> Range:
    """VAE encode + decode on a 4090: bandwidth-bound to compute-bound scaling of the measured seconds."""
    ratios = sorted((spec.bandwidth_tbs / RTX_4090.bandwidth_tbs, spec.bf16_tflops / RTX_4090.bf16_tflops))
    return Range(seconds * ratios[0], seconds * ratios[1])


def video(step: Range, vae_range: Range | None) -> Range:
    """An 8-step video: ``VIDEO_STEPS`` DiT steps plus the VAE (when it was measured)."""
    total = step.scaled(VIDEO_STEPS)
    return total + vae_range if vae_range is not None else total
