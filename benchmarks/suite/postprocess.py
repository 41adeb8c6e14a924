"""GPU-suite section 5: the Texture & Colour post-process of the clip on the CPU against the GPU: frames resident
on the GPU, and frames arriving on the CPU (the host's intermediate device) moved to the GPU chunk by chunk and back,
which is what the node's ``device: auto`` does."""
from __future__ import annotations

import time

import torch

from benchmarks.lib.dtypes import dtype_name
from benchmarks.lib.synthetic_video import synthetic_video
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult
from wan_accel_kernels.postprocess import DEFAULT_CHUNK_FRAMES, enhance_video

GPU_CHUNK_FRAMES = 16


def _best(run, repeat: int, sync) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeat`` calls after one warm-up, and the last result."""
    out = run()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(ctx: SuiteContext) -> SectionResult:
    """Seconds and frames/s of each placement, the ratio to the CPU and the largest difference from it."""
    shape = ctx.shape
    video = synthetic_video(shape.frames, shape.height, shape.width)
    sync = (lambda: torch.cuda.synchronize(ctx.device)) if ctx.cuda else (lambda: None)
    repeat = max(ctx.args.repeat, 1)
    placements = {
        "CPU frames, CPU compute": (lambda: enhance_video(video, chunk_frames=DEFAULT_CHUNK_FRAMES), 1),
        f"{ctx.device.type} frames, {ctx.device.type} compute": (
            lambda: enhance_video(resident, chunk_frames=GPU_CHUNK_FRAMES), repeat),
        f"CPU frames, {ctx.device.type} compute in chunks (node device auto)": (
            lambda: enhance_video(video, chunk_frames=GPU_CHUNK_FRAMES, compute_device=ctx.device), repeat),
    }
    resident = video.to(ctx.device)
    rows, reference = [], None
    for label, (call, times) in placements.items():
        seconds, out = _best(call, times, sync)
        out = out.cpu()
        reference = out if reference is None else reference
        rows.append({"placement": label, "dtype": dtype_name(out.dtype), "seconds": seconds,
                     "frames_per_s": shape.frames / seconds,
                     "vs_cpu": rows[0]["seconds"] / seconds if rows else 1.0,
                     "max_abs_diff_vs_cpu": float((out - reference).abs().max())})
    return SectionResult(rows=rows, notes=[
        f"{shape.frames} frames {shape.width}x{shape.height}, default parameters; chunk {DEFAULT_CHUNK_FRAMES} frames "
        f"on the CPU, {GPU_CHUNK_FRAMES} on the device; best of {repeat} after a warm-up (CPU: one timed call)"])


SECTION = Section("postprocess", "Post-process on the GPU vs the CPU", lambda ctx: ctx.full_or_dry(40, 5), run)
