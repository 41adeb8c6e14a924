"""Benchmark: the host's Wan 2.1 VAE (random weights) per precision, our bounded decode, and the encoder cache.

For each of fp16 / bf16 / fp32: the encode of an I2V conditioning clip (start image + gray frames, as
WanImageToVideo builds it), the host's full decode (baseline) and "VAE Decode (bounded memory)" on the same latent,
with time and peak memory (CUDA: ``max_memory_allocated``; CPU: peak live tensor bytes, ``LiveTensorBytes``) and
the memory model's estimate. Then "WanImageToVideo (cached)" on a hit against the host's WanImageToVideo (full
encode). Needs ``COMFYUI_PATH``. On a GPU the default size is 832x480x81; on a CPU it is reduced (fp16
convolutions on a CPU are ~15x slower than fp32).

Usage (from the repository root): COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.vae
    [--width 832 --height 480 --frames 81 --dtypes fp16,bf16,fp32 --repeats 1 --memory]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from tests.support.host_inprocess import import_host, import_pack_module
from tests.support.wan_vae_weights import wan21_vae_state_dict
from wan_accel_kernels.memory_probe import LiveTensorBytes
from wan_accel_kernels.vae.memory_model import fit_decode_model, measure_step_peaks, relative_fit_error

MIB = 1024 ** 2
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def best_time(run: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[float, Any]:
    """Fastest wall time (s) of ``repeats`` calls of ``run`` and the last result."""
    times, result = [], None
    for _ in range(repeats):
        result = None
        sync()
        start = time.perf_counter()
        result = run()
        sync()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(run: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float, Any]:
    """Best wall time (s), peak device bytes above what was allocated before, and the result. On a CPU the peak
    comes from one more call under ``LiveTensorBytes`` (its per-op bookkeeping would skew the timed calls)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds, result = best_time(run, repeats, lambda: torch.cuda.synchronize(device))
        return seconds, torch.cuda.max_memory_allocated(device) - base, result
    seconds, result = best_time(run, repeats)
    del result
    with LiveTensorBytes() as live:
        result = run()
    return seconds, live.peak, result


def conditioning_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """Start image then gray frames, [frames, H, W, 3] in [0, 1], the clip WanImageToVideo encodes."""
    clip = torch.full((frames, height, width, 3), 0.5)
    clip[0] = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(0))
    return clip


def bench_precisions(args: argparse.Namespace, state_dict: dict, decode: Any) -> None:
    """Encode / host decode / bounded decode per precision, with the memory model's estimate."""
    import comfy.sd

    clip = conditioning_clip(args.frames, args.height, args.width)
    print(f"\n## Wan 2.1 VAE, {args.width}x{args.height}x{args.frames}\n")
    print("| dtype | encode s | encode peak MiB | host decode s | host decode peak MiB | bounded decode s "
          "| bounded peak MiB | model estimate MiB | time ratio host/bounded | peak ratio host/bounded | "
          "bit-identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        vae = comfy.sd.VAE(sd=dict(state_dict), dtype=DTYPES[name])
        device = torch.device(vae.device)
        with torch.inference_mode():
            vae.encode(clip[:1])  # load the weights and warm the kernels up
            encode_s, encode_peak, latent = measure(lambda: vae.encode(clip), device, args.repeats)
            host_s, host_peak, host_images = measure(lambda: vae.decode(latent), device, args.repeats)
            ours_s, ours_peak, (ours_images, _) = measure(lambda: decode.decode_bounded(vae, latent), device,
                                                          args.repeats)
        weights = decode.weight_bytes(vae.first_stage_model, DTYPES[name])
        estimate = decode.WAN21_DECODE.activation_bytes(args.height, args.width, DTYPES[name].itemsize)
        identical = torch.equal(host_images.reshape(ours_images.shape), ours_images)
        print(f"| {name} | {encode_s:.2f} | {encode_peak / MIB:.1f} | {host_s:.2f} | {host_peak / MIB:.1f} | "
              f"{ours_s:.2f} | {ours_peak / MIB:.1f} | {estimate / MIB:.1f} (+{weights / MIB:.0f} weights) | "
              f"{host_s / ours_s:.2f} | {host_peak / max(ours_peak, 1):.2f} | {identical} |")
        del vae, latent, host_images, ours_images


def bench_cache(args: argparse.Namespace, state_dict: dict, cache_nodes: Any) -> None:
    """WanImageToVideo (cached) on a hit against the host's WanImageToVideo, same inputs."""
    import comfy.sd
    import folder_paths
    from comfy_extras.nodes_wan import WanImageToVideo

    vae = comfy.sd.VAE(sd=dict(state_dict), dtype=DTYPES[args.cache_dtype])
    start_image = conditioning_clip(1, args.height, args.width)
    inputs = dict(positive=[[torch.zeros(1, 3, 4096), {}]], negative=[[torch.zeros(1, 3, 4096), {}]], vae=vae,
                  width=args.width, height=args.height, length=args.frames, batch_size=1, start_image=start_image)
    with tempfile.TemporaryDirectory() as user, torch.inference_mode():
        folder_paths.set_user_directory(user)
        WanImageToVideo.execute(**{**inputs, "length": 1})  # weights loaded, kernels warm
        start = time.perf_counter()
        cache_nodes.vae_identity(vae)
        digest_s = time.perf_counter() - start
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        full_s, _ = best_time(lambda: WanImageToVideo.execute(**inputs), args.repeats, sync)
        miss_s, _ = best_time(lambda: cache_nodes.WanImageToVideoCached.execute(**inputs), 1, sync)
        hit_s, hit = best_time(lambda: cache_nodes.WanImageToVideoCached.execute(**inputs), args.repeats, sync)
    print(f"\n## Encoder cache, WanImageToVideo {args.width}x{args.height}x{args.frames}, VAE {args.cache_dtype}\n")
    print("| host WanImageToVideo (full encode) s | cached node, miss (encode + store) s | cached node, hit s | "
          "speed-up hit vs full | VAE weights digest, once per VAE object s |")
    print("|---|---|---|---|---|")
    print(f"| {full_s:.3f} | {miss_s:.3f} | {hit_s:.3f} | {full_s / hit_s:.1f}x | {digest_s:.3f} |")
    print(f"hit node says: {hit.ui.as_dict()['text'][0]}")


class _InstantEncodeVAE:
    """A host VAE whose encode returns zeros at once: fills the cache so a hit can be timed at any size."""

    def __init__(self, vae: Any):
        self._vae = vae

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames, height, width = pixels.shape[0], pixels.shape[1] // 8, pixels.shape[2] // 8
        return torch.zeros(1, 16, (frames - 1) // 4 + 1, height, width)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vae, name)


def bench_hit_overhead(args: argparse.Namespace, state_dict: dict, cache_nodes: Any) -> None:
    """What a hit still costs at 832x480x81 (digest of the start image, the host building the gray clip, reading
    the entry); the full encode it replaces is timed by the table above on a GPU."""
    import comfy.sd
    import folder_paths

    width, height, frames = 832, 480, 81
    vae = _InstantEncodeVAE(comfy.sd.VAE(sd=dict(state_dict), dtype=DTYPES[args.cache_dtype]))
    inputs = dict(positive=[[torch.zeros(1, 3, 4096), {}]], negative=[[torch.zeros(1, 3, 4096), {}]], vae=vae,
                  width=width, height=height, length=frames, batch_size=1,
                  start_image=conditioning_clip(1, height, width))
    with tempfile.TemporaryDirectory() as user, torch.inference_mode():
        folder_paths.set_user_directory(user)
        cache_nodes.WanImageToVideoCached.execute(**inputs)
        hit_s, hit = best_time(lambda: cache_nodes.WanImageToVideoCached.execute(**inputs), args.repeats)
    print(f"\nhit at {width}x{height}x{frames}: {hit_s:.3f} s ({hit.ui.as_dict()['text'][0]})")


def bench_memory_model(state_dict: dict, decode: Any) -> None:
    """Re-measures the steady-state decode step at small sizes and fits the per-pixel model (CPU, bf16)."""
    import comfy.sd

    vae = comfy.sd.VAE(sd=dict(state_dict), dtype=torch.bfloat16, device=torch.device("cpu"))
    frames = decode.WanFrameDecoder(vae.first_stage_model, torch.device("cpu"), torch.bfloat16)
    samples = []
    with torch.inference_mode():
        for height, width in [(2, 2), (4, 4), (4, 8), (8, 8)]:
            peaks = measure_step_peaks(frames, torch.randn(1, 16, 3, height, width))
            samples.append((height * 8, width * 8, max(peaks) / 2))
    fitted = fit_decode_model(samples)
    print(f"\n## Memory model refit: per_pixel {fitted.per_pixel:.1f}, fixed {fitted.fixed:.0f} elements "
          f"(stored: {decode.WAN21_DECODE.per_pixel:.1f}, {decode.WAN21_DECODE.fixed:.0f}); fit error "
          f"{relative_fit_error(fitted, samples):.2%}")


def main() -> None:
    """Runs the precision table, the cache comparison and (with --memory) the memory-model refit."""
    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=832 if on_gpu else 16)
    parser.add_argument("--height", type=int, default=480 if on_gpu else 16)
    parser.add_argument("--frames", type=int, default=81 if on_gpu else 5)
    parser.add_argument("--dtypes", default="fp16,bf16,fp32")
    parser.add_argument("--cache-dtype", default="fp16" if on_gpu else "fp32", choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="also refit the memory model (CPU, a few minutes)")
    args = parser.parse_args()

    import_host()
    decode = import_pack_module("nodes.vae_decode")
    cache_nodes = import_pack_module("nodes.image_encoder_cache")
    state_dict = wan21_vae_state_dict()
    device = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}; torch {torch.__version__}")
    bench_precisions(args, state_dict, decode)
    bench_cache(args, state_dict, cache_nodes)
    bench_hit_overhead(args, state_dict, cache_nodes)
    if args.memory:
        bench_memory_model(state_dict, decode)


if __name__ == "__main__":
    main()
