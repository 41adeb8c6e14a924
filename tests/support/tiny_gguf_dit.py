"""The tiny Wan DiT as a GGUF file and its forward under the host's ModelPatcher, for in-process host tests."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.support.tiny_models import write_tiny_wan_i2v
from wan_accel.convert import convert


def write_tiny_gguf_dit(folder: Path, qtype: str = "Q6_K", **shape) -> Path:
    """The tiny DiT of ``shape`` (see ``tiny_wan_i2v_state_dict``) converted by ``wan_accel.convert`` to ``qtype``."""
    name = "tiny_" + "_".join(f"{key}{value}" for key, value in sorted(shape.items()))
    source = write_tiny_wan_i2v(Path(folder) / f"{name}.safetensors", **shape)
    return convert(source, Path(folder) / f"{name}-{qtype}.gguf", qtype, progress=False)


def dit_inputs(seed: int = 3, timestep: float = 700.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [1, 36, 2, 8, 8], timestep, text context [1, 12, 4096]) for one DiT forward."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 36, 2, 8, 8, generator=generator), torch.tensor([timestep]),
            torch.randn(1, 12, 4096, generator=generator))


def loaded_forward(patcher, lowvram_bytes: int, inputs: tuple | None = None) -> torch.Tensor:
    """The DiT output after the host loads ``patcher`` on the CPU (partially when ``lowvram_bytes`` > 0), then
    unloads it; asserts the host took the load path asked for."""
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=lowvram_bytes)
    assert patcher.model.model_lowvram == (lowvram_bytes > 0), "the host did not take the expected load path"
    try:
        with torch.no_grad():
            return patcher.model.diffusion_model(*(inputs or dit_inputs()))
    finally:
        patcher.unpatch_model()
