"""Batch runner scored like the challenge: image-prompt pairs, resumable per-sample results, mean time, speed score.

The time of a sample is its generation time: from the host starting the prompt to its end, model loads included;
time spent queued behind other clients' prompts is recorded apart and not scored. Results live in one JSON file,
rewritten atomically (temporary file + rename) after every sample, so an interrupted bench loses at most the
sample in flight; rerunning the same command skips every sample that succeeded. Quality metrics plug in through
:class:`QualityMetric` (``--metric``) when their models are available.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from .errors import MissingModel, MissingNodeType, ServerUnreachable, UsageError, WanAccelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RESULTS_VERSION = 1
#: (upper bound in seconds, score) of the challenge's speed table; over the last bound a sample is invalid.
SPEED_TABLE = ((60.0, 1.0), (120.0, 0.9), (240.0, 0.8), (360.0, 0.75), (600.0, 0.7))
#: Errors that would repeat on every sample: the bench stops instead of recording one failure per sample.
FATAL_ERRORS = (ServerUnreachable, MissingModel, MissingNodeType)


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


class QualityMetric(Protocol):
    """A quality measure of one generated sample; ``unavailable_reason`` says why it cannot run here (or None)."""

    name: str

    def unavailable_reason(self) -> str | None: ...

    def measure(self, sample: Sample, outputs: Sequence[Path]) -> float: ...


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

    def measure(self, sample: Sample, outputs: Sequence[Path]) -> float:
        """PSNR over RGB uint8 pixels; inf when identical."""
        import av
        import numpy as np
        from PIL import Image

        video = next((p for p in outputs if p.suffix.lower() in (".mp4", ".webm", ".mkv", ".mov")), None)
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


def read_results(path: Path, config: Mapping[str, Any]) -> dict[str, SampleResult]:
    """Earlier results by sample id; a file written for another configuration is a ``UsageError``."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a readable results file ({exc}); move it away to start afresh") from None
    if data.get("config") != dict(config):
        changed = sorted(k for k in set(config) | set(data.get("config", {}))
                         if config.get(k) != data.get("config", {}).get(k))
        raise UsageError(f"{path} holds results of another configuration (differs in: {', '.join(changed)}); "
                         f"use another --out folder, or delete the file to start afresh")
    return {item["id"]: SampleResult(**item) for item in data.get("samples", [])}


def write_results(path: Path, config: Mapping[str, Any], results: Sequence[SampleResult]) -> None:
    """Writes every result atomically: a reader sees the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    payload = {"version": RESULTS_VERSION, "config": dict(config), "samples": [asdict(r) for r in results]}
    partial.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


@dataclass(frozen=True)
class BenchSummary:
    """Totals over the results file: successes, failures, mean time, its speed score, mean of each metric."""

    total: int
    succeeded: int
    failed: int
    skipped: int
    mean_seconds: float | None
    score: float | None
    invalid_samples: int
    metric_means: dict[str, float]

    def lines(self) -> list[str]:
        """The summary as printed lines."""
        done = f"{self.succeeded}/{self.total} samples succeeded, {self.failed} failed"
        if self.skipped:
            done += f", {self.skipped} already done (skipped)"
        out = [done]
        if self.mean_seconds is None:
            out.append("mean time: n/a (no successful sample)")
        else:
            score = "invalid (over 600 s)" if self.score is None else f"{self.score:g}"
            out.append(f"mean time per sample: {self.mean_seconds:.2f} s -> speed score {score}")
            if self.invalid_samples:
                out.append(f"{self.invalid_samples} sample(s) took over 600 s (invalid)")
        out += [f"mean {name}: {value:.3f}" for name, value in self.metric_means.items()]
        return out


def summarise(results: Sequence[SampleResult], skipped: int) -> BenchSummary:
    """Aggregates results the way the challenge scores them (mean time of the successful samples)."""
    times = [r.seconds for r in results if r.ok and r.seconds is not None]
    mean = sum(times) / len(times) if times else None
    names = sorted({name for r in results for name in r.metrics})
    metric_means = {name: sum(vals) / len(vals) for name in names
                    if (vals := [r.metrics[name] for r in results if name in r.metrics])}
    return BenchSummary(len(results), sum(r.ok for r in results), sum(not r.ok for r in results), skipped, mean,
                        speed_score(mean) if mean is not None else None,
                        sum(speed_score(t) is None for t in times), metric_means)


def run_bench(samples: Sequence[Sample], generate: Callable[[Sample], JobOutcome], results_path: Path,
              config: Mapping[str, Any], metrics: Sequence[QualityMetric] = (),
              report: Callable[[str], None] = print) -> BenchSummary:
    """Generates every sample not already successful in ``results_path``, saving the results after each one."""
    earlier = read_results(results_path, config)
    results = {s.id: earlier[s.id] for s in samples if s.id in earlier}
    skipped = sum(1 for r in results.values() if r.ok)
    if skipped:
        report(f"resuming: {skipped} finished sample(s) in {results_path} are skipped")
    active = []
    for metric in metrics:
        reason = metric.unavailable_reason()
        if reason is None:
            active.append(metric)
        else:
            report(f"metric {metric.name} skipped: {reason}")
    for index, sample in enumerate(samples, start=1):
        if sample.id in results and results[sample.id].ok:
            continue
        report(f"sample {index}/{len(samples)}: {sample.id}")
        result = _run_one(sample, generate, active, report)
        results[sample.id] = result
        write_results(results_path, config, [results[s.id] for s in samples if s.id in results])
        state = f"{result.seconds:.2f} s" if result.ok else f"FAILED: {result.error}"
        report(f"sample {index}/{len(samples)}: {sample.id} {state}")
    return summarise([results[s.id] for s in samples if s.id in results], skipped)


def _run_one(sample: Sample, generate: Callable[[Sample], JobOutcome], metrics: Sequence[QualityMetric],
             report: Callable[[str], None]) -> SampleResult:
    try:
        outcome = generate(sample)
    except FATAL_ERRORS:
        raise
    except WanAccelError as exc:
        return SampleResult(sample.id, False, None, None, None, sample.seed, [], str(exc), str(sample.image),
                            sample.prompt, _now())
    measured = {}
    for metric in metrics:
        try:
            measured[metric.name] = metric.measure(sample, outcome.outputs)
        except Exception as exc:  # a metric must never lose a generated sample
            report(f"metric {metric.name} failed on {sample.id}: {exc}")
    return SampleResult(sample.id, True, round(outcome.seconds, 3), round(outcome.queue_seconds, 3),
                        None if outcome.host_seconds is None else round(outcome.host_seconds, 3), sample.seed,
                        [str(p) for p in outcome.outputs], None, str(sample.image), sample.prompt, _now(), measured)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
