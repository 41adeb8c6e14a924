"""Frames and input images as VBench's metrics see them: RGB uint8, read with PyAV, the image cropped like the video."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class Video:
    """One generated video and the image it was made from: ``frames`` (T, H, W, 3) uint8 RGB, ``image`` (h, w, 3)
    uint8 RGB already cropped to the video's aspect ratio (``None`` when the score needs no image), ``fps``."""

    path: Path
    frames: np.ndarray
    fps: float
    image: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """Every frame of a video as (T, H, W, 3) uint8 RGB, and its frame rate."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (OSError, av.error.FFmpegError, IndexError) as exc:
        raise UsageError(f"{path} is not a readable video ({exc}); score .mp4/.webm files made by the workflows")
    if not frames:
        raise UsageError(f"{path} holds no video frames")
    return np.stack(frames), fps


def crop_to_aspect(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centre crop of ``image`` with the aspect ratio ``width:height``, as WanImageToVideo crops its input (and
    as VBench's I2V suite crops its images to each video's ratio); no resizing."""
    h, w = image.shape[:2]
    if w * height > h * width:          # too wide: keep the full height
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image[:, left:left + new_w]
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return image[top:top + new_h]


def read_image(path: Path) -> np.ndarray:
    """An input image as (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(f"{path} is not a readable image ({exc})") from None


def load_video(path: Path, image_path: Path | None = None) -> Video:
    """A video and, when given, its input image cropped to the video's aspect ratio."""
    frames, fps = read_frames(path)
    image = None
    if image_path is not None:
        image = crop_to_aspect(read_image(image_path), frames.shape[2], frames.shape[1])
    return Video(Path(path), frames, fps, image)
