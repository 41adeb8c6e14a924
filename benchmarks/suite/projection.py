"""GPU-suite section 7: the projected RTX 4090 time per 8-step video of each measured DiT configuration, from
this run's DiT, linear (per arithmetic), attention and VAE measurements (``projection_4090.py``), assumptions
printed with it. A configuration whose parts exceed its measured step fails the section (named, with the numbers)."""
from __future__ import annotations

import math

from benchmarks.lib import projection_4090 as projection
from benchmarks.lib.gpu_specs import SPECS_BY_DEVICE_NAME, spec_for
from benchmarks.suite.context import SuiteContext
from benchmarks.suite.runner import FAILED, SKIPPED, Section, SectionResult

DRY_RUN_STAND_IN = "NVIDIA H100 80GB HBM3"


def run(ctx: SuiteContext) -> SectionResult:
    """One row per measured DiT configuration: its measured parts, the 4090 step and 8-step video, fast and slow."""
    name = DRY_RUN_STAND_IN if ctx.dry_run else ctx.device_name()
    spec = spec_for(name)
    if spec is None:
        return SectionResult(status=SKIPPED, reason=f"no datasheet entry for {name!r} in benchmarks/lib/gpu_specs.py "
                                                    f"(known: {', '.join(SPECS_BY_DEVICE_NAME)})")
    if not ctx.dry_run and not ctx.shape.is_full_14b:
        return SectionResult(status=SKIPPED, reason="needs the full 832x480x81 14B size")
    missing = [key for key in ("dit_rows", "linear_s", "attention_s") if key not in ctx.measured]
    if missing:
        return SectionResult(status=SKIPPED, reason=f"needs the {', '.join(missing)} measurements (their sections "
                                                    "were skipped or failed)")
    vae_seconds = ctx.measured.get("vae_s", {}).get("fp16")
    vae_range = projection.vae(spec, vae_seconds) if vae_seconds is not None else None
    linear_s, attention_s = ctx.measured["linear_s"], ctx.measured["attention_s"]
    rows, errors = [], []
    for dit in ctx.measured["dit_rows"]:
        if dit["status"] != "ok":
            continue
        attention = attention_s.get(dit["attention"], math.nan) * ctx.shape.layers
        if dit["arithmetic"] not in linear_s or math.isnan(attention):
            rows.append({"configuration": dit["configuration"], "arithmetic": dit["arithmetic"],
                         "status": f"not projected: no {dit['arithmetic']} linear or {dit['attention']} attention "
                                   "time measured"})
            continue
        try:
            rows.append({**projection.project_row(spec, dit, linear_s[dit["arithmetic"]], attention, vae_range),
                         "status": "ok"})
        except ValueError as error:
            errors.append(str(error))
            rows.append({"configuration": dit["configuration"], "arithmetic": dit["arithmetic"],
                         "status": f"failed: {error}"})
    notes = [f"measured on {ctx.device_name()}, scaled with the datasheet of {spec.label} and the RTX 4090's"
             + (" (dry run: a stand-in spec and CPU fp32 times; these numbers mean nothing)" if ctx.dry_run else ""),
             f"VAE (encode + decode, fp16) on a 4090: {vae_range.describe()}" if vae_range is not None
             else "VAE not measured: videos exclude it", *projection.ASSUMPTIONS, projection.LABEL]
    result = SectionResult(rows=rows, notes=notes)
    if errors:
        result.status, result.reason = FAILED, "; ".join(errors)
    return result


SECTION = Section("projection", "Projected RTX 4090 time per 8-step video (a projection, not a measurement)",
                  lambda ctx: 1.0, run)
