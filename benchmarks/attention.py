"""Times every available attention backend (TOPS, ratio to SDPA measured in the same run) and its error against
float32 SDPA (cosine similarity, relative L1).

Usage: python -m benchmarks.attention [--shapes small,wan14b] [--dtypes bf16,fp16] [--repeat 10]
Shapes are names (tiny 1x4x1024x128, small 1x40x8190x128, wan14b 1x40x32760x128: Wan 2.1 14B at 832x480, 81
frames) or BxHxNxD. Defaults: on CUDA small,wan14b in bf16 and fp16; on CPU tiny in fp32 and bf16 (SDPA only:
sage needs CUDA, and the script says why it is unavailable).
"""
import argparse
import statistics
import time
from typing import Callable

import torch

from benchmarks.lib.attention_compare import compare, decide, run_backend
from wan_accel_kernels.attention import BACKENDS, SDPA, probe_sage
from wan_accel_kernels.attention.dispatch import SAGE, SageInstall, sm_name
from wan_accel_kernels.attention.nan_guard import GuardCounts, guarded

SHAPES = {"tiny": (1, 4, 1024, 128), "small": (1, 40, 8190, 128), "wan14b": (1, 40, 32760, 128)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_shape(text: str) -> tuple:
    """A named shape or "BxHxNxD"."""
    return SHAPES[text] if text in SHAPES else tuple(int(n) for n in text.lower().split("x"))


def median_seconds(run: Callable[[], object], repeat: int, cuda: bool) -> float:
    """Median time of ``repeat`` calls after two warm-ups (CUDA events on a GPU)."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start_time = time.perf_counter()
            run()
            times.append(time.perf_counter() - start_time)
    return statistics.median(times)


def attention_flops(shape: tuple) -> float:
    """Multiply-adds of QK^T and PV, counted as 2 operations each: 4 * B * H * N * N * D."""
    batch, heads, tokens, head_dim = shape
    return 4.0 * batch * heads * tokens * tokens * head_dim


def measure_backends(shape: tuple, dtype: torch.dtype, sage: SageInstall, device: torch.device,
                     repeat: int) -> list[dict]:
    """One row per attention backend at this shape and dtype: {backend, kind, status, ms, tops, vs_sdpa, cosine,
    rel_l1}; ``kind`` is "sdpa" or "sage", and backends that cannot run here get their reason as status."""
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3))
    cuda = device.type == "cuda"
    baseline = None
    rows: list[dict] = []
    unavailable: dict = {}
    sage_backends = (*BACKENDS[1:-1], "auto+guard")
    for backend in (SDPA, *sage_backends):
        decision = decide(backend.replace("+guard", ""), q, k, v, sage)
        if backend != SDPA and decision.backend != SAGE:
            unavailable.setdefault(decision.reason, []).append(backend)
            continue

        def run(decision=decision) -> torch.Tensor:
            return run_backend(decision, q, k, v, sage)

        def run_guarded(run=run, exact=decide(SDPA, q, k, v, sage), counts=GuardCounts()) -> torch.Tensor:
            return guarded(run, lambda: run_backend(exact, q, k, v, sage), counts)

        seconds = median_seconds(run_guarded if backend == "auto+guard" else run, repeat, cuda)
        baseline = seconds if backend == SDPA else baseline
        error = compare(backend.replace("+guard", ""), q, k, v, sage)
        label = f"{decision.label} + NaN guard" if backend == "auto+guard" else decision.label
        rows.append({"backend": label, "kind": SDPA if backend == SDPA else SAGE, "status": "ok",
                     "ms": seconds * 1e3, "tops": attention_flops(shape) / seconds / 1e12,
                     "vs_sdpa": baseline / seconds, "cosine": error.cosine, "rel_l1": error.relative_l1})
    for reason, backends in unavailable.items():
        names = "sage" if len(backends) == len(sage_backends) else ", ".join(backends)
        rows.append({"backend": names, "kind": SAGE, "status": f"unavailable: {reason}"})
    return rows


def bench_one(shape: tuple, dtype: torch.dtype, sage: SageInstall, device: torch.device, repeat: int) -> None:
    """Prints one table: each backend that runs at this shape and dtype, with time, TOPS, ratio and error."""
    print(f"\nshape {'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')}")
    print(f"  {'backend':34s} {'ms':>9s} {'TOPS':>8s} {'vs sdpa':>8s} {'cosine':>9s} {'rel L1':>9s}")
    for row in measure_backends(shape, dtype, sage, device, repeat):
        if row["status"] != "ok":
            print(f"  {row['backend']} {row['status']}")
            continue
        print(f"  {row['backend']:34s} {row['ms']:9.3f} {row['tops']:8.2f} {row['vs_sdpa']:7.2f}x "
              f"{row['cosine']:9.6f} {row['rel_l1']:9.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", help="comma-separated names or BxHxNxD (default: per device, see above)")
    parser.add_argument("--dtypes", help=f"comma-separated, from {','.join(DTYPES)}")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per backend (median is kept)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shapes = args.shapes or ("small,wan14b" if cuda else "tiny")
    dtypes = args.dtypes or ("bf16,fp16" if cuda else "fp32,bf16")
    sage = probe_sage()
    where = (f"{torch.cuda.get_device_name()} ({sm_name(torch.cuda.get_device_capability())})" if cuda
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"{where}, torch {torch.__version__}, {sage.describe()}; median of {args.repeat}; "
          f"error vs float32 SDPA of the same inputs")
    for shape in (parse_shape(s) for s in shapes.split(",")):
        for dtype in (DTYPES[d] for d in dtypes.split(",")):
            bench_one(shape, dtype, sage, device, args.repeat)


if __name__ == "__main__":
    main()
