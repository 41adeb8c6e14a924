"""Pipelined split against data parallelism over the same Ray workers: samples per minute of both, measured in one run,
then the projection for two RTX 4090s on Wan 2.2 (``lib/split_projection.py``).

    python -m benchmarks.split_pipeline --workers 2 --comfyui DIR --comfyui-python PY --comfyui-base DIR \\
        --pairs pairs.csv --split-at 2 [any other `wan-accel bench` option: --width 32 --steps 4 --dit FILE ...]

The same workers (each owning a CPU ComfyUI server) first run one warm-up sample per worker in each layout (model
loads), then the pairs pipelined (``bench --ray --split-at``: half the workers run stage A, half stage B) and then
data parallel (``bench --ray``: each worker runs whole samples of the same workflow), the latter with seeds shifted
by 1000 so no server reuses a cached output (and ids ending in ``-dp``, so each server's ``/history`` audit names
each run once). On one Wan 2.1 model nobody swaps experts: the CPU figures show what the
pipeline costs or gains from stage balance and hand-off alone; the switch a 4090 would save is the projection's.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import ray

from benchmarks.lib import split_projection
from benchmarks.ray_wrap_vs_own import Quiet
from wan_accel.batch import ray_batch, ray_pool, ray_split
from wan_accel.batch.samples import load_pairs
from wan_accel.cli import build_parser, overrides_from
from wan_accel.graph_fill import load_api_workflow
from wan_accel.launcher import START_TIMEOUT
from wan_accel.workflow_catalog import find_workflow

SEED_SHIFT = 1000


def _own_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.split_pipeline", add_help=False,
                                     allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-s", type=float, nargs="+", default=[5.0, 10.0, 20.0],
                        help="projection: one expert's DiT step on a 4090, seconds (assumed, not measured here)")
    parser.add_argument("--vae-s", type=float, nargs="+", default=[0.0, 5.0],
                        help="projection: the VAE decode and post-process on stage B, seconds (assumed)")
    parser.add_argument("--transfer-s", type=float, default=0.1,
                        help="projection: the fp32 latent (8.4 MB at 832x480x81) from GPU A's server to B's")
    parser.add_argument("--steps-high", type=int, default=2)
    parser.add_argument("--steps-low", type=int, default=2)
    return parser.parse_known_args(argv)


def _timed(run) -> float:
    started = time.monotonic()
    summary = run()
    if summary.failed:
        raise SystemExit(f"benchmarks/split_pipeline.py: {summary.failed} sample(s) failed; see the lines above")
    return time.monotonic() - started


def measure(args: argparse.Namespace, workers: int, samples: list, out: Path) -> tuple[float, float]:
    """(pipelined, data-parallel) seconds for ``samples`` on the same ``workers`` Ray workers."""
    _, path = find_workflow(args.workflow)
    spec = ray_pool.WorkerSpec(str(Path(args.comfyui).resolve()), args.comfyui_python, args.comfyui_base,
                                load_api_workflow(path), overrides_from(args), args.timeout, START_TIMEOUT)
    first_b = ray_split.stage_counts(workers)[0]
    shifted = [dataclasses.replace(s, id=f"{s.id}-dp", seed=s.seed + SEED_SHIFT) for s in samples]
    warm = {layout: [dataclasses.replace(s, id=f"warm-{layout}-{i}", seed=s.seed + 2 * SEED_SHIFT + i)
                     for i, s in enumerate(samples[:1] * workers)] for layout in ("split", "dp")}
    ray_pool.connect("local", workers)
    try:
        pool = ray_pool.start_workers(spec, workers, 0, retries=0)
        try:
            ray_pool.wait_ready(pool, Quiet("start"), ray_batch.Patience().probe_seconds)

            def split(name: str, batch: list):
                return lambda: ray_split.run_ray_split(batch, pool[:first_b], pool[first_b:],
                                                       out / name / "results.json", _videos(out / name),
                                                       {"run": name}, [], Quiet(name), 0, args.split_at,
                                                       args.transfer)

            def whole(name: str, batch: list):
                return lambda: ray_batch.run_ray_bench(batch, pool, out / name / "results.json", _videos(out / name),
                                                       {"run": name}, [], Quiet(name), 0)

            _timed(split("warm-split", warm["split"]))
            _timed(whole("warm-parallel", warm["dp"]))
            return _timed(split("pipelined", samples)), _timed(whole("parallel", shifted))
        finally:
            ray_pool.stop_workers(pool)
    finally:
        ray.shutdown()


def _videos(folder: Path) -> Path:
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    return folder / "videos"


def print_projection(own: argparse.Namespace) -> None:
    """The 4090 table over the assumed step and VAE seconds, at both ends of the projected switch."""
    switch = split_projection.switch_range()
    print(f"\n{split_projection.LABEL}: Wan 2.2 I2V A14B, {own.steps_high} high-noise + {own.steps_low} low-noise "
          f"steps, one expert switch {switch.fast:.2f} s (pinned) to {switch.slow:.2f} s (pageable), "
          f"{split_projection.SWITCHES_PER_VIDEO} per video data parallel, none pipelined; latent transfer "
          f"{own.transfer_s:.2f} s")
    print(f"{'step s':>7} {'VAE s':>6} {'switch s':>9} {'data parallel /min':>19} {'pipelined /min':>15} "
          f"{'pipelined / DP':>15}")
    for step_s in own.step_s:
        for vae_s in own.vae_s:
            for switch_s in (switch.fast, switch.slow):
                row = split_projection.project(step_s, own.steps_high, own.steps_low, vae_s, own.transfer_s,
                                               switch_s)
                print(f"{step_s:7.1f} {vae_s:6.1f} {switch_s:9.2f} {row.data_parallel_per_min:19.3f} "
                      f"{row.pipelined_per_min:15.3f} {row.ratio:15.3f}")


def main(argv: list[str]) -> int:
    """Measures both layouts on the tiny hosts, prints samples/min and their ratio, then the 4090 projection."""
    own, rest = _own_options(argv)
    args = build_parser().parse_args(["bench", *rest])
    if args.split_at is None or args.comfyui is None:
        raise SystemExit("benchmarks/split_pipeline.py: give --split-at K and --comfyui DIR (see the module's usage)")
    samples = [dataclasses.replace(s, seed=args.seed if s.seed is None else s.seed) for s in load_pairs(args.pairs)]
    out = Path(tempfile.mkdtemp(prefix="split-pipeline-"))
    pipelined, parallel = measure(args, own.workers, samples, out)
    pipe_rate, dp_rate = 60 * len(samples) / pipelined, 60 * len(samples) / parallel
    stages = ray_split.stage_counts(own.workers)
    print(f"\nMEASURED on this machine (CPU ComfyUI servers), {own.workers} Ray workers, {len(samples)} samples, "
          f"split at {args.split_at} ({args.transfer}); outputs in {out}")
    print(f"pipelined split ({stages[0]} stage A + {stages[1]} stage B): {pipelined:.2f} s, "
          f"{pipe_rate:.2f} samples/min")
    print(f"data parallel ({own.workers} workers, whole samples):     {parallel:.2f} s, {dp_rate:.2f} samples/min")
    print(f"pipelined / data parallel = {pipe_rate / dp_rate:.2f}")
    print_projection(own)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
