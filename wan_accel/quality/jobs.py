"""What to score: videos from a folder (images from ``--images``) or the samples of a bench's ``results.json``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..batch.samples import IMAGE_SUFFIXES, VIDEO_SUFFIXES, first_video
from ..errors import UsageError



@dataclass(frozen=True)
class ScoreJob:
    """One video to score: its sample id, file, input image (None when unknown) and generation time (None when
    unknown)."""

    id: str
    video: Path
    image: Path | None
    seconds: float | None


def jobs_from_results(path: Path) -> list[ScoreJob]:
    """The successful samples of a bench's ``results.json``: their video, input image and generation time."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        samples = data["samples"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a results file of wan-accel bench ({exc})") from None
    jobs = []
    for item in samples:
        if not item.get("ok"):
            continue
        video = first_video(item.get("outputs", []))
        if video is None:
            raise UsageError(f"{path}: sample {item.get('id')} has no video among its outputs")
        jobs.append(ScoreJob(str(item["id"]), path.parent / video, Path(item["image"]) if item.get("image") else None,
                             item.get("seconds")))
    if not jobs:
        raise UsageError(f"{path} holds no successful sample to score")
    return jobs


def jobs_from_folder(videos: Path, images: Path | None, seconds: float | None) -> list[ScoreJob]:
    """Every video in ``videos``; its image is the file of the same stem in ``images`` (any image suffix)."""
    files = sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise UsageError(f"--videos {videos} holds no video ({', '.join(VIDEO_SUFFIXES)})")
    jobs = []
    for video in files:
        image = None
        if images is not None:
            image = next((path for s in IMAGE_SUFFIXES if (path := images / (video.stem + s)).is_file()), None)
        jobs.append(ScoreJob(video.stem, video, image, seconds))
    return jobs


def find_jobs(videos: Path, images: Path | None, seconds: float | None) -> list[ScoreJob]:
    """``--videos`` as a folder or a results file; ``--seconds`` replaces the results' times when given."""
    if videos.is_dir():
        if images is not None and not images.is_dir():
            raise UsageError(f"--images {images} is not a folder")
        return jobs_from_folder(videos, images, seconds)
    if videos.is_file():
        jobs = jobs_from_results(videos)
        if images is not None:
            raise UsageError("--images is for a folder of videos; a results file names each sample's image")
        if seconds is not None:
            jobs = [ScoreJob(j.id, j.video, j.image, seconds) for j in jobs]
        return jobs
    raise UsageError(f"--videos {videos} does not exist; give a folder of videos or a bench's results.json")


def check_jobs(jobs: list[ScoreJob], needs_image: bool) -> None:
    """Refuses, before any network loads, videos that are missing or lack the image an I2V metric needs."""
    missing = [str(j.video) for j in jobs if not j.video.is_file()]
    if missing:
        raise UsageError(f"video file(s) not found: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if needs_image:
        lacking = [j.id for j in jobs if j.image is None or not j.image.is_file()]
        if lacking:
            raise UsageError(f"the subject and background metrics compare each video with its input image, and "
                             f"there is none for: {', '.join(lacking[:5])}; pass --images DIR holding NAME.png for "
                             f"each NAME.mp4, or leave those metrics out with --metrics")
