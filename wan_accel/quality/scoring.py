"""Scores videos with the chosen metrics: weights checked before any network loads, one record per video, the
challenge's means and final score over them."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..batch.samples import speed_score
from ..errors import UsageError
from .formulas import FINAL_INDICES, final_score
from .jobs import ScoreJob
from .registry import METRIC_MODULES, load_metric, weight_specs
from .video_io import load_video
from .weights import locate

#: Metrics scored when ``--metrics`` is not given: the four of the final score, then the dynamic degree.
DEFAULT_METRICS = ("subject", "background", "smoothness", "imaging", "dynamic")
IMAGE_METRICS = frozenset({"subject", "background"})


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``--metrics subject,imaging``: known names, in the order given, without repeats."""
    if not text:
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRIC_MODULES]
    if unknown or not names:
        raise UsageError(f"--metrics {text}: unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(METRIC_MODULES)}")
    return names


def pick_device(device: str) -> str:
    """``auto`` is the first CUDA GPU when torch sees one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this torch sees no CUDA GPU; use --device cpu or auto")
    return device


class Scorer:
    """The chosen metrics, loaded once; :meth:`score` is thread-safe (one video at a time through the networks)."""

    def __init__(self, names: Sequence[str], device: str = "auto", weights_dir: Path | None = None):
        for spec in weight_specs(names):       # every file checked before the first network loads
            locate(spec, weights_dir)
        self.names = tuple(names)
        self.device = pick_device(device)
        self.needs_image = bool(IMAGE_METRICS & set(names))
        self.metrics = [load_metric(name, self.device, weights_dir) for name in names]
        self._lock = threading.Lock()

    def score(self, job: ScoreJob) -> dict[str, Any]:
        """One video's record: indices, the per-frame curves, its speed score and final score when its time is
        known."""
        video = load_video(job.video, job.image if self.needs_image else None)
        indices, curves = {}, {}
        with self._lock:
            for metric in self.metrics:
                value = metric.measure(video)
                indices[metric.name] = float(value.value)
                if value.curves:
                    curves[metric.name] = {k: [float(v) for v in vals] for k, vals in value.curves.items()}
        speed = speed_score(job.seconds) if job.seconds is not None else None
        return {"id": job.id, "video": str(job.video), "image": None if job.image is None else str(job.image),
                "seconds": job.seconds, "speed_score": speed, "indices": indices,
                "final": final_score(indices, speed), "curves": curves}


def summarise_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means of each index over the videos, the speed score of the mean time, and the final score from them (the
    challenge averages each index over its videos and scores the mean time); the dynamic degree stays outside."""
    names = [n for n in DEFAULT_METRICS if any(n in r["indices"] for r in records)]
    means = {n: sum(vals) / len(vals) for n in names if (vals := [r["indices"][n] for r in records
                                                                     if n in r["indices"]])}
    times = [r["seconds"] for r in records if r.get("seconds") is not None]
    mean_seconds = sum(times) / len(times) if times else None
    speed = speed_score(mean_seconds) if mean_seconds is not None else None
    return {"videos": len(records), "means": means, "mean_seconds": mean_seconds, "speed_score": speed,
            "final": final_score(means, speed) if len(times) == len(records) else None}


def score_table(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[str]:
    """The terminal table: one row per video, then the means, the speed score and the final score."""
    names = [n for n in DEFAULT_METRICS if n in summary["means"]]
    width = max([len("mean")] + [len(str(r["id"])) for r in records])
    head = f"{'sample':<{width}}  " + "  ".join(f"{n:>10}" for n in names) + f"  {'seconds':>8}  {'final':>7}"
    rows = [head, "-" * len(head)]
    for r in records:
        cells = "  ".join(f"{r['indices'][n]:>10.4f}" if n in r["indices"] else f"{'-':>10}" for n in names)
        seconds = f"{r['seconds']:>8.2f}" if r.get("seconds") is not None else f"{'-':>8}"
        final = f"{r['final']:>7.4f}" if r.get("final") is not None else f"{'-':>7}"
        rows.append(f"{r['id']:<{width}}  {cells}  {seconds}  {final}")
    rows.append("-" * len(head))
    mean_cells = "  ".join(f"{summary['means'][n]:>10.4f}" for n in names)
    seconds = f"{summary['mean_seconds']:>8.2f}" if summary["mean_seconds"] is not None else f"{'-':>8}"
    final = f"{summary['final']:>7.4f}" if summary["final"] is not None else f"{'-':>7}"
    rows.append(f"{'mean':<{width}}  {mean_cells}  {seconds}  {final}")
    if summary["speed_score"] is not None:
        rows.append(f"speed score {summary['speed_score']:g} (mean {summary['mean_seconds']:.2f} s per video)")
    missing = [n for n in FINAL_INDICES if n not in summary["means"]]
    if summary["final"] is None:
        why = (f"needs {', '.join(missing)}" if missing else "needs every video's generation time (--seconds)")
        rows.append(f"final score: n/a ({why})")
    else:
        rows.append(f"final score {summary['final']:.4f} = 0.2 x (subject + background + smoothness + imaging + speed)")
    if "dynamic" in summary["means"]:
        rows.append(f"dynamic degree {summary['means']['dynamic']:.3f} (share of dynamic videos; not in the final "
                    f"score)")
    return rows
