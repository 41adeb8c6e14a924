"""The checks subject (DINO) and background (DreamSim) share: both score a video by the same I2V similarity formula,
so agreement with VBench and the orderings the formula implies are tested the same way on either network.

The two ``test_*`` functions here are imported by ``test_subject.py`` and ``test_background.py``, which collect them
with their own ``metric`` and ``unchanged_side`` fixtures."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.score.support_vbench import noise_frames, smooth_frames, write_image, write_video
from wan_accel.quality.features import ImageSimilarityMetric
from wan_accel.quality.video_io import Video, load_video


def synthetic_video(frames: np.ndarray, image: np.ndarray) -> Video:
    """``frames`` at 16 fps made from ``image``, never written to disk."""
    return Video(Path("synthetic.mp4"), frames, 16.0, image)


def assert_agrees_with_vbench(metric: ImageSimilarityMetric, vbench_metric: Callable, folder: Path, count: int):
    """Our score of a ``count``-frame video equals VBench's ``vbench_metric`` (e.g. ``i2v_subject``) with the same
    network, and both read the same frames."""
    from vbench2_beta_i2v.utils import load_video as vbench_load_video

    frames = smooth_frames(count, 64, 96, seed=1)
    image_path = write_image(folder / "image.png", smooth_frames(1, 96, 144, seed=2)[0])
    video_path = write_video(folder / "video.mp4", frames)
    video = load_video(video_path, image_path)
    assert np.array_equal(video.frames, frames)
    assert np.array_equal(vbench_load_video(str(video_path)).permute(0, 2, 3, 1).numpy(), frames)

    ours = metric.measure(video)
    _, results = vbench_metric(metric.model, [(str(image_path), str(video_path))], "cpu")
    print(f"\n[agreement] {metric.name} vs VBench: |difference| {abs(ours.value - results[0]['video_results']):.1e}")
    assert ours.value == pytest.approx(results[0]["video_results"], abs=1e-6)
    assert (len(ours.curves["to_image"]), len(ours.curves["consecutive"])) == (count, count - 1)


def test_a_static_video_equal_to_its_image_scores_one(metric: ImageSimilarityMetric, unchanged_side: int):
    # unchanged_side: neither the tensor nor the PIL resize changes such an image, so image and frames reach the
    # network identical.
    image = smooth_frames(1, unchanged_side, unchanged_side, seed=3)[0]
    value = metric.measure(synthetic_video(np.stack([image] * 3), image))
    assert value.value == pytest.approx(1.0, abs=1e-6)
    assert value.curves["to_image"] == pytest.approx([1.0] * 3, abs=1e-6)


def test_ordered_frames_beat_the_same_frames_interleaved_and_noise_scores_below_a_static_video(
        metric: ImageSimilarityMetric):
    image, other = smooth_frames(1, 64, 96, seed=4)[0], smooth_frames(1, 64, 96, seed=5)[0]
    ordered = metric.measure(synthetic_video(np.stack([image, image, other, other]), image))
    interleaved = metric.measure(synthetic_video(np.stack([image, other, image, other]), image))
    similarity = interleaved.curves["consecutive"][0]
    assert similarity < 1.0 - 1e-4
    assert interleaved.curves["consecutive"] == pytest.approx([similarity] * 3, abs=1e-6)
    # Same best match to the image; consecutive mean (2 + s) / 3 against s, same minimum s.
    assert ordered.value - interleaved.value == pytest.approx(0.2 * (1.0 - similarity), abs=1e-6)
    # Against a random network only the static video's 1.0 is a provable upper bound for noise (not `ordered`).
    noise = metric.measure(synthetic_video(noise_frames(3, 64, 96, seed=6), image))
    assert max(noise.curves["consecutive"]) < 1.0 - 1e-4 and noise.value < 1.0 - 1e-4
