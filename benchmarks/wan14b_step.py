"""Wan 2.1 14B I2V: one DiT forward at 832x480x81 with random Q6_K weights in five configurations, Q6_K linears, VAE.

Builds the host's own ``WanModel`` (ComfyUI at ``COMFYUI_PATH``) at the true 14B configuration with random *valid*
Q6_K blocks made directly as bytes (speed does not depend on the weight values), and prints, measured in one run:

* ``matmul``: Q6_K linears at Wan shapes, M = tokens: bf16 ``F.linear`` on weights already dequantised (baseline),
  eager torch dequant + matmul, Triton dequant + matmul, fused Triton dequant+matmul (a few tile configs).
* ``dit``: s/step of one DiT forward (cfg 1: one forward per step) for host bf16 + SDPA; eager torch dequant + SDPA
  (ComfyUI-GGUF style: PyTorch dequantisation of every weight on every forward); our Triton dequant + SDPA;
  ours + Sage (``kernels.attention``); ours + Sage + torch.compile. Ratios to the first two, resident and peak
  memory, output cosine / relative L2 against bf16 + SDPA on the same inputs, and a projected RTX 4090 time per
  8-step video (assumptions printed with it).
* ``vae``: Wan 2.1 VAE encode and decode of the clip, random weights.

GPU, full size (meant to finish within 10 minutes on one H100):
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/wan14b_step.py
CPU check at reduced size (Triton kernels run in Triton's interpreter; the times are not speed figures):
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/wan14b_step.py --dim 256 --layers 2 --frames 5 --height 64 \
        --width 64
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU check: Triton kernels run in the interpreter

Q6_K = 14
TEXT_TOKENS, IMAGE_TOKENS, TEXT_DIM, CLIP_DIM, IN_DIM, LATENT_CHANNELS = 512, 257, 4096, 1280, 36, 16
Q6_K_RMS_PER_D = math.sqrt(5461.5) * math.sqrt(341.5)  # rms of a random int8 sub-scale times rms of (q - 32)

RTX4090_BF16_SDPA_S_PER_STEP = 10.9  # issue 8's estimate: 1.69 PFLOP at 832x480x81, bf16 matmuls + FA2
RTX4090_DENSE_BF16_TFLOPS = 165.2    # fp32 accumulate, the matmul mode PyTorch uses
DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # SXM datasheet peaks, for the VAE projection only
VIDEO_STEPS = 8
RTX4090_MEMORY_GIB = 24.0


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
        return (self.dim, self.layers, self.ffn, self.frames, self.height, self.width) == (5120, 40, 13824, 81, 480,
                                                                                             832)

    def flops(self) -> tuple[float, float]:
        """(linear, attention) FLOPs of one forward: the issue's model (0.79 + 0.88 PFLOP at full size)."""
        m, d, f = self.tokens, self.dim, self.ffn
        per_layer_linear = 2 * m * (6 * d * d + 2 * d * f) + 2 * (TEXT_TOKENS + IMAGE_TOKENS) * 2 * d * d
        per_layer_attention = 4 * m * m * d + 4 * m * (TEXT_TOKENS + IMAGE_TOKENS) * d
        return self.layers * per_layer_linear, self.layers * per_layer_attention


@dataclass(frozen=True)
class Config:
    """One DiT configuration: which model, attention and dequantisation path, compiled or not."""

    name: str
    model: str           # "bf16" or "gguf"
    attention: str       # "sdpa" or "sage"
    dequant: str = ""    # WAN_ACCEL_GGUF_DEQUANT for gguf models
    compile: bool = False


CONFIGS = (
    Config("host bf16 + SDPA", "bf16", "sdpa"),
    Config("eager torch dequant + SDPA (ComfyUI-GGUF style)", "gguf", "sdpa", "torch"),
    Config("ours: Triton dequant + SDPA", "gguf", "sdpa", "triton"),
    Config("ours + Sage", "gguf", "sage", "triton"),
    Config("ours + Sage + torch.compile", "gguf", "sage", "triton", compile=True),
)


@dataclass
class Row:
    """What one configuration measured (``status`` says why a row has no numbers)."""

    config: Config
    status: str = "ok"
    seconds: float = math.nan
    first_call: float = math.nan
    weights_gib: float = math.nan
    peak_gib: float = math.nan  # this model's weights + the forward's working memory (other models excluded)
    cosine: float = math.nan
    relative_l2: float = math.nan
    notes: list = field(default_factory=list)


class Bench:
    """Device helpers: synchronised wall-clock timing and CUDA memory statistics."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, run: Callable[[], object], repeat: int) -> tuple[float, float, object]:
        """(first call s, best of ``repeat`` further calls s, last result)."""
        self.sync()
        start = time.perf_counter()
        result = run()
        self.sync()
        first = time.perf_counter() - start
        best = math.inf
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


def gib(value: float) -> str:
    """GiB (MiB below 1 GiB) for tables; n/a where the device keeps no statistics (CPU)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}G" if value >= 1 else f"{value * 1024:.1f}M"


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


def build_wan(host, shape: Shape, operations, device: torch.device) -> torch.nn.Module:
    """The host's Wan 2.1 I2V ``WanModel`` with the config ``comfy.model_detection`` derives for a 14B file."""
    return host["wan"].WanModel(
        model_type="i2v", patch_size=(1, 2, 2), text_len=TEXT_TOKENS, in_dim=IN_DIM, dim=shape.dim, ffn_dim=shape.ffn,
        freq_dim=256, text_dim=TEXT_DIM, out_dim=LATENT_CHANNELS, num_heads=shape.heads, num_layers=shape.layers,
        window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6, image_model="wan2.1",
        device=device, dtype=torch.bfloat16, operations=operations)


def build_gguf_model(host, shape: Shape, device: torch.device, seed: int) -> tuple[torch.nn.Module, dict]:
    """WanModel on our GGUF operations, Q6_K weights as random blocks on ``device``; also returns the tensors."""
    model = build_wan(host, shape, host["gguf_ops"].make_gguf_operations(torch.bfloat16), device)
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
    result = model.load_state_dict(tensors, strict=False)
    still_meta = [name for name, param in model.named_parameters() if param.is_meta]
    if result.missing_keys or still_meta:
        raise RuntimeError(f"benchmarks/wan14b_step.py: GGUF model left {result.missing_keys or still_meta} unset; "
                           "the host's WanModel layout changed, update build_gguf_model.")
    return model.eval(), tensors


def build_bf16_model(host, shape: Shape, tensors: dict, device: torch.device) -> torch.nn.Module:
    """The host's plain bf16 WanModel holding exactly the dequantised GGUF weights (bf16 of the same values)."""
    model = build_wan(host, shape, host["ops"].disable_weight_init, device)
    dequantize = host["backend"].dequantize_on_device
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = tensors[name]
            if isinstance(value, host["reader"].GGUFTensor):
                value = dequantize(value.data, value.qtype, value.shape, param.dtype)
            param.copy_(value)
    return model.eval()


def dit_inputs(shape: Shape, device: torch.device, seed: int) -> dict:
    """Random I2V inputs: 36-channel latent (noise + mask + image latent), t = 900, umt5 context, CLIP-H tokens."""
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    t, h, w = shape.latent

    def randn(*size):
        return torch.randn(size, device=device, generator=gen).to(torch.bfloat16)

    return {"x": randn(1, IN_DIM, t, h, w), "timestep": torch.full((1,), 900.0, device=device),
            "context": randn(1, TEXT_TOKENS, TEXT_DIM), "clip_fea": randn(1, IMAGE_TOKENS, CLIP_DIM)}


def host_sdpa_override(attention_module) -> Callable:
    """``optimized_attention_override`` that runs the host's own ``attention_pytorch`` (torch SDPA)."""
    def override(original, *args, **kwargs):
        return attention_module.attention_pytorch(*args, **kwargs)
    return override


def sage_override(host, device: torch.device):
    """(override, None) using our ``kernels.attention`` patch when it routes bf16 head_dim 128 to sage, else
    (None, reason the row is unavailable)."""
    try:
        attention = host["import"]("kernels.attention")
    except ImportError as error:
        return None, f"kernels.attention does not import ({error})"
    override = attention.AttentionOverride(attention.AUTO, attention.probe_sage())
    decision = override.expected_decision(device, torch.bfloat16, 128)
    if decision.backend != attention.SAGE:
        return None, f"sage not used here: {decision.describe()}"
    return override, None


def run_dit_section(host, shape: Shape, bench: Bench, args) -> list[Row]:
    """Builds the models and times every configuration; returns the rows (reference first)."""
    device = bench.device
    backend = host["backend"]
    print(f"\n== DiT forward: dim {shape.dim}, {shape.layers} layers, {shape.heads} heads, ffn {shape.ffn}, "
          f"{shape.frames}x{shape.height}x{shape.width} -> {shape.tokens} tokens ==")
    start = time.perf_counter()
    gguf_model, tensors = build_gguf_model(host, shape, device, args.seed)
    bench.sync()
    q6_k_bytes = sum(t.data.numel() for t in tensors.values() if isinstance(t, host["reader"].GGUFTensor))
    print(f"random Q6_K model built in {time.perf_counter() - start:.1f} s: {q6_k_bytes / 2**20:.1f} MiB of Q6_K "
          f"blocks")
    inputs = dit_inputs(shape, device, args.seed)
    sdpa = host_sdpa_override(host["attention"])
    wanted = [c for c in CONFIGS if not args.configs or any(key in c.name for key in args.configs)]
    rows, reference = [], None
    for config in wanted:
        row = Row(config)
        rows.append(row)
        override = sdpa
        if config.attention == "sage":
            override, reason = sage_override(host, device)
            if override is None:
                row.status = f"unavailable: {reason}"
                continue
        model = gguf_model
        if config.model == "bf16":
            need = 2 * sum(math.prod(t.shape) for t in tensors.values()) / 2**30
            if bench.free_gib() < need * 1.1:
                row.status = f"skipped: bf16 weights need {need:.1f} GiB, {bench.free_gib():.1f} GiB free"
                continue
            model = build_bf16_model(host, shape, tensors, device)
        if config.dequant:
            os.environ[backend.ENV_VAR] = config.dequant
        backend.reset_path_counts()
        if hasattr(override, "begin_run"):
            override.begin_run()
        if config.compile:
            for block in model.blocks:
                block.compile(dynamic=False)
        options = {"optimized_attention_override": override}

        def forward():
            with torch.inference_mode():
                return model(inputs["x"], inputs["timestep"], inputs["context"], clip_fea=inputs["clip_fea"],
                             transformer_options=options)
        try:
            row.weights_gib = sum(p.nbytes for p in model.parameters()) / 2**30
            before = bench.allocated_gib()
            bench.reset_peak()
            row.first_call, row.seconds, out = bench.time(forward, args.repeat)
            row.peak_gib = row.weights_gib + bench.peak_gib() - before
        except Exception as error:  # a configuration that fails (e.g. compile) must not hide the others' numbers
            row.status = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            out = None
        finally:
            os.environ.pop(backend.ENV_VAR, None)
            if model is not gguf_model:
                del model, forward
                bench.release()
        if out is None:
            continue
        out = out.float().cpu()
        row.notes.append(f"output std {out.std():.3g}" + ("" if torch.isfinite(out).all() else ", NON-FINITE values"))
        if reference is None:
            reference = out
            if config is not CONFIGS[0]:
                row.notes.append("reference for cosine/L2 (bf16 + SDPA did not run)")
        row.cosine, row.relative_l2 = compare(out, reference)
        if config.model == "gguf":
            row.notes.append(backend.path_summary())
        if hasattr(override, "stats"):
            row.notes.append(override.stats.describe())
    return rows


def print_dit_table(rows: list[Row], shape: Shape, bench: Bench, vae_seconds: Optional[float]) -> None:
    """The s/step table with ratios, memory, errors and the RTX 4090 projection."""
    by_name = {row.config.name: row for row in rows}
    bf16 = by_name.get(CONFIGS[0].name)
    eager = by_name.get(CONFIGS[1].name)
    projecting = bench.cuda and shape.is_full_14b and bf16 is not None and bf16.status == "ok"
    print(f"\n{'configuration':48} {'s/step':>8} {'1st call':>8} {'vs bf16':>8} {'vs eager':>8} {'weights':>8} "
          f"{'peak*':>8} {'cosine':>10} {'rel L2':>9} {'4090 8-step video':>18}")
    for row in rows:
        if row.status != "ok":
            print(f"{row.config.name:48} {row.status}")
            continue
        vs_bf16 = row.seconds / bf16.seconds if bf16 is not None and bf16.status == "ok" else math.nan
        vs_eager = row.seconds / eager.seconds if eager is not None and eager.status == "ok" else math.nan
        projection = "n/a"
        if projecting:
            video = VIDEO_STEPS * RTX4090_BF16_SDPA_S_PER_STEP * vs_bf16 + (vae_seconds or 0.0)
            fits = row.config.model == "gguf" and row.peak_gib <= RTX4090_MEMORY_GIB
            projection = f"{video:.0f} s" + ("" if fits else " (>24 GiB)")
        print(f"{row.config.name:48} {row.seconds:8.3f} {row.first_call:8.2f} {vs_bf16:7.3f}x {vs_eager:7.3f}x "
              f"{gib(row.weights_gib):>8} {gib(row.peak_gib):>8} {row.cosine:10.7f} {row.relative_l2:9.2e} "
              f"{projection:>18}")
        for note in row.notes:
            print(f"{'':50}{note}")
    print("peak* = the configuration's own weights + the forward's working memory (other resident models excluded)")
    linear, attention = shape.flops()
    print(f"FLOP model: {linear / 1e12:.4g} TFLOP linears + {attention / 1e12:.4g} TFLOP attention per forward"
          + (f"; bf16 + SDPA ran at {(linear + attention) / bf16.seconds / 1e12:.4g} TFLOPS"
             if bf16 is not None and bf16.status == "ok" else ""))
    if projecting:
        print(f"4090 projection: {VIDEO_STEPS} steps x {RTX4090_BF16_SDPA_S_PER_STEP} s/step (issue 8's bf16 + FA2 "
              f"estimate for this FLOP count) x this GPU's measured ratio to bf16 + SDPA, plus the VAE projection above. "
              "Assumes the ratios carry over from this GPU to Ada (dequantisation is memory-bound and the 4090 has "
              "more bandwidth per FLOP than an H100, so its dequant overhead should be no larger; Sage's gain on "
              "Ada differs from Hopper's); cfg 1 (one forward per step); text and CLIP encoders excluded; "
              ">24 GiB marks a peak that would need offloading on a 24 GB card.")
    else:
        print("4090 projection: n/a (needs the full 14B size on a CUDA GPU, with the bf16 + SDPA row measured)")


def matmul_section(host, shape: Shape, bench: Bench, args) -> None:
    """Q6_K linears at the DiT's shapes, M = tokens: dequant+matmul paths and the fused kernel vs bf16 F.linear."""
    backend = host["backend"]
    dequantize = host["gguf"].dequantize
    device = bench.device
    print(f"\n== Q6_K linears, M = {shape.tokens} tokens, bf16; best of {args.matmul_repeat} ==")
    problem = backend.triton_problem()
    if problem is None:
        triton_matmul = host["import"]("kernels.gguf.triton_matmul")
        triton_dequantize = host["import"]("kernels.gguf.triton_dequantize").triton_dequantize
        configs = ([triton_matmul.MatmulConfig(*c) for c in args.fused_configs] if bench.cuda
                   else [triton_matmul.MatmulConfig(32, 32, 64, 2, 1, 1)])
    else:
        print(f"Triton rows unavailable: {problem}")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    print(f"{'weight [out, in]':18} {'path':46} {'ms':>9} {'TFLOPS':>7} {'vs bf16':>8} {'rel L2':>9}")
    for out_features, in_features in ((shape.dim, shape.dim), (shape.ffn, shape.dim), (shape.dim, shape.ffn)):
        data = random_q6_k((out_features, in_features), 1 / math.sqrt(in_features), gen, device)
        x = torch.randn(shape.tokens, in_features, device=device, generator=gen).to(torch.bfloat16)
        weight = dequantize(data, Q6_K, (out_features, in_features), torch.bfloat16)
        flops = 2 * shape.tokens * out_features * in_features
        paths = {"bf16 F.linear, weight already dequantised": lambda: F.linear(x, weight),
                 "eager torch dequant + F.linear": lambda: F.linear(
                     x, dequantize(data, Q6_K, (out_features, in_features), torch.bfloat16))}
        if problem is None:
            paths["Triton dequant + F.linear"] = lambda: F.linear(
                x, triton_dequantize(data, Q6_K, (out_features, in_features), torch.bfloat16))
            for config in configs:
                label = (f"fused Q6_K matmul {config.block_m}x{config.block_n}x{config.block_k} "
                         f"w{config.num_warps} s{config.num_stages}")
                paths[label] = (lambda c=config: triton_matmul.q6_k_linear(x, data, (out_features, in_features),
                                                                             config=c))
        baseline, reference = None, None
        for label, run in paths.items():
            try:
                _, seconds, out = bench.time(run, args.matmul_repeat)
            except Exception as error:  # e.g. a tile config that does not fit shared memory
                print(f"{'':18} {label:46} failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
                continue
            if baseline is None:
                baseline, reference = seconds, out.float()
            error = compare(out.float(), reference)[1]
            print(f"{str([out_features, in_features]):18} {label:46} {seconds * 1e3:9.3f} "
                  f"{flops / seconds / 1e12:7.1f} {seconds / baseline:7.3f}x {error:9.2e}")
        del data, x, weight
        bench.release()
    if not bench.cuda:
        print("(CPU: the Triton rows ran in Triton's interpreter; their times are not speed figures)")


def random_vae(host, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The host's Wan 2.1 VAE (the config ``comfy.sd.VAE`` uses) with random weights."""
    vae = host["vae"].WanVAE(dim=96, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("gamma"):
                param.fill_(1.0)
            elif param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))
            else:
                param.zero_()
    return vae.to(device, dtype).eval()


def vae_section(host, shape: Shape, bench: Bench) -> Optional[float]:
    """Times Wan VAE encode and decode of the clip; returns encode + decode seconds projected to an RTX 4090."""
    device = bench.device
    dtype = torch.bfloat16 if bench.cuda else torch.float32
    print(f"\n== Wan 2.1 VAE, random weights, {str(dtype).split('.')[-1]}: {shape.frames} frames "
          f"{shape.height}x{shape.width} ==")
    vae = random_vae(host, device, dtype)
    gen = torch.Generator(device=device).manual_seed(2)
    t, h, w = shape.latent
    video = (torch.rand(1, 3, shape.frames, shape.height, shape.width, device=device, generator=gen) * 2 - 1).to(dtype)
    latent = torch.randn(1, LATENT_CHANNELS, t, h, w, device=device, generator=gen).to(dtype)
    with torch.inference_mode():
        vae.decode(latent[:, :, :2, :8, :8])  # warm-up: cuDNN algorithm choice
        totals = {}
        for label, run in (("encode", lambda: vae.encode(video)), ("decode", lambda: vae.decode(latent))):
            bench.reset_peak()
            seconds, _, out = bench.time(run, 0)
            totals[label] = seconds
            print(f"{label}: {seconds:.2f} s, output {tuple(out.shape)}, peak {gib(bench.peak_gib())}")
    del vae
    bench.release()
    gpu = next((name for name in DENSE_BF16_TFLOPS if bench.cuda and name in torch.cuda.get_device_name(device)),
               None)
    if gpu is None or not shape.is_full_14b:
        print("VAE 4090 projection: n/a (needs the full size on an H100/H200)")
        return None
    projected = sum(totals.values()) * DENSE_BF16_TFLOPS[gpu] / RTX4090_DENSE_BF16_TFLOPS
    print(f"VAE 4090 projection: {projected:.1f} s (encode + decode x {gpu}/4090 dense bf16 peak ratio "
          f"{DENSE_BF16_TFLOPS[gpu] / RTX4090_DENSE_BF16_TFLOPS:.1f}; assumes compute-bound convolutions)")
    return projected


def import_host(comfyui: str) -> dict:
    """The host modules and pack modules the benchmark uses, the pack imported as the host would."""
    os.environ["COMFYUI_PATH"] = comfyui
    from tests.support.host_inprocess import import_host as load_host, import_pack_module

    load_host()
    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan
    import comfy.ldm.wan.vae as vae
    import comfy.ops as ops

    return {"wan": wan, "vae": vae, "ops": ops, "attention": attention, "import": import_pack_module,
            "gguf": import_pack_module("kernels.gguf"), "backend": import_pack_module("kernels.gguf.backend"),
            "reader": import_pack_module("kernels.gguf.reader"), "gguf_ops": import_pack_module("nodes.gguf_ops")}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5120)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--ffn", type=int, default=None, help="default: 2.7 x dim in 256-multiples (13824 at 5120)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed DiT forwards after the first, best kept (default 2 on GPU, 1 on CPU)")
    parser.add_argument("--matmul-repeat", type=int, default=None, help="timed calls per linear (10 GPU, 1 CPU)")
    parser.add_argument("--sections", default="matmul,dit,vae")
    parser.add_argument("--configs", nargs="*", default=[], help="run only configurations whose name contains one")
    parser.add_argument("--fused-configs", type=lambda s: tuple(int(v) for v in s.split(",")), nargs="*",
                        default=[(128, 128, 64, 8, 8, 3), (128, 256, 64, 8, 8, 3), (256, 128, 64, 8, 8, 3),
                                 (128, 128, 128, 8, 8, 3), (64, 128, 64, 8, 4, 4)],
                        help="fused kernel tiles block_m,block_n,block_k,group_m,num_warps,num_stages (GPU only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (v0.3.64)")
    args = parser.parse_args()
    if not args.comfyui:
        parser.error("set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout: the benchmark builds the host's WanModel")
    if args.dim % 128 or args.ffn is not None and args.ffn % 256:
        parser.error("--dim must be a multiple of 128 (host: heads = dim // 128), --ffn a multiple of 256 (Q6_K rows)")
    if args.ffn is None:
        args.ffn = round(args.dim * 2.7 / 256) * 256
    cuda = torch.cuda.is_available()
    args.repeat = args.repeat if args.repeat is not None else (2 if cuda else 1)
    args.matmul_repeat = args.matmul_repeat if args.matmul_repeat is not None else (10 if cuda else 1)
    return args


def main() -> None:
    args = parse_args()
    host = import_host(args.comfyui)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bench = Bench(device)
    shape = Shape(args.dim, args.layers, args.ffn, args.frames, args.height, args.width)
    triton_version = metadata.version("triton") if host["backend"].triton_problem() is None else "not importable"
    print(f"device {torch.cuda.get_device_name(device) if bench.cuda else 'CPU'}, torch {torch.__version__}, "
          f"triton {triton_version}" + ("" if bench.cuda else " (interpreter), CPU check: times are not speed figures"))
    sections = set(args.sections.split(","))
    start = time.perf_counter()
    if "matmul" in sections:
        matmul_section(host, shape, bench, args)
    rows = run_dit_section(host, shape, bench, args) if "dit" in sections else []
    vae_seconds = vae_section(host, shape, bench) if "vae" in sections else None
    if rows:
        print_dit_table(rows, shape, bench, vae_seconds)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
