"""Tiny random-weight Wan 2.2 models in the released files' layouts: the I2V A14B expert pair, its LoRAs, the 5B TI2V.

* Each Wan 2.2 I2V A14B expert (``wan2.2_i2v_high_noise_14B_*`` / ``wan2.2_i2v_low_noise_14B_*``) is a Wan 2.1
  DiT with ``in_dim`` 36 and no CLIP-vision branch: no ``img_emb.*`` and no ``cross_attn.k_img/v_img/norm_k_img``.
  The host's ``model_detection`` therefore sees it as ``wan2.1`` / ``t2v`` with ``in_dim`` 36 (``WAN21_T2V``),
  whose ``concat_cond`` adds the 4 mask + 16 image-latent channels. The two experts differ only in weights.
* The 5B TI2V (``wan2.2_ti2v_5B_*``) has 48-channel latents: ``patch_embedding`` in_dim 48 and ``head.head``
  out 48 x 4; the host detects it as ``WAN22_T2V`` (Wan 2.2 VAE). Only its shapes matter here (refusal tests).
* LoRAs follow lightx2v's Wan 2.2 Lightning files: ``diffusion_model.blocks.N.<linear>.lora_A.weight`` [rank, in],
  ``.lora_B.weight`` [out, rank] and ``.alpha``, on every block linear, one file per expert.

Default shape dim 256 / 2 blocks / ffn 512: every block linear has rows of 256 or 512, so Q6_K and Q4_K really
apply (dim 128 would fall back to Q8_0); about 2.9 M parameters (11 MB in fp32) per expert.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import gguf
import torch
from safetensors.torch import save_file

from tests.support.q4k_blocks import quantize_q4_k
from tests.support.tiny_models import tiny_wan_i2v_state_dict
from wan_accel.convert import convert
from wan_accel.gguf_policy import keeps_float
from wan_accel_kernels.gguf.reader import ORIG_SHAPE_KEY

EXPERTS = ("high", "low")
EXPERT_SEEDS = {"high": 22, "low": 23}
EXPERT_SHAPE = dict(dim=256, layers=2, ffn=512)
TI2V_IN_DIM = 48      # Wan 2.2 VAE latent channels (the 5B TI2V's in and out channels)
CLIP_BRANCH = ("img_emb.", "cross_attn.k_img.", "cross_attn.v_img.", "cross_attn.norm_k_img.")
LORA_TARGETS = tuple(f"{attn}.{p}" for attn in ("self_attn", "cross_attn") for p in "qkvo") + ("ffn.0", "ffn.2")
GGUF_TYPES = ("Q6_K", "Q8_0", "Q4_K")


def expert_file_name(expert: str, suffix: str) -> str:
    """The tiny file name of ``expert`` ("high"/"low"), e.g. ``wan22_tiny_i2v_high_noise-Q6_K.gguf``."""
    _check_expert(expert)
    return f"wan22_tiny_i2v_{expert}_noise{suffix}"


def tiny_wan22_expert_state_dict(expert: str, seed: int | None = None, **shape) -> dict[str, torch.Tensor]:
    """Random fp32 weights of one Wan 2.2 I2V A14B expert (``shape``: dim, layers, ffn; default EXPERT_SHAPE)."""
    _check_expert(expert)
    full = tiny_wan_i2v_state_dict(seed=EXPERT_SEEDS[expert] if seed is None else seed, **{**EXPERT_SHAPE, **shape})
    return {name: tensor for name, tensor in full.items() if not any(part in name for part in CLIP_BRANCH)}


def write_tiny_wan22_expert(path: str | os.PathLike, expert: str, **kw) -> Path:
    """One expert as a host ``UNETLoader`` safetensors file (unprefixed keys, as the released files)."""
    return _save(path, tiny_wan22_expert_state_dict(expert, **kw))


def write_tiny_wan22_gguf_expert(folder: str | os.PathLike, expert: str, qtype: str = "Q6_K", **kw) -> Path:
    """One expert as GGUF: Q6_K / Q8_0 through ``wan_accel.convert``; Q4_K (which our converter does not write)
    with the same keep-float policy and :func:`tests.support.q4k_blocks.quantize_q4_k`, as community Q4_K files."""
    if qtype not in GGUF_TYPES:
        raise ValueError(f"qtype must be one of {GGUF_TYPES}, got {qtype!r}")
    folder = Path(folder)
    if qtype == "Q4_K":
        return write_state_dict_gguf(folder / expert_file_name(expert, f"-{qtype}.gguf"),
                                     tiny_wan22_expert_state_dict(expert, **kw), quantised=qtype)
    source = write_tiny_wan22_expert(folder / expert_file_name(expert, ".safetensors"), expert, **kw)
    return convert(source, folder / expert_file_name(expert, f"-{qtype}.gguf"), qtype, progress=False)


def tiny_wan22_lora_state_dict(base_sd: Mapping[str, torch.Tensor], rank: int = 8, seed: int = 7,
                               alpha: float | None = None, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A lightx2v-style LoRA (``lora_A``/``lora_B``/``alpha``) on every block linear of an expert's ``base_sd``.

    ``alpha`` defaults to rank / 2, so the host's ``alpha / rank`` scale (0.5) is exercised; ``lora_B`` is scaled
    up to match, and ``B @ A * alpha / rank`` has about ``scale`` times the base weights' std."""
    alpha = rank / 2 if alpha is None else alpha
    gen = torch.Generator().manual_seed(seed)
    blocks = sorted({int(name.split(".")[1]) for name in base_sd if name.startswith("blocks.")})
    out: dict[str, torch.Tensor] = {}
    for block in blocks:
        for target in LORA_TARGETS:
            out_f, in_f = base_sd[f"blocks.{block}.{target}.weight"].shape
            key = f"diffusion_model.blocks.{block}.{target}"
            out[f"{key}.lora_A.weight"] = (torch.randn(rank, in_f, generator=gen) / in_f ** 0.5).contiguous()
            out[f"{key}.lora_B.weight"] = (torch.randn(out_f, rank, generator=gen)
                                           * (scale / rank ** 0.5) * (rank / alpha)).contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


def write_tiny_wan22_lora(path: str | os.PathLike, expert: str, **kw) -> Path:
    """The LoRA of ``expert`` (its own seed) for the default tiny expert, as safetensors."""
    seed = kw.pop("seed", 100 + EXPERT_SEEDS[expert])
    return _save(path, tiny_wan22_lora_state_dict(tiny_wan22_expert_state_dict(expert), seed=seed, **kw))


def tiny_wan22_ti2v_state_dict(seed: int = 5, **shape) -> dict[str, torch.Tensor]:
    """Random fp32 weights in the Wan 2.2 TI2V 5B layout: no CLIP branch, 48-channel patch embedding and head."""
    sd = tiny_wan22_expert_state_dict("high", seed=seed, **shape)
    gen = torch.Generator().manual_seed(seed + 1)
    dim = sd["head.modulation"].shape[-1]
    sd["patch_embedding.weight"] = torch.randn(dim, TI2V_IN_DIM, 1, 2, 2, generator=gen) / (TI2V_IN_DIM * 4) ** 0.5
    sd["head.head.weight"] = torch.randn(TI2V_IN_DIM * 4, dim, generator=gen) / dim ** 0.5
    sd["head.head.bias"] = torch.randn(TI2V_IN_DIM * 4, generator=gen) * 0.02
    return sd


def write_tiny_wan22_ti2v(path: str | os.PathLike, **kw) -> Path:
    """The 5B TI2V layout as safetensors (the ``wan2.2_ti2v_5B_fp16.safetensors`` key names)."""
    return _save(path, tiny_wan22_ti2v_state_dict(**kw))


def write_tiny_wan22_ti2v_gguf(path: str | os.PathLike, **kw) -> Path:
    """The 5B TI2V layout as GGUF (Q8_0 block linears), as a community conversion of it would be."""
    return write_state_dict_gguf(path, tiny_wan22_ti2v_state_dict(**kw), quantised="Q8_0")


def write_state_dict_gguf(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], quantised: str) -> Path:
    """``state_dict`` as a ``wan`` GGUF file: tensors our policy keeps float as F32, the others as ``quantised``
    (Q4_K or Q8_0); 5-D tensors stored 2-D with their shape in ``comfy.gguf.orig_shape.*`` metadata."""
    qtype = gguf.GGMLQuantizationType[quantised]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "wan")
    for name, tensor in state_dict.items():
        array = tensor.to(torch.float32).numpy()
        if array.ndim > 4:
            writer.add_array(ORIG_SHAPE_KEY + name, list(array.shape))
            array = array.reshape(array.shape[0], -1)
        if keeps_float(name, tuple(tensor.shape)):
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.Q4_K:
            writer.add_tensor(name, quantize_q4_k(array), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _save(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(state_dict), str(path))
    return path


def _check_expert(expert: str) -> None:
    if expert not in EXPERTS:
        raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")


__all__ = ["EXPERTS", "EXPERT_SHAPE", "GGUF_TYPES", "LORA_TARGETS", "TI2V_IN_DIM", "expert_file_name",
           "tiny_wan22_expert_state_dict", "write_tiny_wan22_expert", "write_tiny_wan22_gguf_expert",
           "tiny_wan22_lora_state_dict", "write_tiny_wan22_lora", "tiny_wan22_ti2v_state_dict",
           "write_tiny_wan22_ti2v", "write_tiny_wan22_ti2v_gguf", "write_state_dict_gguf"]
