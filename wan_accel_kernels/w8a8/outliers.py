"""Activation-outlier handling for W8A8, chosen per weight at load: none, Hadamard rotation, SmoothQuant, 16-bit
outlier channels (LLM.int8). Measured against each other by ``benchmarks/w8a8.py``: Hadamard is the int8 default,
no transform the fp8 one (fp8's floating point already tolerates outliers; rotating only enlarges typical values).

* ``hadamard``: block-Hadamard rotation folded into the weight (see :mod:`.hadamard`); data-free.
* ``smoothquant``: divide channel ``j`` of x by ``s_j = amax_x[j]^a / amax_w[j]^(1-a)`` and multiply the weight's
  column by it; needs calibration activations (``act_absmax``), which a model loader does not have.
* ``outlier_channels``: per call, input channels whose largest |x| exceeds ``OUTLIER_RATIO`` times the median
  channel's are taken out of the int8 product and multiplied in 16 bits against the dequantised weight columns.
"""
from __future__ import annotations

import torch

NONE, HADAMARD, SMOOTHQUANT, OUTLIER_CHANNELS = "none", "hadamard", "smoothquant", "outlier_channels"
METHODS = (NONE, HADAMARD, SMOOTHQUANT, OUTLIER_CHANNELS)
DEFAULT_METHODS = {"int8": HADAMARD, "fp8": NONE}
SMOOTH_ALPHA = 0.5
OUTLIER_RATIO = 6.0
MAX_OUTLIER_FRACTION = 1 / 64


def default_method(fmt: str) -> str:
    """The measured best data-free method for ``fmt`` ("int8" or "fp8")."""
    return DEFAULT_METHODS[fmt]


def check_method(method: str) -> str:
    """``method`` when it is one of :data:`METHODS`; a ValueError naming them otherwise."""
    if method not in METHODS:
        raise ValueError(f"W8A8 outlier method must be one of {METHODS}, got {method!r}")
    return method


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-input-channel divisor ``s`` [in] (x / s, w * s), from calibration maxima of |x|."""
    w_absmax = weight.abs().amax(dim=0).to(torch.float32).clamp_min(1e-8)
    x_absmax = act_absmax.to(weight.device, torch.float32).clamp_min(1e-8)
    return (x_absmax.pow(alpha) / w_absmax.pow(1 - alpha)).clamp_min(1e-5)


def outlier_columns(x: torch.Tensor, ratio: float = OUTLIER_RATIO,
                    max_fraction: float = MAX_OUTLIER_FRACTION) -> torch.Tensor:
    """Indices of x's [tokens, in] channels whose max |x| is over ``ratio`` x the median channel's (at most
    ``max_fraction`` of the channels, the largest first)."""
    channel_max = x.abs().amax(dim=0).to(torch.float32)
    limit = ratio * channel_max.median()
    count = min(int((channel_max > limit).sum()), max(1, int(x.shape[-1] * max_fraction)))
    return channel_max.topk(count).indices if count else channel_max.new_zeros(0, dtype=torch.long)
