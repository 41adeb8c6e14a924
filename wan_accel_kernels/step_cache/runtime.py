"""One sampling run of a step cache: per-stream policy state, the cached output residual, skip-or-compute per forward.

The cached quantity is the model output delta ``output - x[:, :C]`` (C = output channels, the noisy latent
comes first in the host's input), as the host's EasyCache does. A skipped forward returns
``x[:, :C] + cached delta``. Unlike TeaCache/MagCache's token-space residual of the block stack, this is
latent-sized (8 MB for 832x480x81 in fp32 instead of ~335 MB in bf16 for the 14B model), so offloading it is
cheap, and it needs no access inside the DiT, so it composes with any block patch, attention override or
quantised loader.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .stats import StepCacheStats

log = logging.getLogger("wan_accel")

Stream = tuple[int, Hashable]  # (cond_or_uncond, the cond's uuid)


class SkipPolicy(Protocol):
    """What a cache policy (TeaCache, MagCache) provides to the run."""

    name: str
    needs_indicator: bool

    def new_state(self, stream: int) -> Any: ...

    def wants_skip(self, state: Any, step: int, total_steps: int, indicator: torch.Tensor | None) -> bool: ...

    def commit(self, state: Any, skipped: bool) -> None: ...


@dataclass
class _StreamCache:
    state: Any
    residual: torch.Tensor | None = None


class StepCacheRun:
    """The cache of one sampling run of one model clone; a new run starts from nothing."""

    def __init__(self, policy: SkipPolicy, storage_device: torch.device | None = None):
        self.policy = policy
        self.storage_device = storage_device
        self.stats = StepCacheStats(policy.name)
        self._streams: dict[Stream, _StreamCache] = {}
        self._signature: tuple | None = None

    def _check_signature(self, x: torch.Tensor, chunks: int) -> None:
        """Drops all state when the per-stream input shape, dtype or device differs from the previous forward."""
        signature = (x.shape[0] // chunks, tuple(x.shape[1:]), x.dtype, x.device)
        if self._signature is not None and signature != self._signature:
            log.warning("%s: input changed from %s to %s; cache state reset", self.policy.name, self._signature,
                        signature)
            self._streams.clear()
            self.stats.resets += 1
        self._signature = signature

    def forward(self, x: torch.Tensor, streams: Sequence[Stream], step: int, total_steps: int,
                compute: Callable[[], torch.Tensor],
                indicator: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Output of the DiT for ``x`` (one chunk per stream): ``compute()`` or the input plus the cached delta."""
        self._check_signature(x, len(streams))
        caches = [self._streams.setdefault(s, _StreamCache(self.policy.new_state(s[0]))) for s in streams]
        if self.policy.needs_indicator:
            if indicator is None:
                raise ValueError(f"{self.policy.name} needs the timestep indicator")
            indicators = indicator().chunk(len(streams))
        else:
            indicators = (None,) * len(streams)
        wants = [self.policy.wants_skip(c.state, step, total_steps, ind) for c, ind in zip(caches, indicators)]
        skip = all(wants) and all(c.residual is not None for c in caches)
        for c in caches:
            self.policy.commit(c.state, skipped=skip)
        self.stats.record(step, total_steps, computed=not skip)
        if skip:
            return torch.cat([xc[:, :c.residual.shape[1]] + c.residual.to(device=x.device, dtype=x.dtype)
                              for xc, c in zip(x.chunk(len(streams)), caches)])
        output = compute()
        residual = output - x[:, :output.shape[1]].to(output.dtype)
        for c, r in zip(caches, residual.chunk(len(streams))):
            c.residual = r if self.storage_device is None else r.to(self.storage_device)
        return output
