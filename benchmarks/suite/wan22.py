"""GPU-suite sections for Wan 2.2 I2V A14B. The expert switch: one expert's Q6_K blocks from pinned and from
pageable host RAM to the GPU (``benchmarks/expert_switch.py``, every block on a GPU, one in the dry run), the switch
projected to a 4090 as its own term of a 4-step video (two steps per expert), and peak RAM and VRAM of two Q6_K
experts at 832x480x81 (``lib/wan22_memory.py``, an estimate from shapes). The expert steps: one DiT step of each
expert at 14B shapes (a Wan 2.1 14B DiT without ``img_emb``, in_dim 36; random Q6_K weights, one expert resident at
a time), built by the DiT section's code; the dry run at its tiny shape."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks import expert_switch
from benchmarks.lib import projection_4090 as projection
from benchmarks.lib import wan22_expert, wan22_memory
from benchmarks.lib.dtypes import dtype_name
from benchmarks.lib.wan14b_dit import EXPERTS, run_expert_steps
from benchmarks.lib.wan14b_models import count_parameters
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult

STEPS_PER_EXPERT = 2
FULL_STEP_GUESS_S = 4.0   # one expert's step at 832x480x81 on an H100, about the Wan 2.1 DiT's forward
FULL_BUILD_GUESS_S = 10.0  # random Q6_K blocks of one 14B expert generated on the GPU


def run_switch(ctx: SuiteContext) -> SectionResult:
    """One row per copy mode (bytes, seconds, GB/s, ratio to pageable), the 4090 switch term and the estimate."""
    blocks = 1 if ctx.dry_run else wan22_expert.BLOCKS
    with tempfile.TemporaryDirectory(prefix="wan_accel_switch_") as folder:
        results = expert_switch.measure(blocks, ctx.device, max(ctx.args.repeat, 1), Path(folder))
    baseline = results[0].seconds
    rows = [{"mode": r.mode, "blocks": blocks, "gib_moved": r.bytes_moved / 2**30, "seconds": r.seconds,
             "gb_per_s": r.gb_per_s, "vs_pageable": baseline / r.seconds} for r in results]
    full = wan22_expert.expert_q6_k_bytes()
    switch = projection.expert_switch(full)
    ctx.measured["wan22_switch_s"] = {r.mode: r.seconds * full / r.bytes_moved for r in results}
    notes = [f"a whole expert's Q6_K blocks ({full / 2**30:.2f} GiB) on this GPU: " + ", ".join(
                 f"{mode} {seconds:.2f} s" for mode, seconds in ctx.measured["wan22_switch_s"].items()),
             f"one switch on a 4090 (projected, PCIe 4.0 x16, pinned to pageable): {switch.fast:.2f}-{switch.slow:.2f} s,"
             f" a term of its own in a 4-step Wan 2.2 video ({STEPS_PER_EXPERT} steps per expert)",
             *wan22_memory.two_q6_k_experts().lines()]
    if ctx.dry_run:
        notes.append("dry run: one block, CPU copies; these numbers mean nothing")
    return SectionResult(rows=rows, notes=notes)


def run_steps(ctx: SuiteContext) -> SectionResult:
    """One row per expert: seconds per step (cfg 1), weights and peak memory, its parameters against the Wan 2.1
    I2V DiT's at the same shape; stores ``wan22_step_s`` (expert -> seconds)."""
    missing = ctx.missing_host()
    if missing is not None:
        return missing
    dtype = ctx.dtype(torch.bfloat16)
    options = argparse.Namespace(seed=ctx.args.seed, repeat=ctx.args.repeat, compile_backend=ctx.args.compile_backend,
                                 dtype=dtype, forward_s=ctx.full_or_dry(FULL_STEP_GUESS_S, 1.0))
    rows = run_expert_steps(ctx.host, ctx.shape, ctx.bench, options, fits=ctx.budget.check)
    parameters = count_parameters(ctx.host, ctx.shape, image_branch=False)[0]
    wan21_parameters = count_parameters(ctx.host, ctx.shape)[0]
    table = [{"expert": expert, "configuration": row.config.name, "status": row.status, "dtype": dtype_name(dtype),
              "attention": row.config.attention, "s_per_step": row.seconds, "first_call_s": row.first_call,
              "weights_gib": row.weights_gib, "peak_gib": row.peak_gib, "parameters": parameters,
              "wan21_i2v_parameters": wan21_parameters} for expert, row in zip(EXPERTS, rows)]
    steps = {expert: row.seconds for expert, row in zip(EXPERTS, rows) if row.status == "ok"}
    ctx.measured["wan22_step_s"] = steps
    notes = [f"each expert: the Wan 2.1 14B DiT without img_emb and image cross-attention, in_dim 36: "
             f"{parameters / 1e9:.3f} B parameters ({(wan21_parameters - parameters) / 1e6:.1f} M fewer than the "
             "Wan 2.1 I2V DiT); one step = one DiT forward at cfg 1, random Q6_K weights, one expert resident",
             *[f"{row.config.name}: {note}" for row in rows for note in row.notes]]
    switch = ctx.measured.get("wan22_switch_s", {})
    if len(steps) == len(EXPERTS) and switch:
        mode = "pinned" if "pinned" in switch else "pageable"
        video = STEPS_PER_EXPERT * sum(steps.values()) + switch[mode]
        notes.append(f"a 4-step video's DiT on this GPU ({STEPS_PER_EXPERT} steps per expert + one {mode} switch): "
                     f"{video:.2f} s, the sum of this run's measurements (text encoder and VAE excluded)")
    if ctx.dry_run:
        notes.append("dry run: the tiny shape in fp32 on the CPU; these numbers mean nothing")
    return SectionResult(rows=table, notes=notes)


SWITCH = Section("wan22", "Wan 2.2 expert switch: host RAM to GPU, per expert",
                 lambda ctx: ctx.full_or_dry(60, 10), run_switch)
STEPS = Section("wan22_steps", "Wan 2.2: one DiT step of each expert at 14B shapes, random Q6_K weights",
                lambda ctx: ctx.full_or_dry(len(EXPERTS) * (FULL_BUILD_GUESS_S + 2 * FULL_STEP_GUESS_S), 10), run_steps)
