"""Parameters of the texture and colour post-process, with conservative defaults."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

GRAIN_MODES = ("temporal_coherent", "per_frame")


@dataclass(frozen=True)
class EnhanceParams:
    """Every knob of ``enhance_video``; the defaults add visible texture without looking like a filter."""

    cr_min: int = 133
    cr_max: int = 173
    cb_min: int = 77
    cb_max: int = 127
    mask_morph_size: int = 5
    mask_feather_sigma: float = 2.0
    detail_sigma: float = 1.5
    detail_gain: float = 1.35
    detail_gain_global: float = 1.1
    skin_only: bool = False
    grain_strength: float = 0.012
    grain_strength_global: float = 0.0
    grain_sigma: float = 0.6
    grain_mode: str = "temporal_coherent"
    grain_coherence: float = 0.75
    seed: int = 0
    saturation: float = 1.04
    contrast: float = 1.03
    temporal_sigma: float = 1.0
    motion_threshold: float = 0.03

    def __post_init__(self) -> None:
        """Rejects values the numerics cannot honour, so a bad widget value fails loudly, not silently."""
        for low, high in ((self.cr_min, self.cr_max), (self.cb_min, self.cb_max)):
            if not 0 <= low <= high <= 255:
                raise ValueError(f"YCrCb thresholds must satisfy 0 <= min <= max <= 255, got {low}..{high}")
        if self.mask_morph_size < 1 or self.mask_morph_size % 2 == 0:
            raise ValueError(f"mask_morph_size must be an odd number >= 1, got {self.mask_morph_size}")
        for name in ("mask_feather_sigma", "detail_sigma", "grain_sigma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("detail_gain", "detail_gain_global", "grain_strength", "grain_strength_global",
                     "saturation", "contrast", "temporal_sigma", "motion_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.grain_mode not in GRAIN_MODES:
            raise ValueError(f"grain_mode must be one of {GRAIN_MODES}, got {self.grain_mode!r}")
        if not 0.0 <= self.grain_coherence <= 1.0:
            raise ValueError(f"grain_coherence must be in [0, 1], got {self.grain_coherence}")

    @property
    def grain_elsewhere(self) -> float:
        """Grain strength outside skin: ``grain_strength_global``, or 0 when ``skin_only``."""
        return 0.0 if self.skin_only else self.grain_strength_global

    @property
    def has_grain(self) -> bool:
        """Whether any pixel gets grain, so the noise need not be drawn at all otherwise."""
        return self.grain_strength > 0 or self.grain_elsewhere > 0


def resolve_params(params: EnhanceParams | None, overrides: dict[str, Any]) -> EnhanceParams:
    """``params`` (or the defaults) with keyword ``overrides`` applied; an unknown name raises ``TypeError``."""
    known = {f.name for f in fields(EnhanceParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown EnhanceParams field(s): {', '.join(unknown)}")
    return replace(params or EnhanceParams(), **overrides)
