"""Wan 2.1 14B I2V: one DiT forward at 832x480x81 with random Q6_K weights in every configuration, its Q6_K linears,
and the VAE, printed as tables with a projected RTX 4090 range.

Builds the host's own ``WanModel`` (ComfyUI at ``COMFYUI_PATH``) at the true I2V 14B configuration (16.4 B
parameters: 30.5 GiB bf16, 12.5 GiB Q6_K) with random *valid* Q6_K blocks (speed does not depend on the values):

* ``matmul``: Q6_K linears at Wan shapes, M = tokens (``wan14b_matmul.py``).
* ``dit``: s/step of one forward (cfg 1) per configuration of ``wan14b_dit.py``: host bf16 + SDPA (baseline), the
  ComfyUI-GGUF style fp16 dequant (eager and compiled), our exact torch dequant, our Triton dequant, + Sage,
  + torch.compile, W8A8 where ``wan_accel_kernels.w8a8`` exists; ratios, memory, cosine / relative L2 against bf16 + SDPA.
* ``vae``: the Wan 2.1 VAE encode and decode of the clip (``suite_vae.py``), after a full-size warm-up.

``gpu_suite.py`` runs all of this and more within a time budget, writes JSON and markdown, and projects an RTX 4090
range (``projection_4090.py``: linears, attention and the memory-bound rest scaled separately).

GPU, full size:  COMFYUI_PATH=/path/to/ComfyUI python benchmarks/wan14b_step.py
CPU check:       COMFYUI_PATH=/path/to/ComfyUI python benchmarks/wan14b_step.py --dim 256 --layers 2 --frames 5 \
                     --height 64 --width 64
On a CPU every part computes in fp32 (half precision crawls there; the check is of the code, not of speed).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCHMARKS.parent), str(BENCHMARKS)]

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU check: Triton kernels run in the interpreter

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

from suite_host import load_host  # noqa: E402
from suite_vae import measure_vae  # noqa: E402
from wan14b_dit import Row, run_dit_section  # noqa: E402
from wan14b_matmul import linear_seconds, run_matmul_section  # noqa: E402
from wan14b_models import Bench, Shape, count_parameters, gib, weight_gib  # noqa: E402


def print_matmul(rows: list[dict], bench: Bench) -> None:
    print(f"{'weight [out, in]':18} {'path':62} {'dtype':>5} {'ms':>9} {'TFLOPS':>7} {'vs base':>8} {'rel L2':>9}")
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['weight']:18} {row['path']:62} {row['status']}")
            continue
        print(f"{row['weight']:18} {row['path']:62} {row['dtype']:>5} {row['ms']:9.3f} {row['tflops']:7.1f} "
              f"{row['vs_bf16']:7.3f}x {row['rel_l2']:9.2e}")
    if not bench.cuda:
        print("(CPU: the Triton rows ran in Triton's interpreter; their times are not speed figures)")


def print_dit_table(rows: list[Row]) -> None:
    """The s/step table with ratios to bf16 + SDPA, memory and errors."""
    bf16 = rows[0] if rows and rows[0].status == "ok" and rows[0].config.model == "bf16" else None
    print(f"\n{'configuration':46} {'s/step':>8} {'1st call':>8} {'vs bf16':>8} {'weights':>8} {'peak*':>8} "
          f"{'cosine':>10} {'rel L2':>9}")
    for row in rows:
        if row.status != "ok":
            print(f"{row.config.name:46} {row.status}")
            continue
        vs_bf16 = row.seconds / bf16.seconds if bf16 is not None else math.nan
        print(f"{row.config.name:46} {row.seconds:8.3f} {row.first_call:8.2f} {vs_bf16:7.3f}x "
              f"{gib(row.weights_gib):>8} {gib(row.peak_gib):>8} {row.cosine:10.7f} {row.relative_l2:9.2e}")
        for note in row.notes:
            print(f"{'':48}{note}")
    print("peak* = the configuration's own weights + the forward's working memory (other resident models excluded)")
    print("RTX 4090 projection: run benchmarks/gpu_suite.py, which also measures attention at this shape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5120)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--ffn", type=int, default=None, help="default: 2.7 x dim in 256-multiples (13824 at 5120)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeat", type=int, default=None, help="timed DiT forwards after the first (2 GPU, 1 CPU)")
    parser.add_argument("--matmul-repeat", type=int, default=None, help="timed calls per linear (10 GPU, 1 CPU)")
    parser.add_argument("--sections", default="matmul,dit,vae")
    parser.add_argument("--configs", nargs="*", default=[], help="run only configurations whose name contains one")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (v0.3.64)")
    args = parser.parse_args()
    if args.dim % 128 or args.ffn is not None and args.ffn % 256:
        parser.error("--dim must be a multiple of 128 (host: heads = dim // 128), --ffn a multiple of 256 (Q6_K rows)")
    args.ffn = args.ffn if args.ffn is not None else round(args.dim * 2.7 / 256) * 256
    cuda = torch.cuda.is_available()
    args.repeat = args.repeat if args.repeat is not None else (2 if cuda else 1)
    args.matmul_repeat = args.matmul_repeat if args.matmul_repeat is not None else (10 if cuda else 1)
    host, reason = load_host(args.comfyui)
    if host is None:
        parser.error(reason)
    device = torch.device("cuda" if cuda else "cpu")
    args.dtype = torch.bfloat16 if cuda else torch.float32
    bench = Bench(device)
    shape = Shape(args.dim, args.layers, args.ffn, args.frames, args.height, args.width)
    bf16_gib, q6_k_gib = weight_gib(count_parameters(host, shape))
    print(f"device {torch.cuda.get_device_name(device) if cuda else 'CPU'}, torch {torch.__version__}"
          + ("" if cuda else " (CPU check: times are not speed figures)")
          + f"; model {bf16_gib:.1f} GiB bf16, {q6_k_gib:.1f} GiB Q6_K")
    sections = set(args.sections.split(","))
    start = time.perf_counter()
    if "matmul" in sections:
        print(f"\n== Q6_K and W8A8 linears, M = {shape.tokens} tokens; best of {args.matmul_repeat} ==")
        matmul_rows = run_matmul_section(host, shape, bench, args.matmul_repeat, args.seed, dtype=args.dtype)
        print_matmul(matmul_rows, bench)
        for arithmetic, seconds in linear_seconds(matmul_rows, shape).items():
            print(f"per forward the per-token {arithmetic} matmuls take {seconds:.4g} s")
    rows = []
    if "dit" in sections:
        print("\n== DiT forward ==")
        args.forward_s, args.compile_s = 0.0, 0.0
        rows = run_dit_section(host, shape, bench, args)
    if "vae" in sections:
        print(f"\n== Wan 2.1 VAE, random weights: {shape.frames} frames {shape.height}x{shape.width} ==")
        for dtype in (torch.float16, torch.bfloat16) if cuda else (torch.float32,):
            name = str(dtype).removeprefix("torch.")
            for row in measure_vae(host, shape, bench, dtype):
                print(f"{name} {row['operation']:22} {row['seconds']:8.2f} s  peak {gib(row['peak_gib'])}  "
                      f"output {row['output']}")
    if rows:
        print_dit_table(rows)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
