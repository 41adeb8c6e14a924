"""GPU-suite sections 2 and 2b: the Wan 14B DiT forward in every configuration, and its Q6_K and W8A8 linears
(whose measured matmul time per arithmetic, bf16 / int8 / fp8, the RTX 4090 projection needs). Both build the
host's own layers in-process; the CPU dry run computes them in fp32 (the dtype column says so)."""
from __future__ import annotations

import argparse
import math

import torch

from benchmarks.lib.dtypes import dtype_name
from benchmarks.lib.wan14b_dit import run_dit_section
from benchmarks.lib.wan14b_matmul import linear_seconds, run_matmul_section
from benchmarks.lib.wan14b_models import count_parameters, weight_gib
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult

FULL_FORWARD_GUESS_S = 4.0   # one bf16 forward at 832x480x81 on an H100, before any row has measured one
FULL_COMPILE_GUESS_S = 90.0  # torch.compile of the 40 blocks, Inductor, first call


def run_dit(ctx: SuiteContext) -> SectionResult:
    """All DiT configurations on one random Q6_K model, each only when its estimated cost fits the budget."""
    missing = ctx.missing_host()
    if missing is not None:
        return missing
    total, quantised = count_parameters(ctx.host, ctx.shape)
    bf16_gib, q6_k_gib = weight_gib((total, quantised))
    options = argparse.Namespace(seed=ctx.args.seed, repeat=ctx.args.repeat, configs=ctx.args.configs,
                                 compile_backend=ctx.args.compile_backend, dtype=ctx.dtype(torch.bfloat16),
                                 forward_s=ctx.full_or_dry(FULL_FORWARD_GUESS_S, 1.0),
                                 compile_s=ctx.full_or_dry(FULL_COMPILE_GUESS_S, 5.0))
    rows = run_dit_section(ctx.host, ctx.shape, ctx.bench, options, fits=ctx.budget.check)
    by_name = {row.config.name: row for row in rows}
    baseline = rows[0] if rows and rows[0].status == "ok" else None
    eager = by_name.get("ComfyUI-GGUF style (fp16 block math) + SDPA")
    table = []
    for row in rows:
        entry = {"configuration": row.config.name, "status": row.status, "dtype": dtype_name(options.dtype),
                 "arithmetic": row.config.arithmetic, "s_per_step": row.seconds,
                 "first_call_s": row.first_call,
                 "vs_bf16": row.seconds / baseline.seconds if baseline else math.nan,
                 "vs_gguf_style": row.seconds / eager.seconds if eager is not None and eager.status == "ok"
                 else math.nan,
                 "weights_gib": row.weights_gib, "peak_gib": row.peak_gib, "cosine": row.cosine,
                 "rel_l2": row.relative_l2, "attention": row.config.attention, "model": row.config.model}
        table.append(entry)
    ctx.measured["dit_rows"] = table
    linear, attention = ctx.shape.flops()
    notes = [f"I2V model: {total / 1e9:.2f} B parameters ({quantised / 1e9:.2f} B in Q6_K weights): "
             f"{bf16_gib:.1f} GiB bf16, {q6_k_gib:.1f} GiB Q6_K",
             f"FLOP model: {linear / 1e12:.4g} TFLOP linears + {attention / 1e12:.4g} TFLOP attention per forward",
             "peak_gib = the configuration's own weights + the forward's working memory (other models excluded)",
             "W8A8 rows: the shipped loader's layers (nodes/w8a8_ops.py), requantised from the same Q6_K tensors"]
    notes += [f"{row.config.name}: {note}" for row in rows for note in row.notes]
    return SectionResult(rows=table, notes=notes)


def run_linears(ctx: SuiteContext) -> SectionResult:
    """The Q6_K and W8A8 linears at M = tokens; also stores one forward's per-token matmul seconds per arithmetic."""
    missing = ctx.missing_host()
    if missing is not None:
        return missing
    dtype = ctx.dtype(torch.bfloat16)
    rows = run_matmul_section(ctx.host, ctx.shape, ctx.bench, repeat=ctx.args.matmul_repeat, seed=ctx.args.seed,
                              dtype=dtype)
    ctx.measured["linear_s"] = linear_seconds(rows, ctx.shape)
    per_forward = ", ".join(f"{arithmetic} {seconds:.4g} s" for arithmetic, seconds in ctx.measured["linear_s"].items())
    repeat = ctx.args.matmul_repeat
    timed = f"best of {repeat} calls after the first" if repeat else "the first call timed"
    notes = [f"M = {ctx.shape.tokens} tokens, activations {dtype_name(dtype)}, {timed}; per "
             f"forward the per-token matmuls take: {per_forward}"]
    if not ctx.cuda:
        notes.append("CPU: the Triton rows ran in Triton's interpreter; their times are not speed figures")
    ctx.bench.release()
    return SectionResult(rows=rows, notes=notes)


DIT = Section("dit", "Wan 14B DiT forward, random Q6_K weights", lambda ctx: ctx.full_or_dry(230, 15), run_dit)
LINEARS = Section("linears", "Q6_K and W8A8 linears at the DiT's shapes", lambda ctx: ctx.full_or_dry(30, 8),
                  run_linears)
