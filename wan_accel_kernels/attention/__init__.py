"""Attention routing in pure PyTorch: sage where it is known to be safe, the host's own attention otherwise. Never
imports ``comfy``."""
from .dispatch import AUTO, BACKENDS, SAGE, SAGE_KERNELS, SDPA, AttentionCall, Decision, SageInstall, dispatch
from .nan_guard import GuardCounts, guarded
from .override import AttentionOverride, RunStats
from .sage import probe_sage

__all__ = [
    "AUTO",
    "BACKENDS",
    "SAGE",
    "SAGE_KERNELS",
    "SDPA",
    "AttentionCall",
    "AttentionOverride",
    "Decision",
    "GuardCounts",
    "RunStats",
    "SageInstall",
    "dispatch",
    "guarded",
    "probe_sage",
]
