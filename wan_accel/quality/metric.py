"""What every quality metric gives back, and the interface the scorer drives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .video_io import Video


@dataclass(frozen=True)
class MetricValue:
    """One metric on one video: the value the challenge uses, and per-frame curves for figures (for the similarity
    metrics ``to_image`` and ``consecutive``; empty for the others)."""

    value: float
    curves: dict[str, list[float]] = field(default_factory=dict)


class VideoMetric(Protocol):
    """A loaded metric network; ``needs_image`` says whether :meth:`measure` needs ``video.image``."""

    name: str
    needs_image: bool

    def measure(self, video: Video) -> MetricValue: ...
