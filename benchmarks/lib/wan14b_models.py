"""Wan 2.1 14B I2V benchmark models: sizes, random valid Q6_K weights, the host's WanModel on our ops, inputs.

Used by the GPU suite's DiT, linear and VAE sections. Speed does not depend on the weight values, so
Q6_K blocks are random bytes with a sane fp16 scale, and the bf16 model holds exactly their dequantised values.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Q6_K = 14
Q6_K_BYTES_PER_WEIGHT = 210 / 256
TEXT_TOKENS, IMAGE_TOKENS, TEXT_DIM, CLIP_DIM, IN_DIM, LATENT_CHANNELS = 512, 257, 4096, 1280, 36, 16
Q6_K_RMS_PER_D = math.sqrt(5461.5) * math.sqrt(341.5)  # rms of a random int8 sub-scale times rms of (q - 32)
FULL_14B = (5120, 40, 13824, 81, 480, 832)


@dataclass(frozen=True)
class Shape:
    """The DiT and clip sizes of one run."""

    dim: int
    layers: int
    ffn: int
    frames: int
    height: int
    width: int

    @property
    def heads(self) -> int:
        return self.dim // 128

    @property
    def latent(self) -> tuple[int, int, int]:
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8

    @property
    def tokens(self) -> int:
        t, h, w = self.latent
        return t * (h // 2) * (w // 2)

    @property
    def is_full_14b(self) -> bool:
        return (self.dim, self.layers, self.ffn, self.frames, self.height, self.width) == FULL_14B

    def flops(self) -> tuple[float, float]:
        """(linear, attention) FLOPs of one forward: the issue's model (0.79 + 0.88 PFLOP at full size)."""
        m, d, f = self.tokens, self.dim, self.ffn
        per_layer_linear = 2 * m * (6 * d * d + 2 * d * f) + 2 * (TEXT_TOKENS + IMAGE_TOKENS) * 2 * d * d
        per_layer_attention = 4 * m * m * d + 4 * m * (TEXT_TOKENS + IMAGE_TOKENS) * d
        return self.layers * per_layer_linear, self.layers * per_layer_attention

    def linear_shapes(self) -> dict[tuple[int, int], int]:
        """[out, in] of the per-token linears of one forward -> how many there are (self/cross-attention, FFN)."""
        return {(self.dim, self.dim): 6 * self.layers, (self.ffn, self.dim): self.layers,
                (self.dim, self.ffn): self.layers}


class Bench:
    """Device helpers: synchronised wall-clock timing and CUDA memory statistics."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, run: Callable[[], object], repeat: int) -> tuple[float, float, object]:
        """(first call s, best of ``repeat`` further calls s, last result); best is the first call when 0."""
        self.sync()
        start = time.perf_counter()
        result = run()
        self.sync()
        first = time.perf_counter() - start
        best = math.inf if repeat else first
        for _ in range(repeat):
            start = time.perf_counter()
            result = run()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return first, best, result

    def allocated_gib(self) -> float:
        return torch.cuda.memory_allocated(self.device) / 2**30 if self.cuda else math.nan

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else math.nan

    def free_gib(self) -> float:
        return torch.cuda.mem_get_info(self.device)[0] / 2**30 if self.cuda else math.inf

    def release(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()


def compare(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(cosine, relative L2) of ``out`` against ``reference``, in float64."""
    a, b = out.double().flatten(), reference.double().flatten()
    return float(F.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())


def random_q6_k(shape: tuple, std: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Random valid Q6_K bytes for a ``[out, in]`` weight of roughly ``std``: random quants and int8 sub-scales
    (every byte pattern is valid there), and a random-sign fp16 ``d`` per block."""
    n_blocks = shape[0] * shape[1] // 256
    blocks = torch.randint(0, 256, (n_blocks, 210), dtype=torch.uint8, device=device, generator=gen)
    d = (torch.rand(n_blocks, 1, device=device, generator=gen) + 0.5) * (std / Q6_K_RMS_PER_D)
    sign = torch.randint(0, 2, (n_blocks, 1), device=device, generator=gen) * 2 - 1
    blocks[:, 208:] = (d * sign).to(torch.float16).view(torch.uint8)
    return blocks.reshape(-1)


def random_float(name: str, shape: tuple, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """float32 values that keep a random DiT's activations O(1): norms ~1, biases and modulations small."""
    noise = torch.randn(shape, device=device, generator=gen)
    if "modulation" in name:
        return noise * 0.1
    if name.endswith("bias"):
        return noise * 0.02
    if len(shape) == 1:
        return 1 + 0.05 * noise
    return noise / math.sqrt(math.prod(shape[1:]))


def is_q6_k_weight(name: str, shape: tuple) -> bool:
    """Which tensors a Q6_K file quantises: 2-D weights whose rows fill 256-value blocks."""
    return name.endswith(".weight") and len(shape) == 2 and shape[1] % 256 == 0


def build_wan(host, shape: Shape, operations, device: torch.device, dtype: torch.dtype = torch.bfloat16,
              image_branch: bool = True) -> torch.nn.Module:
    """The host's Wan 2.1 I2V ``WanModel`` with the config ``comfy.model_detection`` derives for a 14B file, its
    unquantised parameters in ``dtype``. Without ``image_branch``: a Wan 2.2 I2V A14B expert, the same DiT (in_dim 36)
    without the CLIP-vision ``img_emb`` and image cross-attention, which the host detects as ``t2v``."""
    return host["wan"].WanModel(
        model_type="i2v" if image_branch else "t2v", patch_size=(1, 2, 2), text_len=TEXT_TOKENS, in_dim=IN_DIM,
        dim=shape.dim, ffn_dim=shape.ffn, freq_dim=256, text_dim=TEXT_DIM, out_dim=LATENT_CHANNELS,
        num_heads=shape.heads, num_layers=shape.layers, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True,
        eps=1e-6, image_model="wan2.1", device=device, dtype=dtype, operations=operations)


def random_tensors(host, model: torch.nn.Module, device: torch.device, seed: int) -> dict:
    """Random weights for every parameter of ``model``: ``GGUFTensor`` Q6_K blocks for the quantisable weights."""
    gen = torch.Generator(device=device).manual_seed(seed)
    GGUFTensor = host["reader"].GGUFTensor
    tensors = {}
    for name, param in model.named_parameters():
        size = tuple(param.shape)
        if is_q6_k_weight(name, size):
            gain = 0.1 if name.startswith("time_projection") else 1.0
            tensors[name] = GGUFTensor(name, Q6_K, size, random_q6_k(size, gain / math.sqrt(size[1]), gen, device))
        else:
            tensors[name] = random_float(name, size, gen, device)
    return tensors


def load_gguf_tensors(model: torch.nn.Module, tensors: dict) -> torch.nn.Module:
    """Loads GGUF tensors (shared, not copied) into a model built on GGUF operations; errors if any is left."""
    result = model.load_state_dict(tensors, strict=False)
    still_meta = [name for name, param in model.named_parameters() if param.is_meta]
    if result.missing_keys or still_meta:
        raise RuntimeError(f"benchmarks/lib/wan14b_models.py: GGUF model left {result.missing_keys or still_meta} "
                           "unset; the host's WanModel layout changed, update load_gguf_tensors.")
    return model.eval()


def build_plain_model(host, shape: Shape, tensors: dict, device: torch.device, dtype: torch.dtype = torch.bfloat16,
                      image_branch: bool = True) -> torch.nn.Module:
    """The host's plain WanModel in ``dtype`` (bf16: the baseline) holding exactly the dequantised GGUF weights."""
    model = build_wan(host, shape, host["ops"].disable_weight_init, device, dtype, image_branch)
    dequantize = host["backend"].dequantize_on_device
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = tensors[name]
            if isinstance(value, host["reader"].GGUFTensor):
                value = dequantize(value.data, value.qtype, value.shape, param.dtype)
            param.copy_(value)
    return model.eval()


def count_parameters(host, shape: Shape, image_branch: bool = True) -> tuple[int, int]:
    """(all parameters, those in Q6_K-quantisable 2-D weights) of the host's I2V WanModel at ``shape``, counted on
    the meta device: 16.4 B at full size (the image cross-attention and CLIP projection the T2V model lacks; without
    ``image_branch``, a Wan 2.2 expert, they are not counted)."""
    model = build_wan(host, shape, host["ops"].disable_weight_init, torch.device("meta"), image_branch=image_branch)
    total = quantised = 0
    for name, param in model.named_parameters():
        total += param.numel()
        quantised += param.numel() if is_q6_k_weight(name, tuple(param.shape)) else 0
    return total, quantised


def weight_gib(parameters: tuple[int, int]) -> tuple[float, float]:
    """(bf16 GiB, Q6_K GiB with the other tensors float32) of ``count_parameters``: 30.5 and 12.5 at full size."""
    total, quantised = parameters
    return 2 * total / 2**30, (quantised * Q6_K_BYTES_PER_WEIGHT + 4 * (total - quantised)) / 2**30


def dit_inputs(shape: Shape, device: torch.device, seed: int, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Random I2V inputs in ``dtype``: 36-channel latent (noise + mask + image latent), t = 900, umt5 context,
    CLIP-H tokens."""
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    t, h, w = shape.latent

    def randn(*size):
        return torch.randn(size, device=device, generator=gen).to(dtype)

    return {"x": randn(1, IN_DIM, t, h, w), "timestep": torch.full((1,), 900.0, device=device),
            "context": randn(1, TEXT_TOKENS, TEXT_DIM), "clip_fea": randn(1, IMAGE_TOKENS, CLIP_DIM)}
