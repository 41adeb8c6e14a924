"""umt5-xxl Linear layers with fp8 storage vs the host's bf16 storage, and a prompt-cache hit vs a full encode.

For each umt5-xxl Linear shape (q/k/v/o 4096x4096, wi_0/wi_1 10240x4096, wo 4096x10240) it times, best of N:
the host's path for a bf16 file (bf16 weight cast per forward to the activation dtype, fp32, then matmul: what
``comfy.ops.manual_cast`` does for umt5, whose activations the host keeps in fp32) and ours (fp8 weight cast
to the compute dtype, bf16 on a GPU, fp32 on CPU, matmul, per-row scale on the output). Per-encode times are
extrapolated to the 24 blocks of umt5-xxl. Then it times a prompt-cache hit (read + decode of a
[1, 512, 4096] fp32 conditioning from disk) and prints it against the extrapolated fp8 encode.

Usage: python -m benchmarks.text_encoder [--tokens 512] [--repeat 3] [--device cpu|cuda]
"""
import argparse
import tempfile

import torch

from benchmarks.lib.timing import best_time
from wan_accel_kernels.fp8 import compute_dtype_for, quantize, scaled_linear
from wan_accel_kernels.prompt_cache import PromptCacheStore, decode_conditioning, encode_conditioning

UMT5_XXL_LINEARS = {"q/k/v/o 4096x4096": ((4096, 4096), 4), "wi_0/wi_1 10240x4096": ((10240, 4096), 2),
                    "wo 4096x10240": ((4096, 10240), 1)}
BLOCKS = 24


def measure_linears(device: torch.device, tokens: int, repeat: int, width_divisor: int = 1) -> list[dict]:
    """Per umt5-xxl Linear shape (widths divided by ``width_divisor``, 1 = the real model): best-of-``repeat`` ms of
    the host's bf16 path and of our fp8 one, the weight bytes of each, and how many such layers a block
    (``per_block``) and an encode (``per_encode``) hold."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.randn(1, tokens, 4096 // width_divisor, device=device)
    rows = []
    for name, ((out_f, in_f), per_block) in UMT5_XXL_LINEARS.items():
        out_f, in_f = out_f // width_divisor, in_f // width_divisor
        weight = torch.randn(out_f, in_f, device=device) * in_f ** -0.5
        bf16 = weight.to(torch.bfloat16)
        q, scale = quantize(weight, "per_row")
        del weight
        inputs = x if in_f == x.shape[-1] else torch.randn(1, tokens, in_f, device=device)
        host = best_time(lambda: torch.nn.functional.linear(inputs, bf16.to(inputs.dtype)), repeat, sync)
        ours = best_time(lambda: scaled_linear(inputs, q, scale), repeat, sync)
        rows.append({"linear": name, "host_bf16_ms": host * 1e3, "fp8_ms": ours * 1e3, "bf16_bytes": bf16.nbytes,
                     "fp8_bytes": q.nbytes + scale.nbytes, "per_block": per_block, "per_encode": per_block * BLOCKS})
        del bf16, q, scale, inputs
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="tokens per encode (the host pads umt5 to 512)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    compute = compute_dtype_for(device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)")
          + f", torch {torch.__version__}, {args.tokens} tokens, fp8 compute {str(compute).removeprefix('torch.')}, "
          f"best of {args.repeat}")
    rows = measure_linears(device, args.tokens, args.repeat)
    totals = {"host bf16": sum(r["host_bf16_ms"] * r["per_encode"] for r in rows) / 1e3,
              "fp8": sum(r["fp8_ms"] * r["per_encode"] for r in rows) / 1e3}
    bytes_bf16 = sum(r["bf16_bytes"] * r["per_block"] for r in rows)
    bytes_fp8 = sum(r["fp8_bytes"] * r["per_block"] for r in rows)
    for row in rows:
        print(f"  {row['linear']:22s} host bf16 {row['host_bf16_ms']:8.1f} ms   fp8 {row['fp8_ms']:8.1f} ms   "
              f"ratio fp8/bf16 {row['fp8_ms'] / row['host_bf16_ms']:.2f}")
    print(f"umt5-xxl Linear layers per encode (x{BLOCKS} blocks): host bf16 {totals['host bf16']:.2f} s, "
          f"fp8 {totals['fp8']:.2f} s: ratio fp8/bf16 {totals['fp8'] / totals['host bf16']:.2f}")
    print(f"Linear weight bytes per block: bf16 {bytes_bf16 / 2**20:.1f} MiB, fp8 + scales "
          f"{bytes_fp8 / 2**20:.1f} MiB: ratio {bytes_fp8 / bytes_bf16:.4f}")

    conditioning = [[torch.randn(1, 512, 4096), {"pooled_output": None}]]
    with tempfile.TemporaryDirectory() as folder:
        store = PromptCacheStore(folder, 2**30)
        key = "0" * 64
        store.put(key, *encode_conditioning(conditioning))

        def hit() -> list:
            entry = store.get(key)
            return decode_conditioning(entry.tensors, entry.metadata)

        hit_seconds = best_time(hit, args.repeat)
    print(f"prompt-cache hit ([1, 512, 4096] fp32 from disk): {hit_seconds * 1000:.1f} ms vs the fp8 Linear layers "
          f"of one encode {totals['fp8']:.2f} s: ratio hit/encode {hit_seconds / totals['fp8']:.5f} "
          "(the encode also needs the encoder loaded)")


if __name__ == "__main__":
    main()
