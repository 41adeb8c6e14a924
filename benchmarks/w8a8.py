"""Error and speed of W8A8 linears at the Wan 2.1 14B block shapes, beside the winner's Q6_K dequant + bf16.

Fidelity (CPU or GPU): relative L2 and cosine against float32 ``x @ w^T`` on DiT-like inputs (a few channels
20-50x the rest; post-GELU for the FFN down projection), see ``benchmarks/lib/w8a8_compare.py``. Speed: best-of-N wall
time of each linear at ``--tokens`` tokens (32,760 = 832x480x81 on CUDA by default) for bf16 ``F.linear`` on
pre-dequantised weights (the baseline), Q6_K dequant + bf16, int8 W8A8 (activation quantisation included) and
fp8 W8A8, all in one run, with the baseline's time divided by each row's.

Usage: python -m benchmarks.w8a8 [--tokens 512] [--repeat 3] [--fidelity-tokens 512] [--skip-fidelity] [--skip-speed]
"""
import argparse

import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType

from benchmarks.dequant import random_blocks
from benchmarks.lib.timing import best_time
from benchmarks.lib.w8a8_compare import WAN_LINEARS, wan_layer_errors
from wan_accel_kernels.gguf.backend import dequantize_on_device
from wan_accel_kernels.w8a8 import default_method, linear, matmul_support, quantize_weight
from wan_accel_kernels.w8a8.formats import quantize_rows
from wan_accel_kernels.w8a8.matmul import int8_matmul

Q6_K = GGMLQuantizationType.Q6_K
CUDA_TOKENS, CPU_TOKENS = 32760, 512


def print_fidelity(tokens: int) -> None:
    """The per-layer error table, each row's relative L2 also as a multiple of Q6_K's on the same layer."""
    rows = wan_layer_errors(tokens)
    q6k = {row.layer: row.relative_l2 for row in rows if row.path.startswith("Q6_K")}
    print(f"\nFidelity vs float32 x @ w^T, {tokens} tokens, Laplace(0, 0.02) weights, bf16 inputs")
    print(f"{'layer':26} {'path':40} {'rel L2':>8} {'cosine':>9} {'/ Q6_K':>7}")
    for row in rows:
        print(f"{row.layer:26} {row.path:40} {row.relative_l2:8.5f} {row.cosine:9.6f} "
              f"{row.relative_l2 / q6k[row.layer]:6.2f}x")


def _timings(k: int, n: int, tokens: int, repeat: int, device: torch.device) -> dict[str, float | str]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
    w = (torch.randn(n, k, device=device) * 0.02).to(torch.bfloat16)
    raw = torch.from_numpy(random_blocks(Q6_K, n * k)).reshape(-1).to(device)
    int8 = quantize_weight(w, "int8")
    qx, sx = quantize_rows(x, "int8")
    time = lambda run: best_time(run, repeat, sync)  # noqa: E731
    out: dict[str, float | str] = {
        "bf16 F.linear (baseline)": time(lambda: F.linear(x, w)),
        "Q6_K dequant + bf16 (winner)": time(lambda: F.linear(x, dequantize_on_device(raw, Q6_K, (n, k),
                                                                                     torch.bfloat16))),
        f"int8 W8A8 ({default_method('int8')}, centred)": time(lambda: linear(x, int8)),
        "int8 _int_mm + epilogue only": time(lambda: int8_matmul(qx, sx, int8.data, int8.scale)),
        "int8 requantised per call from Q6_K": time(lambda: linear(x, quantize_weight(
            dequantize_on_device(raw, Q6_K, (n, k), torch.bfloat16), "int8"))),
    }
    fp8 = matmul_support(device, "fp8")
    label = f"fp8 W8A8 ({default_method('fp8')}, centred)"
    if fp8.native:
        fp8_weight = quantize_weight(w, "fp8")
        out[label] = time(lambda: linear(x, fp8_weight))
    else:
        out[label] = f"unavailable: {fp8.reason}"
    return out


def print_speed(tokens: int, repeat: int, device: torch.device) -> None:
    """Each Wan block linear shape timed on every path, with the bf16 baseline's time over each path's."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nSpeed: {tokens} tokens, best of {repeat}, {name}, torch {torch.__version__}")
    print(f"{'layer':26} {'path':38} {'ms':>10} {'speed-up':>9}")
    for layer, k, n, _ in WAN_LINEARS:
        results = _timings(k, n, tokens, repeat, device)
        baseline = results["bf16 F.linear (baseline)"]
        for path, seconds in results.items():
            if isinstance(seconds, str):
                print(f"{layer:26} {path:38} {seconds}")
            else:
                print(f"{layer:26} {path:38} {seconds * 1e3:10.2f} {baseline / seconds:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=None,
                        help=f"tokens per timed linear (default {CUDA_TOKENS} on CUDA, {CPU_TOKENS} on CPU)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--fidelity-tokens", type=int, default=512, help="tokens of the fidelity inputs")
    parser.add_argument("--skip-fidelity", action="store_true", help="only the speed table")
    parser.add_argument("--skip-speed", action="store_true", help="only the fidelity table")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.skip_fidelity:
        print_fidelity(args.fidelity_tokens)
    if not args.skip_speed:
        print_speed(args.tokens or (CUDA_TOKENS if device.type == "cuda" else CPU_TOKENS), args.repeat, device)


if __name__ == "__main__":
    main()
