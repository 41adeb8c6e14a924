"""Times wan_accel_kernels.gguf.dequantize against gguf-py's numpy dequantize on random valid blocks (best of N, one run).

Usage: python -m benchmarks.dequant [--size 4096] [--repeat 5] [--types Q6_K,Q8_0,Q4_K,Q5_K]
"""
import argparse

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from benchmarks.lib.timing import best_time
from wan_accel_kernels.gguf import dequantize

# Byte offsets of each block type's fp16 scale fields, overwritten with finite values.
HALF_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2),
               "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(qtype: GGMLQuantizationType, n_values: int) -> np.ndarray:
    """Random ggml bytes ``[n_blocks, type_size]`` with finite fp16 scales."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(n_values // block_size, type_size), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype.name]:
        scales = (rng.standard_normal((len(blocks), 1)) * 0.01).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8)
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="tensor is size x size")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best is kept)")
    parser.add_argument("--types", default="Q6_K,Q8_0,Q4_K,Q5_K", help=f"comma-separated, from {','.join(HALF_FIELDS)}")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    shape = (args.size, args.size)
    mega = args.size * args.size / 1e6
    print(f"{args.size}x{args.size} tensor, best of {args.repeat}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", {torch.cuda.get_device_name()}" if cuda else ""))
    header = f"{'type':6} {'gguf-py':>9} {'ours f32':>9} {'ours bf16':>9} {'f32/gguf':>9} {'bf16/gguf':>9}"
    if cuda:
        header += f" {'cuda f32':>10} {'cuda/gguf':>10}"
    print(header + "   (M weights/s)")
    for name in args.types.split(","):
        qtype = GGMLQuantizationType[name.strip()]
        blocks = random_blocks(qtype, args.size * args.size)
        data = torch.from_numpy(blocks).reshape(-1)
        reference = best_time(lambda: gguf_dequantize(blocks, qtype), args.repeat)
        ours = best_time(lambda: dequantize(data, qtype, shape), args.repeat)
        ours_bf16 = best_time(lambda: dequantize(data, qtype, shape, dtype=torch.bfloat16), args.repeat)
        row = (f"{name:6} {mega / reference:9.1f} {mega / ours:9.1f} {mega / ours_bf16:9.1f} "
               f"{reference / ours:8.2f}x {reference / ours_bf16:8.2f}x")
        if cuda:
            on_gpu = data.cuda()
            gpu = best_time(lambda: dequantize(on_gpu, qtype, shape), args.repeat, torch.cuda.synchronize)
            row += f" {mega / gpu:10.0f} {reference / gpu:9.0f}x"
        print(row)


if __name__ == "__main__":
    main()
