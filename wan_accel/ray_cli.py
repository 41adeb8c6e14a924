"""``wan-accel bench --ray``: its options, and the command that connects to Ray, starts the workers, runs the batch
and always stops them. Ray is imported only here, and only when ``--ray`` is given (the ``ray`` extra)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .batch.samples import QualityMetric, Sample
from .batch.progress import BatchDisplay
from .errors import UsageError
from .graph_fill import Overrides
from .launcher import START_TIMEOUT

RAY_MISSING = "--ray needs Ray, which is not installed here: pip install 'wan-accel[ray]' (on every node of the cluster)"


def add_ray_options(bench: argparse.ArgumentParser) -> None:
    """``--ray [local|auto|ADDRESS]``, ``--ray-workers N`` and the ComfyUI each worker starts."""
    group = bench.add_argument_group("Ray (pip install 'wan-accel[ray]')")
    group.add_argument("--ray", nargs="?", const="local", metavar="local|auto|ADDRESS",
                       help="run the batch on Ray workers, each starting its own ComfyUI from --comfyui: local (a "
                            "new Ray on this machine, the default), auto (the cluster this node joined with `ray "
                            "start`) or a cluster address")
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="number of workers (default: one per GPU of the cluster; required without GPUs, then "
                            "each ComfyUI runs with --cpu)")
    group.add_argument("--comfyui", metavar="DIR", help="with --ray: the ComfyUI folder each worker starts (the "
                                                        "same path on every node)")
    group.add_argument("--comfyui-python", metavar="PYTHON",
                       help="with --ray: interpreter with ComfyUI's requirements (default: the worker's Python)")
    group.add_argument("--comfyui-base", metavar="DIR", help="with --ray: ComfyUI's --base-directory on every node "
                                                             "(models/ and custom_nodes/; default the --comfyui "
                                                             "folder)")


def check_ray_options(args: argparse.Namespace) -> None:
    """``--comfyui`` and ``--ray-workers`` need ``--ray``; ``--ray`` needs ``--comfyui`` and no ``--server``."""
    if args.ray is None:
        given = [flag for flag, value in (("--comfyui", args.comfyui), ("--comfyui-python", args.comfyui_python),
                                          ("--comfyui-base", args.comfyui_base), ("--ray-workers", args.ray_workers))
                 if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need --ray (bench without Ray uses servers you run: --server URL)")
        return
    if args.server or args.servers:
        raise UsageError("--ray starts a ComfyUI per worker and --server/--servers use servers you run: pass one "
                         "or the other")
    if args.comfyui is None:
        raise UsageError("--ray needs --comfyui DIR, the ComfyUI folder each worker starts (same path on every "
                         "node)")
    if not (Path(args.comfyui) / "main.py").is_file():
        raise UsageError(f"--comfyui {args.comfyui}: no main.py there, so not a ComfyUI folder")


def cmd_ray_bench(args: argparse.Namespace, name: str, template: Mapping[str, Any], base: Overrides,
                  samples: Sequence[Sample], out_dir: Path, videos: Path, config: Mapping[str, Any],
                  metrics: Sequence[QualityMetric]) -> int:
    """Connects to Ray, starts the workers, runs the batch, prints the summary; stops the workers whatever happens."""
    try:
        import ray

        from .batch import ray_batch, ray_split
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "ray":
            raise UsageError(RAY_MISSING) from None
        raise
    started = time.monotonic()
    own = ray_batch.connect(args.ray, args.ray_workers)
    try:
        count, gpus = ray_batch.plan(args.ray_workers)
        if args.split_at is not None and count < 2:
            raise UsageError(f"--split-at with --ray needs 2 or more workers (stage A and stage B); the plan has "
                             f"{count}: give --ray-workers 2 or more, or a cluster with 2 or more GPUs")
        print(f"wan-accel bench: {name} on {count} Ray worker(s) ({'one GPU each' if gpus else 'CPU only'}), "
              f"{len(samples)} sample(s), results in {out_dir}", flush=True)
        spec = ray_batch.WorkerSpec(str(Path(args.comfyui).resolve()), args.comfyui_python,
                                    str(Path(args.comfyui_base).resolve()) if args.comfyui_base else None,
                                    template, base, args.timeout, START_TIMEOUT)
        workers = ray_batch.start_workers(spec, count, gpus, args.retries)
        display = BatchDisplay([w.label for w in workers])
        try:
            ray_batch.wait_ready(workers, display)
            display.message(f"Ray start-up: {time.monotonic() - started:.1f} s to {count} ready worker(s)")
            if args.split_at is None:
                summary = ray_batch.run_ray_bench(samples, workers, out_dir / "results.json", videos, config,
                                                  metrics, display, args.retries, args.overwrite)
            else:
                first_b = ray_split.stage_counts(count)[0]
                summary = ray_split.run_ray_split(samples, workers[:first_b], workers[first_b:],
                                                  out_dir / "results.json", videos, config, metrics, display,
                                                  args.retries, args.split_at, args.transfer, args.overwrite)
        except KeyboardInterrupt:
            print(f"interrupted: the prompt in flight on every worker was interrupted; finished samples are saved "
                  f"in {out_dir / 'results.json'}; run the same command to resume", file=sys.stderr, flush=True)
            return 130
        finally:
            ray_batch.stop_workers(workers)
    finally:
        if own:
            ray.shutdown()
    for line in summary.lines():
        display.message(line)
    return 0 if summary.failed == 0 else 1
