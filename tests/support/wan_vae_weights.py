"""Random-weight Wan 2.1 VAE for the host tier and the benchmark, in the key layout of the released file.

The layout is taken from the host's own ``comfy.ldm.wan.vae.WanVAE`` (the config ``comfy.sd.VAE`` builds for a
Wan 2.1 VAE: dim 96, z_dim 16), so the host must be importable (``tests.support.host_inprocess.import_host``).
Conv weights have std ``1/sqrt(fan_in)``, biases 0.02, norm scales 1: activations stay O(1) through the
RMS-normalised blocks. The file is 127 M parameters: 254 MB in fp16.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

WAN21_VAE_CONFIG = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                    "temperal_downsample": [False, True, True], "dropout": 0.0}


def wan21_vae_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A random Wan 2.1 VAE state dict (needs the host importable for the layout)."""
    import comfy.ldm.wan.vae

    shapes = {name: tensor.shape for name, tensor in
              comfy.ldm.wan.vae.WanVAE(**WAN21_VAE_CONFIG).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, shape in shapes.items():
        if name.endswith("gamma"):
            tensor = torch.ones(shape)
        elif name.endswith("bias"):
            tensor = torch.randn(shape, generator=generator) * 0.02
        else:
            tensor = torch.randn(shape, generator=generator) / shape[1:].numel() ** 0.5
        state_dict[name] = tensor.to(dtype).contiguous()
    return state_dict


def write_wan21_vae(path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None,
                    dtype: torch.dtype = torch.float16, overflow_scale: float = 1.0) -> Path:
    """Write ``state_dict`` (default: :func:`wan21_vae_state_dict`) as safetensors in ``dtype``; ``overflow_scale``
    multiplies the decoder's last conv (1e5 makes an fp16 decode overflow while fp32 stays finite)."""
    state_dict = dict(state_dict if state_dict is not None else wan21_vae_state_dict())
    state_dict["decoder.head.2.weight"] = state_dict["decoder.head.2.weight"].float() * overflow_scale
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.to(dtype).contiguous() for name, tensor in state_dict.items()}, str(path))
    return path
