"""GPU-suite section 7: the projected RTX 4090 time per 8-step video of each measured DiT configuration, from
this run's DiT, linear, attention and VAE measurements (``projection_4090.py``), assumptions printed with it."""
from __future__ import annotations

import math

import projection_4090 as projection
from gpu_specs import SPECS_BY_DEVICE_NAME, spec_for
from suite_context import SuiteContext
from suite_runner import SKIPPED, Section, SectionResult

DRY_RUN_STAND_IN = "NVIDIA H100 80GB HBM3"


def run(ctx: SuiteContext) -> SectionResult:
    """One row per measured DiT configuration: s/step here, 4090 s/step and 8-step video, fast and slow end."""
    name = DRY_RUN_STAND_IN if ctx.dry_run else ctx.device_name()
    spec = spec_for(name)
    if spec is None:
        return SectionResult(status=SKIPPED, reason=f"no datasheet entry for {name!r} in benchmarks/gpu_specs.py "
                                                    f"(known: {', '.join(SPECS_BY_DEVICE_NAME)})")
    if not ctx.dry_run and not ctx.shape.is_full_14b:
        return SectionResult(status=SKIPPED, reason="needs the full 832x480x81 14B size")
    missing = [key for key in ("dit_rows", "linear_s", "attention_s") if key not in ctx.measured]
    if missing:
        return SectionResult(status=SKIPPED, reason=f"needs the {', '.join(missing)} measurements (their sections "
                                                    "were skipped or failed)")
    vae_seconds = ctx.measured.get("vae_s", {}).get("bf16" if ctx.dry_run else "fp16")
    vae_range = projection.vae(spec, vae_seconds) if vae_seconds is not None else None
    attention_s = ctx.measured["attention_s"]
    rows = []
    for dit in ctx.measured["dit_rows"]:
        if dit["status"] != "ok":
            continue
        attention = attention_s.get(dit["attention"], math.nan) * ctx.shape.layers
        step = projection.dit_step(spec, dit["s_per_step"], ctx.measured["linear_s"], attention, dit["attention"])
        video = projection.video(step, vae_range)
        rows.append({"configuration": dit["configuration"], "s_per_step_here": dit["s_per_step"],
                     "4090_step_fast_s": step.fast, "4090_step_slow_s": step.slow, "4090_video_fast_s": video.fast,
                     "4090_video_slow_s": video.slow,
                     "fits_24_gib": None if math.isnan(dit["peak_gib"]) else
                     dit["model"] != "bf16" and dit["peak_gib"] <= projection.RTX4090_MEMORY_GIB})
    notes = [f"measured on {ctx.device_name()}, scaled with the datasheet of {spec.label}"
             + (" (dry run: a stand-in spec; these numbers mean nothing)" if ctx.dry_run else ""),
             f"VAE (encode + decode, fp16 on a GPU) on a 4090: {vae_range.describe()}" if vae_range is not None
             else "VAE not measured: videos exclude it", *projection.ASSUMPTIONS,
             "a projection from datasheet ratios, not a 4090 measurement"]
    return SectionResult(rows=rows, notes=notes)


SECTION = Section("projection", "Projected RTX 4090 time per 8-step video", lambda ctx: 1.0, run)
