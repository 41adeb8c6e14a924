"""Ray workers wrapping servers you run against Ray workers owning their servers: start-up seconds and idle gap.

    python -m benchmarks.ray_wrap_vs_own --workers 2 --comfyui DIR --comfyui-python PY --comfyui-base DIR \\
        --pairs pairs.csv [any other `wan-accel bench` option: --width 32 --steps 2 --dit FILE ...]

Both run the same pairs on the same number of CPU ComfyUI servers started from ``--comfyui``. Wrapping (``bench
--server A --server B``): the servers are started first, in parallel, by ``wan_accel.launcher``; start-up is from
``ray.init`` to every wrapping actor ready (its server passed the bench start-up check), so it is Ray's own cost.
Owning (``bench --ray --comfyui DIR``): start-up is from ``ray.init`` to every actor ready, its server's start
included; its share beyond the slowest server's own start is Ray's. The idle gap is what each server's own
``/history`` stamps say: seconds between one prompt's end and its next prompt's start (upload, queueing, download
and dispatch included). Targets of issue 26: Ray's own start-up under 15 s, an idle gap under 0.5 s.
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from wan_accel.batch import ray_batch, ray_pool
from wan_accel.batch.samples import load_pairs
from wan_accel.batch.server_history import idle_gaps
from wan_accel.cli import build_parser, overrides_from
from wan_accel.graph_fill import load_api_workflow
from wan_accel.launcher import START_TIMEOUT, LocalComfyUI
from wan_accel.workflow_catalog import find_workflow

FOLDERS = ("input", "output", "temp", "user")


class Quiet:
    """A bench display that keeps nothing but the messages (printed with a prefix)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def message(self, text: str) -> None:
        print(f"  [{self.prefix}] {text}", flush=True)

    def progress(self, server: str, sample_id: str, event: object) -> None:
        return None

    def overall(self, done: int, failed: int, total: int) -> None:
        return None


def _start_server(args, scratch: Path) -> LocalComfyUI:
    folders = []
    for name in FOLDERS:
        (scratch / name).mkdir(parents=True)
        folders += [f"--{name}-directory", str(scratch / name)]
    return LocalComfyUI(Path(args.comfyui), args.comfyui_python, cpu=True,
                        base_dir=Path(args.comfyui_base) if args.comfyui_base else None, extra_args=folders).start()


def _run(pool, samples, out: Path, name: str, started: float) -> tuple[float, list[list[float]]]:
    """Waits for ``pool``, runs the pairs on it; (seconds from ``started`` to every worker ready, idle gaps per
    worker's server)."""
    ray_pool.wait_ready(pool, Quiet(name), ray_batch.Patience().probe_seconds)
    ready = time.monotonic() - started
    (out / "videos").mkdir(parents=True)
    summary = ray_batch.run_ray_bench(samples, pool, out / "results.json", out / "videos", {"engine": name}, [],
                                      Quiet(name), retries=2)
    if summary.failed:
        raise SystemExit(f"benchmarks/ray_wrap_vs_own.py: {summary.failed} sample(s) failed; see the lines above")
    return ready, [idle_gaps(ray.get(w.actor.history.remote())) for w in pool]


def wrapping(args, workers: int, template, base, samples, out: Path) -> tuple[float, list[list[float]]]:
    """Servers started first (in parallel threads, which stay alive with them: the launcher's PDEATHSIG is per
    thread), then Ray wrapping them: (Ray's start-up seconds, idle gaps per server)."""
    with ThreadPoolExecutor(workers) as starting:
        servers = list(starting.map(lambda i: _start_server(args, Path(tempfile.mkdtemp(prefix=f"wrap-{i}-"))),
                                    range(workers)))
        try:
            started = time.monotonic()
            ray_pool.connect("local", None)
            try:
                pool = ray_pool.start_server_workers([s.url for s in servers], template, base, args.timeout,
                                                     [None] * workers)
                try:
                    return _run(pool, samples, out, "wrap", started)
                finally:
                    ray_pool.stop_workers(pool)
            finally:
                ray.shutdown()
        finally:
            for server in servers:
                server.stop()


def owning(args, workers: int, template, base, samples, out: Path) -> tuple[float, float, list[list[float]]]:
    """Ray starting the servers itself: (start-up seconds, its slowest server's own start-up, idle gaps)."""
    started = time.monotonic()
    ray_pool.connect("local", workers)
    try:
        spec = ray_pool.WorkerSpec(str(Path(args.comfyui).resolve()), args.comfyui_python, args.comfyui_base,
                                   template, base, args.timeout, START_TIMEOUT)
        pool = ray_pool.start_workers(spec, workers, 0, retries=2)
        try:
            startup, gaps = _run(pool, samples, out, "own", started)
            slowest = max(w.info.startup_seconds for w in pool if w.info is not None)
        finally:
            ray_pool.stop_workers(pool)
    finally:
        ray.shutdown()
    return startup, slowest, gaps


def _gap_line(name: str, gaps: list[list[float]]) -> tuple[float, str]:
    flat = [g for per_worker in gaps for g in per_worker]
    mean = statistics.mean(flat) if flat else float("nan")
    per = ", ".join(f"worker {i + 1}: mean {statistics.mean(g):.3f} s max {max(g):.3f} s over {len(g)}"
                    for i, g in enumerate(gaps) if g)
    return mean, f"{name:4s} idle gap between samples: mean {mean:.3f} s ({per})"


def main(argv: list[str]) -> int:
    """Runs the wrapping workers, then the owning ones, on the same pairs; prints both figures."""
    workers = 2
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    args = build_parser().parse_args(["bench", *argv])
    _, path = find_workflow(args.workflow)
    template, base = load_api_workflow(path), overrides_from(args)
    samples = [dataclasses.replace(s, seed=args.seed if s.seed is None else s.seed) for s in load_pairs(args.pairs)]
    out = Path(tempfile.mkdtemp(prefix="ray-wrap-vs-own-"))
    wrap_startup, wrap_gaps = wrapping(args, workers, template, base, samples, out / "wrap")
    own_startup, own_server, own_gaps = owning(args, workers, template, base, samples, out / "own")
    wrap_mean, wrap_line = _gap_line("wrap", wrap_gaps)
    own_mean, own_line = _gap_line("own", own_gaps)
    own_share = own_startup - own_server
    print(f"{workers} workers, {len(samples)} samples, outputs in {out}")
    print(f"wrap start-up: {wrap_startup:.2f} s (ray.init local + actors wrapping running servers + start-up check: "
          f"Ray's own cost)")
    print(f"own  start-up: {own_startup:.2f} s (ray.init local + actors + their servers + start-up check), of which "
          f"Ray's own (beyond its slowest server's {own_server:.2f} s): {own_share:.2f} s")
    print(wrap_line)
    print(own_line)
    print(f"targets: Ray's own start-up < 15 s: wrap {'met' if wrap_startup < 15 else 'NOT met'}, own "
          f"{'met' if own_share < 15 else 'NOT met'}; idle gap < 0.5 s: wrap {'met' if wrap_mean < 0.5 else 'NOT met'}"
          f", own {'met' if own_mean < 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
