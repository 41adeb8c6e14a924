"""TeaCache for Wan 2.1: skip a DiT step while the accumulated, rescaled change of the timestep embedding is small."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from .steps import SkipBookkeeping, StepGate

# Published TeaCache polynomials for Wan 2.1 (highest power first), mapping the relative L1 change of the
# timestep embedding to the relative L1 change of the model output. Source: the TeaCache authors' ComfyUI
# port, github.com/welltop-cn/ComfyUI-TeaCache, nodes.py, SUPPORTED_MODELS_COEFFICIENTS (commit 91dff8e),
# the same values as TeaCache4Wan2.1 in github.com/ali-vilab/TeaCache. They were fitted on 40-50 step
# schedules. "_ret_mode" sets use the 6-way modulation (time_projection output) as the indicator.
TEACACHE_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "wan2.1_t2v_1.3B": (2.39676752e+03, -1.31110545e+03, 2.01331979e+02, -8.29855975e+00, 1.37887774e-01),
    "wan2.1_t2v_14B": (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    "wan2.1_i2v_480p_14B": (-3.02331670e+02, 2.23948934e+02, -5.25463970e+01, 5.87348440e+00, -2.01973289e-01),
    "wan2.1_i2v_720p_14B": (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
    "wan2.1_t2v_1.3B_ret_mode": (-5.21862437e+04, 9.23041404e+03, -5.28275948e+02, 1.36987616e+01, -4.99875664e-02),
    "wan2.1_t2v_14B_ret_mode": (-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01),
    "wan2.1_i2v_480p_14B_ret_mode": (2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01),
    "wan2.1_i2v_720p_14B_ret_mode": (8.10705460e+03, 2.13393892e+03, -3.72934672e+02, 1.66203073e+01, -4.17769401e-02),
}

INDICATOR_EMBEDDING = "timestep_embedding"    # time_embedding(sinusoid(t)): TeaCache's normal mode
INDICATOR_MODULATION = "timestep_modulation"  # time_projection(...): TeaCache's retention ("ret") mode


def indicator_of(model_type: str) -> str:
    """The indicator a coefficient set was fitted on: the modulation for "_ret_mode" sets, else the embedding."""
    return INDICATOR_MODULATION if model_type.endswith("_ret_mode") else INDICATOR_EMBEDDING


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous|: TeaCache's distance between two indicators."""
    previous = previous.float()
    return float((current.float() - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12))


def polynomial(coefficients: Sequence[float], x: float) -> float:
    """Value at ``x`` of the polynomial with ``coefficients`` (highest power first), by Horner's rule."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


@dataclass
class TeaCacheState:
    """Per cond/uncond stream, per run: the last indicator, the distance accumulated since the last computed step."""

    previous_indicator: torch.Tensor | None = None
    accumulated: float = 0.0
    consecutive_skips: int = 0

    def restart(self) -> None:
        """The cache was refreshed: the distance accumulates from 0 again."""
        self.accumulated = 0.0


@dataclass(frozen=True)
class TeaCachePolicy(SkipBookkeeping):
    """Skips a step while sum |P(rel. L1 change of the indicator)| since the last computed step stays below threshold.

    The absolute value keeps every step's contribution non-negative: the published Wan polynomials go
    negative outside the distances they were fitted on, which would otherwise let a large jump cause a skip.
    ``distance_range`` (from a calibration profile) clamps the distance to the range the fit has seen.
    """

    coefficients: tuple[float, ...]
    threshold: float
    gate: StepGate = StepGate()
    indicator: str = INDICATOR_EMBEDDING
    distance_range: tuple[float, float] | None = None
    name: ClassVar[str] = "TeaCache"
    needs_indicator: ClassVar[bool] = True

    @classmethod
    def published(cls, model_type: str, threshold: float, gate: StepGate = StepGate()) -> "TeaCachePolicy":
        """Policy with the published coefficient set ``model_type`` (a key of ``TEACACHE_COEFFICIENTS``)."""
        if model_type not in TEACACHE_COEFFICIENTS:
            raise ValueError(f"unknown TeaCache model_type {model_type!r}; use one of {sorted(TEACACHE_COEFFICIENTS)}")
        return cls(TEACACHE_COEFFICIENTS[model_type], threshold, gate, indicator_of(model_type))

    def rescaled(self, distance: float) -> float:
        """|P(distance)|, the estimated relative change of the output; never negative."""
        if self.distance_range is not None:
            distance = min(max(distance, self.distance_range[0]), self.distance_range[1])
        return abs(polynomial(self.coefficients, distance))

    def new_state(self, stream: int) -> TeaCacheState:
        """Fresh state for one stream (cond 0 or uncond 1; the indicator is the same for both) at the start of a run."""
        return TeaCacheState()

    def wants_skip(self, state: TeaCacheState, step: int, total_steps: int, indicator: torch.Tensor | None) -> bool:
        """Accumulates this step's rescaled distance and says whether the cached residual may be reused."""
        if indicator is None:
            raise ValueError("TeaCache needs the timestep indicator of every step")
        previous, state.previous_indicator = state.previous_indicator, indicator.detach()
        if previous is None or previous.shape != indicator.shape:
            return False
        distance = relative_l1(indicator, previous)
        state.accumulated += self.rescaled(distance)
        return self.gate.allows_skip(step, total_steps, state.consecutive_skips) and state.accumulated < self.threshold
