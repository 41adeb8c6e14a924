"""Imaging quality: pyiqa's MUSIQ loads a random-weight file offline, a missing file is MissingWeights, frames are
prepared exactly as VBench's "longer" mode, and the score equals VBench's ``technical_quality`` with the same network."""
import numpy as np
import pytest
import torch

from benchmarks.lib.score_weights import write_musiq_checkpoint
from tests.score.support_vbench import (  # noqa: F401 (offline: a fixture)
    assert_missing_weights, offline, random_weights, smooth_frames, write_video)
from wan_accel.quality import imaging
from wan_accel.quality.features import frames_to_tensor
from wan_accel.quality.video_io import load_video

FILE = "musiq_spaq_ckpt-358bb6af.pth"


@pytest.fixture(scope="module")
def musiq(tmp_path_factory):
    return random_weights(tmp_path_factory, FILE, write_musiq_checkpoint, imaging.load)


def test_a_missing_file_is_missing_weights(offline, tmp_path):
    assert_missing_weights(imaging.load, imaging.WEIGHTS[0], tmp_path,
                           needs=f"metric imaging needs {FILE} (109 MB, licence: non-commercial: pyiqa is "
                                 f"PolyForm-Noncommercial",
                           default_folder=r"/HOME/\.cache/torch/hub/pyiqa")


def test_loads_the_file_offline_through_pyiqa(offline, musiq):
    loaded = imaging.load("cpu", musiq.folder).model.state_dict()
    assert loaded.keys() == musiq.written.keys()
    assert all(torch.equal(loaded[key], musiq.written[key]) for key in musiq.written)


@pytest.mark.parametrize("height, width, resized", [(480, 832, (295, 512)), (64, 96, (64, 96)), (600, 40, (512, 34))])
def test_frames_are_prepared_as_vbenchs_longer_mode(height, width, resized):
    from vbench.imaging_quality import transform

    frames = frames_to_tensor(smooth_frames(1, height, width, seed=1))
    ours = imaging.longer_side_frames(frames)
    assert tuple(ours.shape[-2:]) == resized
    assert torch.equal(ours, transform(frames, "longer"))


@pytest.mark.parametrize("height, width", [(64, 96), (40, 600)])
def test_agrees_with_vbench_technical_quality(tmp_path, musiq, height, width):
    from vbench.imaging_quality import technical_quality

    frames = smooth_frames(2, height, width, seed=2)
    video_path = write_video(tmp_path / "video.mp4", frames)
    video = load_video(video_path)
    assert np.array_equal(video.frames, frames)

    ours = musiq.metric.measure(video)
    theirs, results = technical_quality(musiq.metric.model, [str(video_path)], "cpu")
    print(f"\n[agreement] imaging vs VBench: |difference| {abs(ours.value - theirs):.1e}")
    assert ours.value == pytest.approx(theirs, abs=1e-6)
    assert ours.value == pytest.approx(np.mean(ours.curves["frame"]) / 100.0, abs=1e-12)
    assert len(ours.curves["frame"]) == 2
