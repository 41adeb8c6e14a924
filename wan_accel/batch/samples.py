"""What a batch (``wan-accel bench``) is made of: image-prompt pairs, the challenge's speed table, one result per
sample, quality metrics.

The time of a sample is its generation time: from the host starting the prompt to its end, model loads included;
time spent queued behind other clients' prompts is recorded apart and not scored. Quality metrics plug in through
:class:`QualityMetric` (``--metric``) when their models are available. The results file is
:mod:`wan_accel.batch.results`, the batch on one server :mod:`wan_accel.batch.one_server`, on several
:mod:`wan_accel.batch.ray_batch`.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from ..errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")
#: (upper bound in seconds, score) of the challenge's speed table; over the last bound a sample is invalid.
SPEED_TABLE = ((60.0, 1.0), (120.0, 0.9), (240.0, 0.8), (360.0, 0.75), (600.0, 0.7))


def speed_score(seconds: float) -> float | None:
    """The challenge's speed score for a time per sample; None when it is over 600 s (invalid)."""
    for bound, score in SPEED_TABLE[:-1]:
        if seconds < bound:
            return score
    last_bound, last_score = SPEED_TABLE[-1]
    return last_score if seconds <= last_bound else None


@dataclass(frozen=True)
class Sample:
    """One image-prompt pair of a bench."""

    id: str
    image: Path
    prompt: str
    seed: int | None = None
    negative: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What generating one sample produced: generation time (host start to end, as the client saw it), time queued
    behind other prompts, the host's own timestamps' difference, downloaded files."""

    seconds: float
    queue_seconds: float
    host_seconds: float | None
    outputs: list[Path]


@dataclass
class SampleResult:
    """One line of the results file."""

    id: str
    ok: bool
    seconds: float | None
    queue_seconds: float | None
    host_seconds: float | None
    seed: int | None
    outputs: list[str]
    error: str | None
    image: str
    prompt: str
    finished: str
    metrics: dict[str, float] = field(default_factory=dict)
    server: str | None = None      # the server that ran it (absent in files written before several servers)
    node: str | None = None        # bench --ray: the Ray node and worker that ran it
    worker: str | None = None
    stage_a: str | None = None     # bench --split-at on Ray: the workers that ran stage A and stage B
    stage_b: str | None = None

    @classmethod
    def failure(cls, sample: Sample, error: str, server: str | None) -> "SampleResult":
        """A sample that did not produce its outputs, with the reason."""
        return cls(sample.id, False, None, None, None, sample.seed, [], error, str(sample.image), sample.prompt,
                   now(), server=server)

    @classmethod
    def success(cls, sample: Sample, outcome: JobOutcome, metrics: dict[str, float],
                server: str | None) -> "SampleResult":
        """A generated sample: its times rounded to the millisecond, its files and metrics."""
        host = None if outcome.host_seconds is None else round(outcome.host_seconds, 3)
        return cls(sample.id, True, round(outcome.seconds, 3), round(outcome.queue_seconds, 3), host, sample.seed,
                   [str(p) for p in outcome.outputs], None, str(sample.image), sample.prompt, now(), metrics,
                   server)


class QualityMetric(Protocol):
    """A quality measure of one generated sample; ``unavailable_reason`` says why it cannot run here (or None).
    ``measure`` gives one value, recorded under the metric's name, or several by name (``--score``'s indices)."""

    name: str

    def unavailable_reason(self) -> str | None: ...

    def measure(self, sample: Sample, outcome: JobOutcome) -> float | Mapping[str, float]: ...


class FirstFramePSNR:
    """PSNR (dB) of the video's first frame against the input image, centre-cropped and resized like WanImageToVideo:
    image-to-video should start from its image."""

    name = "first_frame_psnr"

    def unavailable_reason(self) -> str | None:
        """Needs PyAV (video decoding) and Pillow."""
        try:
            import av  # noqa: F401
            import PIL  # noqa: F401
        except ImportError as exc:
            return f"{exc.name} is not installed (pip install av pillow)"
        return None

    def measure(self, sample: Sample, outcome: JobOutcome) -> float:
        """PSNR over RGB uint8 pixels; inf when identical."""
        import av
        import numpy as np
        from PIL import Image

        video = first_video(outcome.outputs)
        if video is None:
            raise ValueError("no video among the outputs")
        with av.open(str(video)) as container:
            frame = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64)
        height, width = frame.shape[:2]
        with Image.open(sample.image) as img:
            img = img.convert("RGB")
            scale = max(width / img.width, height / img.height)
            crop_w, crop_h = width / scale, height / scale
            left, top = (img.width - crop_w) / 2, (img.height - crop_h) / 2
            img = img.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
            reference = np.asarray(img, dtype=np.float64)
        mse = float(np.mean((frame - reference) ** 2))
        return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


METRICS: dict[str, Callable[[], QualityMetric]] = {FirstFramePSNR.name: FirstFramePSNR}


def load_pairs(source: str | os.PathLike) -> list[Sample]:
    """Samples from a folder (``name.png`` + ``name.txt`` prompt) or a CSV (columns image, prompt; optional id,
    seed, negative; image paths relative to the CSV)."""
    source = Path(source)
    if source.is_dir():
        samples = _pairs_from_folder(source)
    elif source.is_file():
        samples = _pairs_from_csv(source)
    else:
        raise UsageError(f"--pairs {source} does not exist; give a folder of image + .txt pairs or a CSV file")
    if not samples:
        raise UsageError(f"--pairs {source} holds no samples")
    duplicates = sorted({s.id for s in samples if [t.id for t in samples].count(s.id) > 1})
    if duplicates:
        raise UsageError(f"--pairs {source}: sample ids must be unique, repeated: {', '.join(duplicates)}")
    return samples


def _pairs_from_folder(folder: Path) -> list[Sample]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.with_suffix(".txt").name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        raise UsageError(f"{folder}: every image needs a prompt file next to it; missing: {', '.join(missing)}")
    return [Sample(p.stem, p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images]


def _pairs_from_csv(path: Path) -> list[Sample]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"image", "prompt"} <= set(rows[0]):
        raise UsageError(f"{path}: the CSV needs a header with at least the columns image and prompt")
    samples = []
    for number, row in enumerate(rows, start=2):
        image = (path.parent / row["image"]).resolve()
        if not image.is_file():
            raise UsageError(f"{path} line {number}: image {row['image']} not found (paths are relative to the CSV)")
        seed = row.get("seed") or None
        if seed is not None and not seed.strip().isdigit():
            raise UsageError(f"{path} line {number}: seed {seed!r} is not a non-negative integer")
        samples.append(Sample(row.get("id") or image.stem, image, row["prompt"].strip(),
                              int(seed) if seed else None, row.get("negative") or None))
    return samples


def first_video(paths: Sequence[Path]) -> Path | None:
    """The first video file among a sample's outputs, by suffix."""
    return next((Path(p) for p in paths if Path(p).suffix.lower() in VIDEO_SUFFIXES), None)


def active_metrics(metrics: Sequence[QualityMetric], report: Callable[[str], None]) -> list[QualityMetric]:
    """The metrics that can run here; each one that cannot is reported with its reason."""
    active = []
    for metric in metrics:
        reason = metric.unavailable_reason()
        if reason is None:
            active.append(metric)
        else:
            report(f"metric {metric.name} skipped: {reason}")
    return active


def measure_metrics(sample: Sample, outcome: JobOutcome, metrics: Sequence[QualityMetric],
                    report: Callable[[str], None]) -> dict[str, float]:
    """Each metric's value for one generated sample; a metric that fails is reported and left out, never the sample."""
    measured = {}
    for metric in metrics:
        try:
            value = metric.measure(sample, outcome)
            measured.update(value if isinstance(value, Mapping) else {metric.name: value})
        except Exception as exc:  # a metric must never lose a generated sample
            report(f"metric {metric.name} failed on {sample.id}: {exc}")
    return measured


def now() -> str:
    """The local time as the results file stamps it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
