"""Lossless synthetic videos, a fixture under which nothing can reach the network, and a metric's random-weight folder
and missing-file check, for the subject, background and imaging tests (their random-weight files:
``benchmarks/lib/score_weights.py``)."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch

from wan_accel.quality.weights import MissingWeights, WeightSpec


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No socket can connect, Hugging Face is offline, and torch / HF / XDG caches and ``~`` point at empty folders."""
    def refuse(*args, **kwargs):
        raise OSError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HOME", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        folder = tmp_path / "empty" / name
        folder.mkdir(parents=True)
        monkeypatch.setenv(name, str(folder))
    return tmp_path / "empty"


class RandomWeights(NamedTuple):
    """A folder holding one metric's random-weight file, what its writer returned, and the metric loaded from it."""

    folder: Path
    written: object
    metric: object


def random_weights(tmp_path_factory, file: str, write: Callable, load: Callable) -> RandomWeights:
    """``write(folder / file, seed=0)`` into a fresh folder, then ``load("cpu", folder)``."""
    folder = tmp_path_factory.mktemp(Path(file).stem)
    written = write(folder / file, seed=0)
    return RandomWeights(folder, written, load("cpu", folder))


def assert_missing_weights(load: Callable, spec: WeightSpec, folder: Path, needs: str, default_folder: str):
    """``load`` from an empty ``folder``, and with no folder given, is :class:`MissingWeights` whose message holds
    ``needs`` and names the file's source and where to put it (``default_folder``: a regex)."""
    with pytest.raises(MissingWeights) as given:
        load("cpu", folder)
    message = str(given.value)
    assert needs in message and spec.source in message and f"into {folder}" in message
    with pytest.raises(MissingWeights, match=rf"into .*{default_folder} \(or pass --weights DIR"):
        load("cpu", None)


def write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    """``frames`` (T, H, W, 3) uint8 RGB as a lossless .mp4 (H.264 RGB, crf 0): PyAV and decord read back the same
    bytes."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    """An RGB PNG (VBench opens it without ``convert('RGB')``, so it must already be RGB)."""
    from PIL import Image

    Image.fromarray(image).save(path)
    return path


def smooth_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random texture drifting one pixel per frame, (count, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (3, height // 8 + 2, (width + count) // 8 + 2)).astype(np.float32))
    texture = torch.nn.functional.interpolate(coarse[None], scale_factor=8, mode="bilinear")[0].permute(1, 2, 0)
    frames = [texture[:height, i:i + width].numpy() for i in range(count)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def noise_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Independent uniform noise frames, (count, H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
