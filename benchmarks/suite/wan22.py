"""GPU-suite section: Wan 2.2 I2V A14B's expert switch. One expert's Q6_K blocks from pinned and from pageable host
RAM to the GPU (``expert_switch.py``, every block on a GPU, one in the dry run), the switch projected to a 4090 as
its own term of a 4-step video (two steps per expert), and peak RAM and VRAM of two Q6_K experts at 832x480x81
(``wan22_memory.py``, an estimate from shapes). One expert's step has the Wan 2.1 14B DiT's block shapes (no
CLIP-vision branch), so the DiT section's rows time it; the projection adds the two experts' steps and the switch."""
from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import expert_switch
from benchmarks.lib import projection_4090 as projection
from benchmarks.lib import wan22_expert, wan22_memory
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import Section, SectionResult

STEPS_PER_EXPERT = 2


def run(ctx: SuiteContext) -> SectionResult:
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


SECTION = Section("wan22", "Wan 2.2 expert switch: host RAM to GPU, per expert", lambda ctx: ctx.full_or_dry(60, 10),
                  run)
