"""Seconds per quality metric per video, against decoding the same video (the baseline, measured in the same run).

    python -m benchmarks.score_speed [--weights DIR] [--frames 81 --height 480 --width 832] [--device auto]
        [--generation-seconds S]

Without ``--weights`` every metric runs with random weights of its real architecture (``score_weights.py``;
random weights cost what real ones do). ``--generation-seconds``: the time to generate one such video on the same
device, to check the goal that scoring costs well under a tenth of it. The default size is the challenge's
832x480x81; on a CPU pass a reduced one (e.g. ``--frames 17 --height 240 --width 416``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.lib.score_weights import write_random_weights
from wan_accel.quality.registry import load_metric
from wan_accel.quality.scoring import DEFAULT_METRICS, parse_metrics, pick_device
from wan_accel.quality.video_io import load_video


def panning_video(path: Path, frames: int, height: int, width: int, fps: int = 16) -> Path:
    """A smooth random texture panning 2 px a frame, written losslessly with PyAV; the image is its first frame."""
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8 + 1, (width + 2 * frames) // 8 + 1, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((texture.shape[1] * 8, texture.shape[0] * 8),
                                                         Image.BILINEAR))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "rgb24"
        stream.options = {"crf": "0"}
        for i in range(frames):
            frame = np.ascontiguousarray(texture[:height, 2 * i:2 * i + width])
            if i == 0:
                Image.fromarray(frame).save(path.with_suffix(".png"))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="the metrics' weight files (default: random weights)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--generation-seconds", type=float, help="seconds to generate one such video on this device")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights or write_random_weights(tmp / "weights")
        video = panning_video(tmp / "pan.mp4", args.frames, args.height, args.width)
        t0 = time.perf_counter()
        clip = load_video(video, video.with_suffix(".png"))
        decode = time.perf_counter() - t0
        print(f"{args.frames}x{args.height}x{args.width} video on {device}, "
              f"{'random' if args.weights is None else 'given'} weights; baseline: decoding it {decode:.3f} s")
        print(f"{'metric':<11} {'load s':>7} {'measure s':>10} {'s/frame':>8} {'x decode':>9}  value")
        total = 0.0
        for name in parse_metrics(args.metrics):
            t0 = time.perf_counter()
            metric = load_metric(name, device, weights)
            loaded = time.perf_counter() - t0
            t0 = time.perf_counter()
            value = metric.measure(clip).value
            seconds = time.perf_counter() - t0
            total += seconds
            print(f"{name:<11} {loaded:>7.2f} {seconds:>10.2f} {seconds / args.frames:>8.3f} "
                  f"{seconds / decode:>9.1f}  {value:.4f}")
        print(f"all metrics: {total:.2f} s per video ({total / decode:.1f}x decoding it)")
        if args.generation_seconds:
            print(f"scoring / generating: {total / args.generation_seconds:.3f} (goal: well under 0.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
