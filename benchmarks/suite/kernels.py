"""GPU-suite sections 3 and 6: attention at the DiT's shape (SDPA against each 8-bit backend available) and the
fp8 umt5-xxl text-encoder linears against the host's bf16 path, at full width."""
from __future__ import annotations

import torch

from benchmarks.attention import measure_backends
from benchmarks.lib.dtypes import dtype_name
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult
from benchmarks.text_encoder import BLOCKS, measure_linears
from wan_accel_kernels.attention import probe_sage
from wan_accel_kernels.fp8 import compute_dtype_for


def run_attention(ctx: SuiteContext) -> SectionResult:
    """bf16 attention (CPU dry run: fp32) at 1 x heads x tokens x 128 (1x40x32760x128 at full size); stores
    seconds per kind."""
    shape = (1, ctx.shape.heads, ctx.shape.tokens, 128)
    sage = probe_sage()
    dtype = ctx.dtype(torch.bfloat16)
    rows = [{"dtype": dtype_name(dtype), **row}
            for row in measure_backends(shape, dtype, sage, ctx.device, ctx.args.attention_repeat)]
    seconds: dict[str, float] = {}
    for row in rows:
        if row["status"] == "ok":
            seconds[row["kind"]] = min(seconds.get(row["kind"], float("inf")), row["ms"] / 1e3)
    ctx.measured["attention_s"] = seconds
    return SectionResult(rows=rows, notes=[f"shape {'x'.join(map(str, shape))} {dtype_name(dtype)}, median of "
                                           f"{ctx.args.attention_repeat}; error vs float32 SDPA; {sage.describe()}"])


def run_text_encoder(ctx: SuiteContext) -> SectionResult:
    """Each umt5-xxl Linear shape, host bf16 vs our fp8, then per-encode time and weight memory of 24 blocks."""
    tokens = 16 if ctx.dry_run else 512
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    divisor = 16 if ctx.dry_run else 1
    rows = measure_linears(ctx.device, tokens, ctx.args.repeat + 1, width_divisor=divisor)
    table = [{"linear": r["linear"], "host_bf16_ms": r["host_bf16_ms"], "fp8_ms": r["fp8_ms"],
              "ratio_fp8_bf16": r["fp8_ms"] / r["host_bf16_ms"], "bf16_weights_mib": r["bf16_bytes"] / 2**20,
              "fp8_weights_mib": r["fp8_bytes"] / 2**20} for r in rows]
    encode = {key: sum(r[key] * r["per_encode"] for r in rows) / 1e3 for key in ("host_bf16_ms", "fp8_ms")}
    weights = {key: sum(r[key] * r["per_block"] for r in rows) * BLOCKS / 2**30 for key in ("bf16_bytes", "fp8_bytes")}
    table.append({"linear": f"one encode ({BLOCKS} blocks)", "host_bf16_ms": encode["host_bf16_ms"] * 1e3,
                  "fp8_ms": encode["fp8_ms"] * 1e3, "ratio_fp8_bf16": encode["fp8_ms"] / encode["host_bf16_ms"],
                  "bf16_weights_mib": weights["bf16_bytes"] * 1024, "fp8_weights_mib": weights["fp8_bytes"] * 1024})
    notes = [f"{tokens} tokens, widths / {divisor} (1 = umt5-xxl); Linear weights of the encoder: bf16 "
             f"{weights['bf16_bytes']:.2f} GiB, fp8 + scales {weights['fp8_bytes']:.2f} GiB",
             f"dtypes: fp32 activations; host: bf16 weights cast to fp32 per call; ours: fp8 weights computed in "
             f"{dtype_name(compute_dtype_for(ctx.device))}"]
    if ctx.cuda:
        notes.append(f"peak VRAM during the section {torch.cuda.max_memory_allocated(ctx.device) / 2**30:.2f} GiB")
    return SectionResult(rows=table, notes=notes)


ATTENTION = Section("attention", "Attention at the DiT's shape: SDPA vs 8-bit backends",
                    lambda ctx: ctx.full_or_dry(25, 5), run_attention)
TEXT_ENCODER = Section("text_encoder", "fp8 umt5-xxl linears vs host bf16 (full width on a GPU)",
                       lambda ctx: ctx.full_or_dry(15, 10), run_text_encoder)
