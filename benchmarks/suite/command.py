"""The GPU suite's command line and report: parses the options, loads the host, runs the sections in priority order
within the budget (``runner.py``) and prints the markdown table. ``benchmarks/gpu_suite.py`` is the entry point."""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
from pathlib import Path

import torch

from benchmarks.lib.wan14b_models import Bench
from benchmarks.suite import kernels, models, postprocess, projection, unit_tests, vae, wan22
from benchmarks.suite.context import DRY_SHAPE, SuiteContext, full_shape
from benchmarks.suite.host import load_host
from benchmarks.suite.runner import Budget, clean, markdown, run_sections

DESCRIPTION = "Every GPU figure of the pack from one command, within a time budget: JSON and markdown to --out."
DRY_SECTION_LIMIT_S = 45.0  # the slowest dry-run section takes ~12 s alone on a 2-core CPU
DRY_BUDGET_S = 180.0  # with the per-section limit: no dry run outlasts this (plus start-up), however slow the CPU
DRY_CPU_THREADS = 1  # tiny shapes gain nothing from threads, and OpenMP threads on a busy CPU spin: 2.4x slower
SECTIONS = (unit_tests.SECTION, models.DIT, models.LINEARS, kernels.ATTENTION, vae.SECTION, postprocess.SECTION,
            kernels.TEXT_ENCODER, wan22.SWITCH, wan22.STEPS, projection.SECTION)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, each unset one filled with its GPU or dry-run default."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=DESCRIPTION)
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"wall-clock budget of all sections (420 s; dry run {DRY_BUDGET_S:.0f} s)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on any device: checks the harness")
    parser.add_argument("--section-limit-s", type=float, default=None,
                        help=f"wall-clock limit of each section (dry run default {DRY_SECTION_LIMIT_S:.0f} s; none on "
                             "a GPU run, whose budget skips by estimate)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI 0.3.64 checkout")
    parser.add_argument("--sections", default="", help="comma-separated section names to run (default: all)")
    parser.add_argument("--configs", nargs="*", default=[], help="DiT configurations whose name contains one")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed DiT forwards (and others) after the first (1 GPU, 0 dry: the first is timed)")
    parser.add_argument("--matmul-repeat", type=int, default=None, help="timed calls per linear after the first "
                                                                        "(10 GPU, 0 dry)")
    parser.add_argument("--attention-repeat", type=int, default=None, help="timed attention calls (10 GPU, 1 dry)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; dry run: eager)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    defaults = {"budget_s": (420.0, DRY_BUDGET_S), "repeat": (1, 0), "matmul_repeat": (10, 0),
                "attention_repeat": (10, 1)}  # (GPU, dry run)
    for name, (full, dry) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, dry if args.dry_run else full)
    args.compile_backend = args.compile_backend or ("eager" if args.dry_run else "inductor")
    if args.section_limit_s is None and args.dry_run:
        args.section_limit_s = DRY_SECTION_LIMIT_S
    return args


def device_report(ctx: SuiteContext) -> dict:
    """What ran the suite, for the report's header."""
    try:
        triton = metadata.version("triton") + ("" if ctx.cuda else " (interpreter)")
    except metadata.PackageNotFoundError:
        triton = "not installed"
    return {"name": ctx.device_name(), "torch": torch.__version__, "triton": triton,
            "capability": list(torch.cuda.get_device_capability(ctx.device)) if ctx.cuda else None,
            "memory_gib": torch.cuda.get_device_properties(ctx.device).total_memory / 2**30 if ctx.cuda else None}


def run_suite(argv: list[str] | None = None) -> dict:
    """Runs the suite; returns the report it wrote."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.dry_run and device.type != "cuda":
        raise SystemExit("benchmarks/gpu_suite.py: no CUDA device; run with --dry-run to check the harness on CPU")
    if args.dry_run and device.type == "cpu":
        torch.set_num_threads(DRY_CPU_THREADS)
    host, host_reason = load_host(args.comfyui)
    ctx = SuiteContext(args, device, Bench(device), DRY_SHAPE if args.dry_run else full_shape(), budget, host,
                       host_reason)
    wanted = {name for name in args.sections.split(",") if name}
    sections = [s for s in SECTIONS if not wanted or s.name in wanted]
    report = {"suite": "wan-accel gpu_suite", "dry_run": ctx.dry_run, "device": device_report(ctx),
              "shape": vars(ctx.shape) | {"tokens": ctx.shape.tokens}, "budget_s": args.budget_s, "elapsed_s": 0.0,
              "section_limit_s": args.section_limit_s, "cpu_threads": torch.get_num_threads(),
              "dtypes": "CPU dry run: fp32 wherever a path takes it; the dtype columns say what ran" if ctx.cpu_fp32
              else "as labelled per row",
              "host": args.comfyui if host is not None else f"unavailable: {host_reason}", "sections": []}
    print(f"{report['device']['name']}, torch {torch.__version__}, triton {report['device']['triton']}; host "
          f"{report['host']}; budget {args.budget_s:.0f} s" + ("; DRY RUN: not speed figures" if ctx.dry_run else ""))
    run_sections(sections, ctx, budget, report, args.out, args.section_limit_s)
    print("\n" + markdown(clean(report)))
    return report

