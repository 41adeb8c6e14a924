"""Recording and replaying the denoised predictions of a split run, as ``PREDICT_NOISE`` wrappers on a clone.

Both stages run the host's sampler over the whole schedule. Stage A (:class:`HistoryRecorder`) computes every call
whose sigma is above the split step's sigma and records the guider's prediction, and skips the rest (they would be
stage B's work). Stage B (:class:`HistoryReplayer`) answers those same calls from the record and computes from the
split on. A sampler is deterministic given its noise, sigmas and predictions, so stage B reaches the split with the
very state stage A had, multistep history included: with fp32 transfer its latent is the unsplit run's, bit for bit.
A call of a second-order sampler that lands exactly on the split sigma is computed by stage B, which gives the same
value stage A would have.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

WRAPPER_KEY = "wan_accel_split_history"


def split_sigma(model_options: dict[str, Any], split_step: int) -> float:
    """The sigma stage B starts at: ``sample_sigmas[split_step]`` of the schedule the host is sampling."""
    sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
    if sigmas is None:
        raise RuntimeError("split sampling: the host did not put sample_sigmas in transformer_options; this "
                           "ComfyUI is older than the pack supports, update it")
    if not 1 <= split_step < len(sigmas) - 1:
        raise ValueError(f"split_step {split_step} is outside the schedule's {len(sigmas) - 1} steps; give 1 to "
                         f"{len(sigmas) - 2}")
    return float(sigmas[split_step])


def call_sigma(timestep: torch.Tensor) -> float:
    """The sigma of one guider call (every batch item shares it)."""
    return float(timestep.max())


class HistoryRecorder:
    """Stage A: computes and records each prediction before the split; answers later calls with zeros unrun."""

    def __init__(self, split_step: int):
        self.split_step = split_step
        self.outputs: list[torch.Tensor] = []
        self.sigmas: list[float] = []
        self.skipped = 0

    def __call__(self, executor: Callable[..., torch.Tensor], x: torch.Tensor, timestep: torch.Tensor,
                 model_options: dict[str, Any], seed: int | None) -> torch.Tensor:
        sigma = call_sigma(timestep)
        if sigma > split_sigma(model_options, self.split_step):
            denoised = executor(x, timestep, model_options, seed)
            self.outputs.append(denoised.detach().to("cpu", copy=True))
            self.sigmas.append(sigma)
            return denoised
        self.skipped += 1
        return torch.zeros_like(x)


class HistoryReplayer:
    """Stage B: answers each call before the split from stage A's record, checking its sigma; computes the rest."""

    def __init__(self, outputs: list[torch.Tensor], sigmas: tuple[float, ...], split_step: int, source: str):
        self.outputs = outputs
        self.sigmas = sigmas
        self.split_step = split_step
        self.source = source
        self.replayed = 0

    def _mismatch(self, why: str) -> ValueError:
        return ValueError(f"{self.source}: {why}; stage A recorded {len(self.outputs)} prediction(s) before step "
                          f"{self.split_step}. Use the same sampler_name, scheduler, model (its shift) and cfg on "
                          f"both stages")

    def __call__(self, executor: Callable[..., torch.Tensor], x: torch.Tensor, timestep: torch.Tensor,
                 model_options: dict[str, Any], seed: int | None) -> torch.Tensor:
        sigma = call_sigma(timestep)
        if sigma <= split_sigma(model_options, self.split_step):
            self.check_all_replayed()
            return executor(x, timestep, model_options, seed)
        if self.replayed == len(self.outputs):
            raise self._mismatch(f"this run makes more than {len(self.outputs)} call(s) before the split")
        recorded, expected = self.outputs[self.replayed], self.sigmas[self.replayed]
        if sigma != expected:
            raise self._mismatch(f"call {self.replayed + 1} is at sigma {sigma!r} here, {expected!r} in stage A")
        if recorded.shape != x.shape:
            raise self._mismatch(f"the predictions have shape {list(recorded.shape)}, this run's latent "
                                 f"{list(x.shape)}")
        self.replayed += 1
        return recorded.to(device=x.device, dtype=x.dtype)

    def check_all_replayed(self) -> None:
        """Refuses a run that reached the split with recorded predictions left over (another schedule)."""
        if self.replayed != len(self.outputs):
            raise self._mismatch(f"this run reached the split after {self.replayed} call(s)")
