"""Benchmark: torch ``enhance_video`` vs the naive per-frame OpenCV loop, measured in the same run.

Usage (from the repository root): python -m benchmarks.postprocess [--frames 81 --height 480 --width 832 --repeats 3]
"""
from __future__ import annotations

import argparse

import cv2
import torch

from benchmarks.lib.synthetic_video import synthetic_video
from benchmarks.lib.timing import best_time
from tests.support.reference_cv2 import enhance_video_naive_cv2
from wan_accel_kernels.postprocess import DEFAULT_CHUNK_FRAMES, enhance_video


def main() -> None:
    """Times both implementations on the same synthetic clip and prints a table with the speed ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-frames", type=int, default=DEFAULT_CHUNK_FRAMES)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch and OpenCV (0: their defaults)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    video = synthetic_video(args.frames, args.height, args.width)
    frames_np = video.numpy()
    ours_cpu = enhance_video(video, chunk_frames=args.chunk_frames)
    naive = enhance_video_naive_cv2(frames_np)
    max_diff = float((ours_cpu - torch.from_numpy(naive)).abs().max())

    naive_times, ours_times = [], []
    for _ in range(args.repeats):  # interleaved so both see the same machine load
        naive_times.append(best_time(lambda: enhance_video_naive_cv2(frames_np), 1, warmup=False))
        ours_times.append(best_time(lambda: enhance_video(video, chunk_frames=args.chunk_frames), 1, warmup=False))
    t_naive, t_ours = min(naive_times), min(ours_times)

    print(f"clip: {args.frames} frames {args.width}x{args.height}, threads: torch {torch.get_num_threads()}, "
          f"OpenCV {cv2.getNumThreads()}, "
          f"max |ours - naive| = {max_diff:.2e}")
    print(f"{'implementation':<34}{'seconds':>10}{'frames/s':>12}")
    print(f"{'naive per-frame OpenCV (CPU)':<34}{t_naive:>10.3f}{args.frames / t_naive:>12.1f}")
    print(f"{'enhance_video torch (CPU)':<34}{t_ours:>10.3f}{args.frames / t_ours:>12.1f}")
    print(f"speed-up vs naive OpenCV: {t_naive / t_ours:.2f}x")
    if torch.cuda.is_available():
        gpu_video = video.cuda()
        enhance_video(gpu_video, chunk_frames=args.chunk_frames)
        t_gpu = best_time(lambda: enhance_video(gpu_video, chunk_frames=args.chunk_frames), args.repeats,
                          torch.cuda.synchronize)
        print(f"{'enhance_video torch (' + torch.cuda.get_device_name() + ')':<34}{t_gpu:>10.3f}"
              f"{args.frames / t_gpu:>12.1f}")


if __name__ == "__main__":
    main()
