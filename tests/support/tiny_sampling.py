"""Samples the tiny Wan 2.1 I2V DiT in-process with the real host's samplers, and counts the DiT forwards that ran.

For the step-cache and cfg-schedule host tests and ``benchmarks/caching.py``. Needs ``COMFYUI_PATH``.
Conditioning is random text context (the umt5 stub would encode every prompt to zeros anyway); the image
conditioning of the I2V model is the host's default (zeros) as in a graph without an image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tests.support.host_inprocess import import_host
from tests.support.tiny_models import LATENT_CHANNELS, TEXT_DIM, tiny_wan_i2v_state_dict

COUNTER_KEY = "tests_forward_counter"


@dataclass
class Forward:
    """One DiT forward that actually ran: its sigma and the streams in its batch (0 cond, 1 uncond)."""

    sigma: float
    cond_or_uncond: list[int]
    shape: tuple[int, ...]


@dataclass
class ForwardCounter:
    """A DIFFUSION_MODEL wrapper (added after any cache, so innermost) that records every forward that ran."""

    forwards: list[Forward] = field(default_factory=list)

    def __call__(self, executor, *args, **kwargs):
        options = args[-1] if isinstance(args[-1], dict) else kwargs["transformer_options"]
        self.forwards.append(Forward(float(options["sigmas"][0]), list(options["cond_or_uncond"]),
                                     tuple(args[0].shape)))
        return executor(*args, **kwargs)

    @property
    def uncond_forwards(self) -> int:
        """Forwards whose batch held the unconditional pass."""
        return sum(1 in f.cond_or_uncond for f in self.forwards)


class TinyWanSampler:
    """The tiny DiT as a host ModelPatcher plus fixed conditioning; ``sample`` runs a host sampler on a clone."""

    def __init__(self, seed: int = 0, **dit_shape):
        import_host()
        import comfy.sd

        self.patcher = comfy.sd.load_diffusion_model_state_dict(tiny_wan_i2v_state_dict(seed=seed, **dit_shape),
                                                                model_options={"dtype": torch.float32})
        generator = torch.Generator().manual_seed(seed + 100)
        self.positive = [[torch.randn(1, 8, TEXT_DIM, generator=generator), {}]]
        self.negative = [[torch.randn(1, 8, TEXT_DIM, generator=generator), {}]]

    @staticmethod
    def noise(width: int = 64, height: int = 64, length: int = 5, seed: int = 0) -> torch.Tensor:
        """Deterministic latent noise for a ``width`` x ``height`` x ``length`` video."""
        shape = (1, LATENT_CHANNELS, (length - 1) // 4 + 1, height // 8, width // 8)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    def sample(self, model=None, *, steps: int = 8, cfg: float = 1.0, sampler_name: str = "uni_pc",
               scheduler: str = "simple", width: int = 64, height: int = 64, length: int = 5, seed: int = 0,
               counter: ForwardCounter | None = None) -> torch.Tensor:
        """Output latent of the host's KSampler path (``comfy.sample.sample``) on ``model`` (default: plain)."""
        import comfy.patcher_extension
        import comfy.sample

        model = (model or self.patcher).clone()
        if counter is not None:
            model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, COUNTER_KEY, counter)
        noise = self.noise(width, height, length, seed)
        with torch.inference_mode():
            return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, self.positive,
                                       self.negative, torch.zeros_like(noise), seed=seed, disable_pbar=True)

    def sample_with_guider(self, guider, *, steps: int = 8, sampler_name: str = "uni_pc",
                           scheduler: str = "simple", seed: int = 0) -> torch.Tensor:
        """Output latent of the SamplerCustomAdvanced path: ``guider.sample`` with host sampler and sigmas."""
        import comfy.samplers

        noise = self.noise(seed=seed)
        sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"),
                                                 scheduler, steps)
        with torch.inference_mode():
            return guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object(sampler_name),
                                 sigmas, seed=seed, disable_pbar=True)


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of ``output`` against ``reference``, peak = the reference's value range (max - min)."""
    mse = float((output.double() - reference.double()).pow(2).mean())
    peak = float(reference.max() - reference.min())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak * peak / mse)).item()


def relative_l2(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference||."""
    return float((output.double() - reference.double()).norm() / reference.double().norm())
