"""``wan-accel bench`` on Ray: its options, and the command that connects to Ray, starts the workers (owning their
servers with ``--ray --comfyui DIR``, or wrapping two or more given ``--server``), runs the batch and always stops
them. Ray is imported only here, and only for those batches (the ``ray`` extra); one server never needs it."""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .batch.progress import BatchDisplay
from .batch.samples import QualityMetric, Sample
from .batch.servers import server_name
from .batch.split_batch import sample_graphs, split_pairs
from .errors import UsageError
from .graph_fill import Overrides
from .launcher import START_TIMEOUT

RAY_MISSING = "--ray needs Ray, which is not installed here: pip install 'wan-accel[ray]' (on every node of the cluster)"
SERVERS_NEED_RAY = ("--server/--servers: {count} servers run on Ray, which is not installed here: pip install "
                    "'wan-accel[ray]', or give one --server to run the batch on one server without Ray")
OWN_SERVER_FLAGS = ("--comfyui", "--comfyui-python", "--comfyui-base", "--ray-workers")


def add_ray_options(bench: argparse.ArgumentParser) -> None:
    """``--ray [local|auto|ADDRESS]``, ``--ray-workers N`` and the ComfyUI each worker starts."""
    group = bench.add_argument_group("Ray (pip install 'wan-accel[ray]'; two or more --server always run on it)")
    group.add_argument("--ray", nargs="?", const="local", metavar="local|auto|ADDRESS",
                       help="the Ray to run on: local (a new Ray on this machine, the default), auto (the cluster "
                            "this node joined with `ray start`) or a cluster address. With --comfyui each worker "
                            "starts its own ComfyUI; with --server each given server gets one worker")
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="with --comfyui: number of workers (default: one per GPU of the cluster; required "
                            "without GPUs, then each ComfyUI runs with --cpu)")
    group.add_argument("--comfyui", metavar="DIR", help="with --ray: the ComfyUI folder each worker starts (the "
                                                        "same path on every node)")
    group.add_argument("--comfyui-python", metavar="PYTHON",
                       help="with --ray: interpreter with ComfyUI's requirements (default: the worker's Python)")
    group.add_argument("--comfyui-base", metavar="DIR", help="with --ray: ComfyUI's --base-directory on every node "
                                                             "(models/ and custom_nodes/; default the --comfyui "
                                                             "folder)")


def _own_server_flags(args: argparse.Namespace) -> list[str]:
    values = (args.comfyui, args.comfyui_python, args.comfyui_base, args.ray_workers)
    return [flag for flag, value in zip(OWN_SERVER_FLAGS, values) if value is not None]


def check_ray_options(args: argparse.Namespace) -> None:
    """``--comfyui`` and ``--ray-workers`` need ``--ray`` and no ``--server``; ``--ray`` without ``--server`` needs
    ``--comfyui``."""
    given = _own_server_flags(args)
    if args.ray is None:
        if given:
            raise UsageError(f"{', '.join(given)} need --ray (bench without Ray uses servers you run: --server URL)")
        return
    if args.server or args.servers:
        if given:
            raise UsageError(f"--ray with --server/--servers runs one Ray worker per given server, and "
                             f"{', '.join(given)} start servers of their own: pass one or the other")
        return
    if args.comfyui is None:
        raise UsageError("--ray needs --comfyui DIR, the ComfyUI folder each worker starts (same path on every "
                         "node), or --server URL for servers you run")
    if not (Path(args.comfyui) / "main.py").is_file():
        raise UsageError(f"--comfyui {args.comfyui}: no main.py there, so not a ComfyUI folder")


def require_ray(server_count: int) -> None:
    """Two or more servers run on Ray: a ``UsageError`` naming the fix when it is not installed (before any work)."""
    if importlib.util.find_spec("ray") is None:
        raise UsageError(SERVERS_NEED_RAY.format(count=server_count))


def cmd_ray_bench(args: argparse.Namespace, name: str, template: Mapping[str, Any], base: Overrides,
                  samples: Sequence[Sample], out_dir: Path, videos: Path, config: Mapping[str, Any],
                  metrics: Sequence[QualityMetric], urls: Sequence[str] | None) -> int:
    """Connects to Ray, starts the workers (one per URL of ``urls``, or owning their servers when None), runs the
    batch, prints the summary; stops the workers whatever happens."""
    try:
        import ray

        from .batch import ray_batch, ray_pool, ray_split
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "ray":
            raise UsageError(RAY_MISSING if urls is None else SERVERS_NEED_RAY.format(count=len(urls))) from None
        raise
    started = time.monotonic()
    own = ray_pool.connect(args.ray or "local", args.ray_workers)
    try:
        workers = _start(args, name, template, base, samples, out_dir, urls, ray_pool)
        display = BatchDisplay([w.label for w in workers])
        try:
            ray_pool.wait_ready(workers, display, ray_batch.Patience().probe_seconds)
            ready = sum(not w.left_out and w.down_since is None for w in workers)
            display.message(f"Ray start-up: {time.monotonic() - started:.1f} s to {ready} ready worker(s)")
            results = out_dir / "results.json"
            if args.split_at is None:
                summary = ray_batch.run_ray_bench(samples, workers, results, videos, config, metrics, display,
                                                  args.retries, args.overwrite)
            else:
                stage_a, stage_b = _stages(workers, urls, ray_split)
                summary = ray_split.run_ray_split(samples, stage_a, stage_b, results, videos, config, metrics,
                                                  display, args.retries, args.split_at, args.transfer, args.overwrite)
        except KeyboardInterrupt:
            print(f"interrupted: the prompt in flight on every worker was interrupted; finished samples are saved "
                  f"in {out_dir / 'results.json'}; run the same command to resume", file=sys.stderr, flush=True)
            return 130
        finally:
            ray_pool.stop_workers(workers)
    finally:
        if own:
            ray.shutdown()
    for line in summary.lines():
        display.message(line)
    return 0 if summary.failed == 0 else 1


def _start(args: argparse.Namespace, name: str, template: Mapping[str, Any], base: Overrides,
           samples: Sequence[Sample], out_dir: Path, urls: Sequence[str] | None, ray_pool: Any) -> list:
    """The workers: one wrapping each given server, or the planned number owning theirs; says what it starts."""
    if urls is not None:
        checked: list = [None] * len(urls)
        if args.split_at is not None:
            graphs = sample_graphs(template, base, None, args.split_at, args.transfer)
            checked = [graphs.stage_a, graphs.stage_b] * len(split_pairs(urls))
        print(f"wan-accel bench: {name} on {', '.join(server_name(url) for url in urls)} (a Ray worker each), "
              f"{len(samples)} sample(s), results in {out_dir}", flush=True)
        return ray_pool.start_server_workers(urls, template, base, args.timeout, checked)
    count, gpus = ray_pool.plan(args.ray_workers)
    if args.split_at is not None and count < 2:
        raise UsageError(f"--split-at with --ray needs 2 or more workers (stage A and stage B); the plan has "
                         f"{count}: give --ray-workers 2 or more, or a cluster with 2 or more GPUs")
    print(f"wan-accel bench: {name} on {count} Ray worker(s) ({'one GPU each' if gpus else 'CPU only'}), "
          f"{len(samples)} sample(s), results in {out_dir}", flush=True)
    spec = ray_pool.WorkerSpec(str(Path(args.comfyui).resolve()), args.comfyui_python,
                               str(Path(args.comfyui_base).resolve()) if args.comfyui_base else None,
                               template, base, args.timeout, START_TIMEOUT)
    return ray_pool.start_workers(spec, count, gpus, args.retries)


def _stages(workers: list, urls: Sequence[str] | None, ray_split: Any) -> tuple[list, list]:
    """(stage-A workers, stage-B workers): the first and second of each given pair, or half and half."""
    if urls is not None:
        return workers[0::2], workers[1::2]
    first_b = ray_split.stage_counts(len(workers))[0]
    return workers[:first_b], workers[first_b:]
