"""Q6_K linears at the Wan DiT's shapes, M = tokens: bf16 ``F.linear`` on a dequantised weight (baseline), eager
torch dequant + matmul, the ComfyUI-GGUF style fp16 dequant + matmul, Triton dequant + matmul, and the fused Triton
Q6_K matmul in at most two tile configurations. At large M the fused kernel is left out of the remaining shapes
once dequant-then-matmul beat it: the dequantisation is paid once per weight and amortised over M rows.
Where ``wan_accel_kernels.w8a8`` exists, per 8-bit format: the W8A8 linear the shipped layer calls (on the weight
requantised from Q6_K as the loader does) and its 8-bit matmul alone. The rows that name an ``arithmetic`` (bf16
``F.linear``, the int8 and fp8 matmuls alone) give the RTX 4090 projection its per-precision linear times.
``dtype`` replaces bf16 (the CPU dry run: fp32; each row's ``dtype`` says what its activations were).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.lib.dtypes import dtype_name
from benchmarks.lib.gguf_style import dequantize_q6_k_fp16
from benchmarks.lib.wan14b_dit import w8a8_module
from benchmarks.lib.wan14b_models import Q6_K, Bench, Shape, compare, random_q6_k

BASELINE = "F.linear, weight already dequantised"
TRITON_DEQUANT = "Triton dequant + F.linear"
FUSED_DTYPE = torch.bfloat16  # the fused kernel multiplies 16-bit activations only
DEFAULT_FUSED_CONFIGS = ((128, 128, 64, 8, 8, 3), (64, 128, 64, 8, 4, 4))  # block_m,n,k, group_m, warps, stages
CPU_FUSED_CONFIG = (32, 32, 64, 2, 1, 1)
LARGE_M = 4096


def _paths(host, x: torch.Tensor, data: torch.Tensor, weight: torch.Tensor, size: tuple,
           fused: list) -> dict[str, tuple[Callable[[], torch.Tensor], dict]]:
    """label -> (callable, extra row fields) of every path at one weight shape."""
    dequantize, dtype = host["gguf"].dequantize, x.dtype
    plain = {"dtype": dtype_name(dtype)}
    paths: dict[str, tuple[Callable[[], torch.Tensor], dict]] = {
        BASELINE: (lambda: F.linear(x, weight), {**plain, "arithmetic": "bf16"}),
        "eager torch dequant + F.linear": (lambda: F.linear(x, dequantize(data, Q6_K, size, dtype)), plain),
        "ComfyUI-GGUF style fp16 dequant + F.linear": (
            lambda: F.linear(x, dequantize_q6_k_fp16(data, size, dtype)), plain),
    }
    if host["backend"].triton_problem() is None:
        triton_dequantize = host["import"]("wan_accel_kernels.gguf.triton_dequantize").triton_dequantize
        triton_matmul = host["import"]("wan_accel_kernels.gguf.triton_matmul")
        paths[TRITON_DEQUANT] = (lambda: F.linear(x, triton_dequantize(data, Q6_K, size, dtype)), plain)
        x16 = x.to(FUSED_DTYPE)
        for tile in fused:
            config = triton_matmul.MatmulConfig(*tile)
            label = "fused Q6_K matmul " + "x".join(map(str, tile[:3])) + f" w{tile[4]} s{tile[5]}"
            paths[label] = (lambda c=config: triton_matmul.q6_k_linear(x16, data, size, config=c),
                            {"dtype": dtype_name(FUSED_DTYPE)})
    w8a8 = w8a8_module()
    if w8a8 is not None:
        paths.update(_w8a8_paths(w8a8, x, dequantize(data, Q6_K, size, torch.float32)))
    return paths


def _w8a8_paths(w8a8, x: torch.Tensor, weight: torch.Tensor) -> dict[str, tuple[Callable[[], torch.Tensor], dict]]:
    """Per 8-bit format that runs here: the linear the shipped layer calls, on the weight requantised as
    ``nodes/w8a8_ops.py`` does at load, and the 8-bit matmul alone (weight and activations quantised plainly per row,
    so its output is still x @ W^T; the kernel and shapes are the layer's)."""
    paths = {}
    for fmt in w8a8.FORMATS:
        support = w8a8.matmul_support(x.device, fmt)
        if not support.native and x.device.type != "cpu":
            continue
        shipped = w8a8.quantize_weight(weight, fmt, w8a8.default_method(fmt))
        plain = w8a8.quantize_weight(weight, fmt, w8a8.outliers.NONE, center=False)
        qx, sx = w8a8.formats.quantize_rows(x, fmt)
        how = "" if support.native else " (emulated)"
        paths[f"W8A8 {fmt} linear, {w8a8.default_method(fmt)} (the shipped layer's call)"] = (
            lambda q=shipped: w8a8.linear(x, q), {"dtype": dtype_name(x.dtype)})
        paths[f"{fmt} matmul alone{how}"] = (
            lambda q=plain, a=qx, s=sx, f=fmt: w8a8.matmul.scaled_matmul(a, s, q.data, q.scale, f),
            {"dtype": fmt, "arithmetic": fmt})
    return paths


def run_matmul_section(host, shape: Shape, bench: Bench, repeat: int, seed: int,
                       fused_configs: tuple = DEFAULT_FUSED_CONFIGS, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    """Rows {weight, path, dtype, status, ms, tflops, vs_bf16, rel_l2} (and ``arithmetic`` on the rows the
    projection reads) for the three per-token linear shapes, activations in ``dtype``."""
    if len(fused_configs) > 2:
        raise ValueError("benchmarks/lib/wan14b_matmul.py: keep at most two fused tile configurations")
    device = bench.device
    fused = list(fused_configs if bench.cuda else (CPU_FUSED_CONFIG,))
    gen = torch.Generator(device=device).manual_seed(seed)
    rows: list[dict] = []
    fused_lost_at: str | None = None
    for out_features, in_features in shape.linear_shapes():
        size = (out_features, in_features)
        data = random_q6_k(size, 1 / math.sqrt(in_features), gen, device)
        x = torch.randn(shape.tokens, in_features, device=device, generator=gen).to(dtype)
        weight = host["gguf"].dequantize(data, Q6_K, size, dtype)
        flops = 2 * shape.tokens * out_features * in_features
        label = f"[{out_features}, {in_features}]"
        run_fused = fused_lost_at is None or shape.tokens < LARGE_M
        paths = _paths(host, x, data, weight, size, fused if run_fused else [])
        if not run_fused:
            rows.append({"weight": label, "path": "fused Q6_K matmul", "status": f"left out: dequant-then-matmul "
                         f"won at {fused_lost_at} with M = {shape.tokens}"})
        baseline, reference, measured = None, None, {}
        for path, (run, fields) in paths.items():
            row = {"weight": label, "path": path, **fields, "status": "ok"}
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


def linear_seconds(rows: list[dict], shape: Shape) -> dict[str, float]:
    """arithmetic (bf16, int8, fp8) -> seconds of one forward's per-token matmuls in it, from the rows that name
    that arithmetic; an arithmetic missing at any shape is left out."""
    seconds: dict[str, float] = {}
    for arithmetic in dict.fromkeys(r["arithmetic"] for r in rows if "arithmetic" in r):
        by_weight = {r["weight"]: r.get("ms", math.nan) / 1e3 for r in rows if r.get("arithmetic") == arithmetic}
        total = sum(by_weight.get(f"[{o}, {i}]", math.nan) * count for (o, i), count in shape.linear_shapes().items())
        if math.isfinite(total):
            seconds[arithmetic] = total
    return seconds
