"""Q6_K linears at the Wan DiT's shapes, M = tokens: bf16 ``F.linear`` on a dequantised weight (baseline), eager
torch dequant + matmul, the ComfyUI-GGUF style fp16 dequant + matmul, Triton dequant + matmul, and the fused Triton
Q6_K matmul in at most two tile configurations. At large M the fused kernel is left out of the remaining shapes
once dequant-then-matmul beat it: the dequantisation is paid once per weight and amortised over M rows.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from gguf_style import dequantize_q6_k_fp16
from wan14b_models import Q6_K, Bench, Shape, compare, random_q6_k

BASELINE = "bf16 F.linear, weight already dequantised"
TRITON_DEQUANT = "Triton dequant + F.linear"
DEFAULT_FUSED_CONFIGS = ((128, 128, 64, 8, 8, 3), (64, 128, 64, 8, 4, 4))  # block_m,n,k, group_m, warps, stages
CPU_FUSED_CONFIG = (32, 32, 64, 2, 1, 1)
LARGE_M = 4096


def _paths(host, x: torch.Tensor, data: torch.Tensor, weight: torch.Tensor, size: tuple, fused: list) -> dict:
    """label -> callable of every path at one weight shape."""
    dequantize = host["gguf"].dequantize
    paths: dict[str, Callable[[], torch.Tensor]] = {
        BASELINE: lambda: F.linear(x, weight),
        "eager torch dequant + F.linear": lambda: F.linear(x, dequantize(data, Q6_K, size, torch.bfloat16)),
        "ComfyUI-GGUF style fp16 dequant + F.linear": lambda: F.linear(x, dequantize_q6_k_fp16(data, size,
                                                                                           torch.bfloat16)),
    }
    if host["backend"].triton_problem() is None:
        triton_dequantize = host["import"]("wan_accel_kernels.gguf.triton_dequantize").triton_dequantize
        triton_matmul = host["import"]("wan_accel_kernels.gguf.triton_matmul")
        paths[TRITON_DEQUANT] = lambda: F.linear(x, triton_dequantize(data, Q6_K, size, torch.bfloat16))
        for tile in fused:
            config = triton_matmul.MatmulConfig(*tile)
            label = "fused Q6_K matmul " + "x".join(map(str, tile[:3])) + f" w{tile[4]} s{tile[5]}"
            paths[label] = lambda c=config: triton_matmul.q6_k_linear(x, data, size, config=c)
    return paths


def run_matmul_section(host, shape: Shape, bench: Bench, repeat: int, seed: int,
                       fused_configs: tuple = DEFAULT_FUSED_CONFIGS) -> list[dict]:
    """Rows {weight, path, status, ms, tflops, vs_bf16, rel_l2} for the three per-token linear shapes."""
    if len(fused_configs) > 2:
        raise ValueError("benchmarks/wan14b_matmul.py: keep at most two fused tile configurations")
    device = bench.device
    fused = list(fused_configs if bench.cuda else (CPU_FUSED_CONFIG,))
    gen = torch.Generator(device=device).manual_seed(seed)
    rows: list[dict] = []
    fused_lost_at: str | None = None
    for out_features, in_features in shape.linear_shapes():
        size = (out_features, in_features)
        data = random_q6_k(size, 1 / math.sqrt(in_features), gen, device)
        x = torch.randn(shape.tokens, in_features, device=device, generator=gen).to(torch.bfloat16)
        weight = host["gguf"].dequantize(data, Q6_K, size, torch.bfloat16)
        flops = 2 * shape.tokens * out_features * in_features
        label = f"[{out_features}, {in_features}]"
        run_fused = fused_lost_at is None or shape.tokens < LARGE_M
        paths = _paths(host, x, data, weight, size, fused if run_fused else [])
        if not run_fused:
            rows.append({"weight": label, "path": "fused Q6_K matmul", "status": f"left out: dequant-then-matmul "
                         f"won at {fused_lost_at} with M = {shape.tokens}"})
        baseline, reference, measured = None, None, {}
        for path, run in paths.items():
            row = {"weight": label, "path": path, "status": "ok"}
            rows.append(row)
            try:
                _, seconds, out = bench.time(run, repeat)
            except Exception as error:  # e.g. a tile config that does not fit shared memory
                row["status"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}"
                continue
            if baseline is None:
                baseline, reference = seconds, out.float()
            measured[path] = seconds
            row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12, vs_bf16=seconds / baseline,
                       rel_l2=compare(out.float(), reference)[1])
        fused_times = [s for p, s in measured.items() if p.startswith("fused")]
        if (fused_times and TRITON_DEQUANT in measured and shape.tokens >= LARGE_M
                and min(fused_times) > measured[TRITON_DEQUANT]):
            fused_lost_at = label
        del data, x, weight
        bench.release()
    return rows


def linear_seconds(rows: list[dict], shape: Shape) -> float:
    """Seconds of one forward's per-token linears from the measured bf16 ``F.linear`` rows (NaN if one is missing)."""
    by_weight = {r["weight"]: r.get("ms", math.nan) / 1e3 for r in rows if r["path"] == BASELINE}
    return sum(by_weight.get(f"[{o}, {i}]", math.nan) * count for (o, i), count in shape.linear_shapes().items())
