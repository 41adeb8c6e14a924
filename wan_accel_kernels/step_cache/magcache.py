"""MagCache for Wan 2.1: skip a DiT step while the accumulated drift of the residual's magnitude ratio stays small."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .published_mag_ratios import MAGCACHE_RATIOS
from .steps import SkipBookkeeping, StepGate

COND, UNCOND = 0, 1  # the host's cond_or_uncond values


def split_streams(interleaved: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(cond ratios, uncond ratios) of a published table that interleaves them step by step."""
    if len(interleaved) % 2:
        raise ValueError("an interleaved cond/uncond table has an even length")
    return tuple(interleaved[0::2]), tuple(interleaved[1::2])


def resample_ratios(ratios: Sequence[float], steps: int) -> tuple[float, ...]:
    """Per-step magnitude ratios of a ``len(ratios)``-step profile carried over to ``steps`` steps.

    The cumulative magnitude M_k = prod(ratios[1..k]) is interpolated in log space at the same fraction of
    the run, then differenced; the overall drift M_end is preserved (nearest-index lookup, as the reference
    port does, would apply a 50-step ratio to an 8-step jump and underestimate it about sixfold).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if len(ratios) == steps:
        return tuple(float(r) for r in ratios)
    if steps == 1 or len(ratios) == 1:
        return (1.0,) * steps
    log_m = [0.0]
    for r in ratios[1:]:
        log_m.append(log_m[-1] + math.log(max(float(r), 1e-12)))
    span = len(ratios) - 1
    resampled = []
    for i in range(steps):
        position = i * span / (steps - 1)
        low = min(int(position), span - 1)
        resampled.append(log_m[low] + (position - low) * (log_m[low + 1] - log_m[low]))
    return (1.0,) + tuple(math.exp(b - a) for a, b in zip(resampled, resampled[1:]))


def magnitude_ratio(residual: torch.Tensor, previous: torch.Tensor) -> tuple[float, float]:
    """(mean, std) over positions of ||residual|| / ||previous||, norms over the channel dim (dim 1)."""
    ratio = residual.float().norm(dim=1) / previous.float().norm(dim=1).clamp_min(1e-12)
    return float(ratio.mean()), float(ratio.std()) if ratio.numel() > 1 else 0.0


@dataclass
class MagCacheState:
    """Per cond/uncond stream, per run: the ratios it follows and the drift accumulated since the last computed step."""

    ratios: tuple[float, ...]
    accumulated_ratio: float = 1.0
    accumulated_error: float = 0.0
    consecutive_skips: int = 0
    resampled: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def restart(self) -> None:
        """The cache was refreshed: the drift accumulates from 1 again."""
        self.accumulated_ratio = 1.0
        self.accumulated_error = 0.0

    def ratio_at(self, step: int, total_steps: int) -> float:
        """This stream's magnitude ratio of ``step`` in a ``total_steps`` run."""
        if total_steps not in self.resampled:
            self.resampled[total_steps] = resample_ratios(self.ratios, total_steps)
        return self.resampled[total_steps][min(step, total_steps - 1)]


@dataclass(frozen=True)
class MagCachePolicy(SkipBookkeeping):
    """Skips while sum_k |1 - prod(ratio)| since the last computed step stays below ``threshold`` (MagCache).

    ``gate.max_consecutive_skips`` is MagCache's K; the first ``int(retention_ratio * steps)`` steps always run.
    """

    cond_ratios: tuple[float, ...]
    uncond_ratios: tuple[float, ...]
    threshold: float
    retention_ratio: float = 0.2
    gate: StepGate = StepGate()
    name: ClassVar[str] = "MagCache"
    needs_indicator: ClassVar[bool] = False

    @classmethod
    def published(cls, model_type: str, threshold: float, retention_ratio: float = 0.2,
                  gate: StepGate = StepGate()) -> "MagCachePolicy":
        """Policy with the published ratio table ``model_type`` (a key of ``MAGCACHE_RATIOS``)."""
        if model_type not in MAGCACHE_RATIOS:
            raise ValueError(f"unknown MagCache model_type {model_type!r}; use one of {sorted(MAGCACHE_RATIOS)}")
        cond, uncond = split_streams(MAGCACHE_RATIOS[model_type])
        return cls(cond, uncond, threshold, retention_ratio, gate)

    def new_state(self, stream: int) -> MagCacheState:
        """Fresh state for the cond (0) or uncond (1) stream at the start of a run."""
        return MagCacheState(self.uncond_ratios if stream == UNCOND else self.cond_ratios)

    def wants_skip(self, state: MagCacheState, step: int, total_steps: int, indicator: torch.Tensor | None) -> bool:
        """Accumulates this step's magnitude drift and says whether the cached residual may be reused."""
        state.accumulated_ratio *= state.ratio_at(step, total_steps)
        state.accumulated_error += abs(1.0 - state.accumulated_ratio)
        retained = step < int(self.retention_ratio * total_steps)
        return (not retained and self.gate.allows_skip(step, total_steps, state.consecutive_skips)
                and state.accumulated_error < self.threshold)
