"""Projected throughput of Wan 2.2 I2V A14B on two RTX 4090s: the pipelined split (GPU A keeps the high-noise expert,
GPU B the low-noise one) against data parallelism (each GPU runs whole videos and swaps experts).

Data parallel: each GPU runs every step of a video plus the VAE, and swaps experts twice a video (high to low inside
it, low to high for the next one); two GPUs give 2 / that time. Pipelined: no swap; the batch moves at the pace of
the slower stage (A: the high-noise steps; B: the low-noise steps, the latent's transfer and the VAE). The switch is
``projection_4090.expert_switch`` of one expert's Q6_K bytes (PCIe 4.0 x16, pinned to pageable); step, VAE and
transfer seconds are inputs. A projection, never a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmarks.lib import projection_4090
from benchmarks.lib.wan22_expert import expert_q6_k_bytes

LABEL = "PROJECTION for two RTX 4090s (not a measurement)"
SWITCHES_PER_VIDEO = 2


@dataclass(frozen=True)
class SplitProjection:
    """Videos per minute of both layouts at one switch cost (seconds)."""

    switch_s: float
    data_parallel_per_min: float
    pipelined_per_min: float

    @property
    def ratio(self) -> float:
        return self.pipelined_per_min / self.data_parallel_per_min


def project(step_s: float, steps_high: int, steps_low: int, vae_s: float, transfer_s: float,
            switch_s: float) -> SplitProjection:
    """Both layouts' videos per minute on two GPUs at ``step_s`` per expert step and ``switch_s`` per switch."""
    whole = (steps_high + steps_low) * step_s + vae_s + SWITCHES_PER_VIDEO * switch_s
    slower_stage = max(steps_high * step_s, steps_low * step_s + transfer_s + vae_s)
    return SplitProjection(switch_s, 2 * 60.0 / whole, 60.0 / slower_stage)


def switch_range() -> projection_4090.Range:
    """One expert switch on a 4090 (fast end pinned RAM, slow end pageable)."""
    return projection_4090.expert_switch(expert_q6_k_bytes())
