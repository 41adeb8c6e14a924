"""Ray workers against the thread-per-server queue on the same servers: start-up seconds and idle gap per worker.

    python -m benchmarks.ray_vs_queue --workers 2 --comfyui DIR --comfyui-python PY --comfyui-base DIR \\
        --pairs pairs.csv [any other `wan-accel bench` option: --width 32 --steps 2 --dit FILE ...]

Both engines start the same number of ComfyUI servers from ``--comfyui`` (CPU-only servers on a machine without
GPUs), in parallel, and run the same pairs. Start-up is from the engine's first call to every server ready (passed
the bench start-up check): for the queue, servers started by ``wan_accel.launcher`` in threads; for Ray, ``ray.init``
on this machine plus the actors starting theirs. The idle gap is what each server's own ``/history`` stamps say:
seconds between one prompt's end and its next prompt's start (upload, queueing, download and dispatch included).
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


from wan_accel.batch.dispatch import run_bench
from wan_accel.batch.samples import load_pairs
from wan_accel.batch.server_history import idle_gaps, prompt_runs, read_history
from wan_accel.batch.servers import ComfyBenchServer
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


def queue_engine(args, workers: int, template, base, samples, out: Path) -> tuple[float, float, list[list[float]]]:
    """The thread-per-server queue: (start-up seconds, its slowest server's own start-up, idle gaps per server)."""
    started = time.monotonic()
    servers: list[LocalComfyUI | None] = [None] * workers
    ready, done = threading.Barrier(workers + 1), threading.Event()

    def start(i: int) -> None:   # the thread lives as long as its server: the launcher's PDEATHSIG is per thread
        try:
            servers[i] = _start_server(args, Path(tempfile.mkdtemp(prefix=f"queue-{i}-")))
        finally:
            ready.wait()
        done.wait()

    threads = [threading.Thread(target=start, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    ready.wait()
    try:
        bench_servers = [ComfyBenchServer(s.url, template, base, out / "videos", args.timeout) for s in servers]
        for server in bench_servers:
            server.check()
        startup = time.monotonic() - started
        run_bench(samples, bench_servers, out / "results.json", {"engine": "queue"}, [], Quiet("queue"))
        slowest = max(s.startup_seconds for s in servers)
        return startup, slowest, [idle_gaps(prompt_runs(read_history(s.url))) for s in servers]
    finally:
        for server in servers:
            if server is not None:
                server.stop()
        done.set()


def ray_engine(args, workers: int, template, base, samples, out: Path) -> tuple[float, float, list[list[float]]]:
    """Ray local: (start-up seconds, its slowest server's own start-up, idle gaps per worker's server)."""
    import ray

    from wan_accel.batch import ray_batch

    started = time.monotonic()
    ray_batch.connect("local", workers)
    try:
        spec = ray_batch.WorkerSpec(str(Path(args.comfyui).resolve()), args.comfyui_python, args.comfyui_base,
                                    template, base, args.timeout, START_TIMEOUT)
        pool = ray_batch.start_workers(spec, workers, 0, retries=2)
        try:
            ray_batch.wait_ready(pool, Quiet("ray"))
            startup = time.monotonic() - started
            slowest = max(w.info.startup_seconds for w in pool if w.info is not None)
            (out / "videos").mkdir(parents=True)
            ray_batch.run_ray_bench(samples, pool, out / "results.json", out / "videos", {"engine": "ray"}, [],
                                    Quiet("ray"), retries=2)
            gaps = [idle_gaps(ray.get(w.actor.history.remote())) for w in pool]
        finally:
            ray_batch.stop_workers(pool)
    finally:
        ray.shutdown()
    return startup, slowest, gaps


def _gap_line(name: str, gaps: list[list[float]]) -> tuple[float, str]:
    flat = [g for per_worker in gaps for g in per_worker]
    mean = statistics.mean(flat) if flat else float("nan")
    per = ", ".join(f"worker {i + 1}: mean {statistics.mean(g):.3f} s max {max(g):.3f} s over {len(g)}"
                    for i, g in enumerate(gaps) if g)
    return mean, f"{name:5s} idle gap between samples: mean {mean:.3f} s ({per})"


def main(argv: list[str]) -> int:
    """Runs the queue, then Ray, on the same pairs; prints both figures and their ratio."""
    workers = 2
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    args = build_parser().parse_args(["bench", *argv])
    _, path = find_workflow(args.workflow)
    template, base = load_api_workflow(path), overrides_from(args)
    samples = [dataclasses.replace(s, seed=args.seed if s.seed is None else s.seed) for s in load_pairs(args.pairs)]
    out = Path(tempfile.mkdtemp(prefix="ray-vs-queue-"))
    queue_startup, queue_server, queue_gaps = queue_engine(args, workers, template, base, samples, out / "queue")
    ray_startup, ray_server, ray_gaps = ray_engine(args, workers, template, base, samples, out / "ray")
    queue_mean, queue_line = _gap_line("queue", queue_gaps)
    ray_mean, ray_line = _gap_line("ray", ray_gaps)
    queue_own, ray_own = queue_startup - queue_server, ray_startup - ray_server
    print(f"{workers} workers, {len(samples)} samples, outputs in {out}")
    print(f"queue start-up: {queue_startup:.2f} s (servers started in threads + start-up check), of which the "
          f"engine's own (beyond its slowest server's {queue_server:.2f} s): {queue_own:.2f} s")
    print(f"ray   start-up: {ray_startup:.2f} s (ray.init local + actors + their servers + start-up check), of which "
          f"the engine's own (beyond its slowest server's {ray_server:.2f} s): {ray_own:.2f} s -> ray / queue = "
          f"{ray_startup / queue_startup:.2f}")
    print(queue_line)
    print(ray_line + f" -> ray / queue = {ray_mean / queue_mean:.2f}")
    print(f"targets: ray's own start-up < 15 s: {'met' if ray_own < 15 else 'NOT met'}; ray idle gap < 0.5 s: "
          f"{'met' if ray_mean < 0.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
