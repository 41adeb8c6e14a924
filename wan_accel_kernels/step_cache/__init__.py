"""Step caching (TeaCache, MagCache, calibration profiles) and per-step cfg schedules. Never imports ``comfy``."""
from .calibration import CalibrationRecorder, StepCacheProfile, fit_teacache, load_profile, save_profile
from .cfg_schedule import CfgSchedule, parse_cfg_schedule
from .magcache import MAGCACHE_RATIOS, MagCachePolicy, resample_ratios
from .runtime import StepCacheRun
from .stats import StepCacheStats
from .steps import StepGate, step_index
from .teacache import (
    INDICATOR_EMBEDDING,
    INDICATOR_MODULATION,
    TEACACHE_COEFFICIENTS,
    TeaCachePolicy,
    indicator_of,
)

__all__ = [
    "CalibrationRecorder",
    "CfgSchedule",
    "INDICATOR_EMBEDDING",
    "INDICATOR_MODULATION",
    "MAGCACHE_RATIOS",
    "MagCachePolicy",
    "StepCacheProfile",
    "StepCacheRun",
    "StepCacheStats",
    "StepGate",
    "TEACACHE_COEFFICIENTS",
    "TeaCachePolicy",
    "fit_teacache",
    "indicator_of",
    "load_profile",
    "parse_cfg_schedule",
    "resample_ratios",
    "save_profile",
    "step_index",
]
