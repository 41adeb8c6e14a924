"""The metrics by name: their weight files and their loaders, imported only when asked for (they need torch)."""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UsageError
from .metric import VideoMetric
from .weights import WeightSpec

#: Metric name -> module of this package that implements it (``WEIGHTS`` and ``load(device, weights_dir)``).
METRIC_MODULES = {"subject": "subject", "background": "background", "smoothness": "smoothness",
                  "imaging": "imaging", "dynamic": "dynamic"}


def _module(name: str):
    try:
        return importlib.import_module(f".{METRIC_MODULES[name]}", __package__)
    except ImportError as exc:
        raise UsageError(f"metric {name} needs {exc.name or 'a package'}, which is not installed: install the score "
                         f"extra, pip install 'wan-accel[score]' (README, Measuring quality)") from None


def weight_specs(names=tuple(METRIC_MODULES)) -> list[WeightSpec]:
    """Every weight file the named metrics need, in metric order."""
    return [spec for name in names for spec in _module(name).WEIGHTS]


def load_metric(name: str, device: str, weights_dir: Path | None) -> VideoMetric:
    """The named metric, its network loaded on ``device``; :class:`~.weights.MissingWeights` when a file is missing."""
    return _module(name).load(device, weights_dir)
