"""GPU-suite section 4: the host's Wan 2.1 VAE with random weights at the clip size, per precision: encode, the
host's own decode and our exact frame-by-frame decode, each timed after a warm-up at full size, with peak VRAM
against our memory model's estimate of the frame-by-frame decode."""
from __future__ import annotations

import math

import torch

from benchmarks.lib.dtypes import dtype_name
from benchmarks.lib.wan14b_models import LATENT_CHANNELS, Bench, Shape
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult
from wan_accel_kernels.vae import WAN21_DECODE, decode_frame_by_frame
from wan_accel_kernels.vae.chunked_decode import one_frame_at_a_time

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class HostWanFrames:
    """The host's ``WanVAE`` as a ``wan_accel_kernels.vae.CausalFrameDecoder``, on the schedule ``WanVAE.decode`` uses.
    (``nodes/vae_decode.py`` has the node's adapter, but importing it pulls in ``comfy.sd`` and the front-end API,
    which a bare GPU image lacks; this follows the same host facts: ComfyUI 0.33's decoder takes the first latent
    frame then pairs and returns a list of chunks, 0.3.64's one frame at a time.)"""

    def __init__(self, host, model: torch.nn.Module):
        self.host, self.model = host, model
        self.pairs = hasattr(host["vae"].Decoder3d, "run_up")

    def prepare(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.conv2(latent)

    def new_cache(self) -> list:
        counter = getattr(self.host["vae"], "count_cache_layers", None) or self.host["vae"].count_conv3d
        return [None] * counter(self.model.decoder)

    def schedule(self, num_frames: int) -> list[tuple[int, int]]:
        if not self.pairs:
            return one_frame_at_a_time(num_frames)
        return [(0, 1)] + [(start, min(start + 2, num_frames)) for start in range(1, num_frames, 2)]

    def decode_step(self, frames: torch.Tensor, cache: list) -> torch.Tensor:
        out = self.model.decoder(frames, feat_cache=cache, feat_idx=[0])
        return torch.cat(out, 2) if isinstance(out, list) else out


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


def measure_vae(host, shape: Shape, bench: Bench, dtype: torch.dtype, warm_up: bool = True) -> list[dict]:
    """Rows {operation, seconds, peak_gib, estimate_gib, output} for encode, host decode and frame-by-frame decode
    at ``shape``'s clip size in ``dtype``, after one untimed encode and decode of the full clip (``warm_up``: on a
    GPU, where cuDNN picks its algorithms on first use)."""
    device = bench.device
    vae = random_vae(host, device, dtype)
    gen = torch.Generator(device=device).manual_seed(2)
    t, h, w = shape.latent
    video = (torch.rand(1, 3, shape.frames, shape.height, shape.width, device=device, generator=gen) * 2 - 1).to(dtype)
    latent = torch.randn(1, LATENT_CHANNELS, t, h, w, device=device, generator=gen).to(dtype)
    estimate = WAN21_DECODE.activation_bytes(shape.height, shape.width, dtype.itemsize) / 2**30
    operations = {"encode": lambda: vae.encode(video), "host decode": lambda: vae.decode(latent),
                  "frame-by-frame decode": lambda: decode_frame_by_frame(HostWanFrames(host, vae), latent,
                                                                         output_device=device)}
    rows, outputs = [], {}
    with torch.inference_mode():
        if warm_up:  # at full size: cuDNN algorithm choice for every layer's real shape
            vae.encode(video)
            vae.decode(latent)
        for label, run in operations.items():
            before = bench.allocated_gib()
            bench.reset_peak()
            _, seconds, out = bench.time(run, 0)
            outputs[label] = out
            rows.append({"operation": label, "seconds": seconds, "peak_gib": bench.peak_gib() - before,
                         "estimate_gib": estimate if label == "frame-by-frame decode" else math.nan,
                         "output": "x".join(map(str, out.shape))})
    exact = outputs["frame-by-frame decode"].float()
    host_decode = outputs["host decode"].float()
    rows[-1]["bit_identical_to_host"] = bool(torch.equal(exact, host_decode))
    del vae, video, latent, outputs
    bench.release()
    return rows


def run(ctx: SuiteContext) -> SectionResult:
    """Both precisions (the CPU dry run: fp16's rows computed in fp32); stores encode + host decode seconds per
    measured precision for the projection."""
    missing = ctx.missing_host()
    if missing is not None:
        return missing
    rows, seconds = [], {}
    wanted = dict(list(DTYPES.items())[:1]) if ctx.cpu_fp32 else DTYPES  # fp32 twice would measure the same thing
    for name, wanted_dtype in wanted.items():
        dtype = ctx.dtype(wanted_dtype)
        measured = measure_vae(ctx.host, ctx.shape, ctx.bench, dtype, warm_up=ctx.cuda)
        rows += [{"measures": name, "dtype": dtype_name(dtype), **row} for row in measured]
        seconds[name] = sum(r["seconds"] for r in measured if r["operation"] in ("encode", "host decode"))
    ctx.measured["vae_s"] = seconds
    dry = ["CPU dry run: the fp16 rows computed in fp32 (half-precision 3-D convolutions crawl on a CPU); bf16 not "
           "run"] if ctx.cpu_fp32 else []
    return SectionResult(rows=rows, notes=[*dry,
        f"{ctx.shape.frames} frames {ctx.shape.width}x{ctx.shape.height}, random weights, timed after a full-size "
        "warm-up (CPU: none); peak_gib = working memory above the resident weights and inputs; estimate_gib = the "
        "memory model's (wan_accel_kernels/vae/memory_model.py) working-memory estimate for the frame-by-frame decode"])


SECTION = Section("vae", "Wan 2.1 VAE, fp16 and bf16 (CPU dry run: fp32)", lambda ctx: ctx.full_or_dry(110, 10), run)
