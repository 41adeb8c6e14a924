"""Benchmark: TeaCache, MagCache (both from a calibration profile) and the host's EasyCache at matched numbers of
computed steps, against no cache measured in the same run, on the tiny Wan 2.1 I2V DiT in-process.

8 uni_pc steps at cfg 1 (one DiT forward per step). For every target number of computed forwards, each method's
smallest threshold on a grid (then a log-bisection) that reaches it is timed against no cache, alternating runs,
best of --repeats, and compared with the uncached latent: DiT forwards computed, wall-time ratio (no cache /
method; also in process CPU time, which other jobs on a shared machine disturb less), PSNR (peak = the reference's
value range) and relative L2.
The tiny DiT has random weights: the numbers show the mechanics, not the quality on the real 14B model.

Usage (from the repository root): COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.caching
    [--dim 256 --layers 4 --ffn 1024 --width 96 --height 96 --length 9 --steps 8 --repeats 2 --targets 6,5,4,3]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

METHODS = ("TeaCache (profile)", "MagCache (profile)", "EasyCache (host)")
GRIDS = {  # geometric threshold grids, factor 1.5
    "TeaCache (profile)": [0.1 * 1.5**i for i in range(15)],
    "MagCache (profile)": [0.005 * 1.5**i for i in range(15)],
    "EasyCache (host)": [0.01 * 1.5**i for i in range(15)],  # the host node's maximum is 3.0
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256, help="DiT width (multiple of 128)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--length", type=int, default=9)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--targets", default="6,5,4,3", help="numbers of computed forwards to match")
    return parser.parse_args()


def find_threshold(count_at: Callable[[float], int], grid: list[float], target: int) -> float | None:
    """Smallest grid threshold whose run computes ``target`` forwards, else a log-bisection between neighbours."""
    for threshold in grid:
        if count_at(threshold) == target:
            return threshold
    above = [t for t in grid if count_at(t) > target]
    below = [t for t in grid if count_at(t) < target and (not above or t > max(above))]
    if not above or not below:
        return None
    low, high = max(above), min(below)
    for _ in range(6):
        middle = math.sqrt(low * high)
        count = count_at(middle)
        if count == target:
            return middle
        low, high = (middle, high) if count > target else (low, middle)
    return None


def main() -> None:
    args = parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("benchmarks/caching.py: set COMFYUI_PATH to a ComfyUI checkout (the directory holding main.py)")
    warnings.filterwarnings("ignore", category=UserWarning, module="comfy_extras.nodes_easycache")
    from tests.support.host_inprocess import import_pack_module
    from tests.support.tiny_sampling import ForwardCounter, TinyWanSampler, psnr, relative_l2

    tiny = TinyWanSampler(dim=args.dim, layers=args.layers, ffn=args.ffn)
    step_cache = import_pack_module("nodes.step_cache")
    calibrate = import_pack_module("nodes.step_cache_calibrate")
    import folder_paths
    from comfy_extras.nodes_easycache import EasyCacheNode

    shape = dict(steps=args.steps, cfg=1.0, width=args.width, height=args.height, length=args.length)

    def sample(model=None, counter: ForwardCounter | None = None) -> torch.Tensor:
        return tiny.sample(model, counter=counter, **shape)

    def timed(model) -> tuple[float, float]:
        """(wall, CPU) seconds of one run; CPU time counts only this process, which a shared machine disturbs less."""
        wall, cpu = time.perf_counter(), time.process_time()
        sample(model)
        return time.perf_counter() - wall, time.process_time() - cpu

    def paired_times(model) -> tuple[float, float, float, float]:
        """Best (wall, CPU) of no cache and of ``model``, measured alternately so both see the same machine load."""
        plain, cached = [], []
        for _ in range(args.repeats):
            plain.append(timed(None))
            cached.append(timed(model))
        return (min(t[0] for t in plain), min(t[1] for t in plain), min(t[0] for t in cached),
                min(t[1] for t in cached))

    profile_dir = tempfile.mkdtemp(prefix="wan_accel_profiles_")
    folder_paths.folder_names_and_paths[step_cache.PROFILE_FOLDER] = ([profile_dir], set())
    calibration_s, _ = timed(calibrate.WanStepCacheCalibrate.execute(tiny.patcher, "bench", 2).result[0])

    builders: dict[str, Callable[[float], object]] = {
        "TeaCache (profile)": lambda t: step_cache.WanTeaCache.execute(
            tiny.patcher, "wan2.1_i2v_480p_14B", "bench.json", t, 1, 1, 100, 0.0, 1.0, "compute").result[0],
        "MagCache (profile)": lambda t: step_cache.WanMagCache.execute(
            tiny.patcher, "wan2.1_i2v_480p_14B", "bench.json", t, 100, 0.2, 1, "compute").result[0],
        "EasyCache (host)": lambda t: EasyCacheNode.execute(tiny.patcher, t, 0.15, 0.95, False).result[0],
    }
    counts: dict[tuple[str, float], int] = {}

    def count_for(method: str) -> Callable[[float], int]:
        def count_at(threshold: float) -> int:
            if (method, threshold) not in counts:
                counter = ForwardCounter()
                sample(builders[method](threshold), counter)
                counts[(method, threshold)] = len(counter.forwards)
            return counts[(method, threshold)]
        return count_at

    reference = sample()
    print(f"tiny Wan 2.1 I2V DiT dim {args.dim}, {args.layers} layers, ffn {args.ffn}; latent "
          f"{tuple(tiny.noise(args.width, args.height, args.length).shape)}; {args.steps} uni_pc steps, cfg 1, "
          f"{torch.get_num_threads()} CPU threads; best of {args.repeats}, cached and uncached runs alternating")
    print(f"calibration run (every step computed + profile written): {calibration_s:.3f} s")
    print(f"{'computed':>8}  {'method':<20} {'threshold':>9}  {'no cache s':>10}  {'cached s':>8}  {'wall':>6}  "
          f"{'CPU':>6}  {'PSNR dB':>7}  {'rel L2':>7}")
    for target in (int(t) for t in args.targets.split(",")):
        for method in METHODS:
            threshold = find_threshold(count_for(method), GRIDS[method], target)
            if threshold is None:
                print(f"{target:>8}  {method:<20} no threshold computes exactly {target} forwards")
                continue
            model = builders[method](threshold)
            counter = ForwardCounter()
            output = sample(model, counter)
            plain_s, plain_cpu, cached_s, cached_cpu = paired_times(model)
            print(f"{len(counter.forwards):>8}  {method:<20} {threshold:9.4f}  {plain_s:10.3f}  {cached_s:8.3f}  "
                  f"{plain_s / cached_s:5.2f}x  {plain_cpu / cached_cpu:5.2f}x  {psnr(output, reference):7.2f}  "
                  f"{relative_l2(output, reference):7.4f}")


if __name__ == "__main__":
    main()
