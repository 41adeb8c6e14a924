"""Imaging quality: pyiqa's MUSIQ loads a random-weight file offline, a missing file is MissingWeights, frames are
prepared exactly as VBench's "longer" mode, and the score equals VBench's ``technical_quality`` with the same network."""
import numpy as np
import pytest
import torch

from benchmarks.lib.score_weights import write_musiq_checkpoint
from tests.score.support_vbench import offline, smooth_frames, write_video  # noqa: F401
from wan_accel.quality import imaging
from wan_accel.quality.subject import frames_to_tensor
from wan_accel.quality.video_io import load_video
from wan_accel.quality.weights import MissingWeights

FILE = "musiq_spaq_ckpt-358bb6af.pth"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("musiq")
    return folder, write_musiq_checkpoint(folder / FILE, seed=0)


@pytest.fixture(scope="module")
def metric(weights):
    return imaging.load("cpu", weights[0])


def test_a_missing_file_is_missing_weights(offline, tmp_path):
    with pytest.raises(MissingWeights) as given:
        imaging.load("cpu", tmp_path)
    message = str(given.value)
    assert f"metric imaging needs {FILE} (109 MB, licence: non-commercial: pyiqa is PolyForm-Noncommercial" in message
    assert imaging.WEIGHTS[0].source in message and f"into {tmp_path}" in message
    with pytest.raises(MissingWeights, match=r"into .*/HOME/\.cache/torch/hub/pyiqa \(or pass --weights DIR"):
        imaging.load("cpu", None)


def test_loads_the_file_offline_through_pyiqa(offline, weights):
    folder, state = weights
    loaded = imaging.load("cpu", folder).model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)


@pytest.mark.parametrize("height, width, resized", [(480, 832, (295, 512)), (64, 96, (64, 96)), (600, 40, (512, 34))])
def test_frames_are_prepared_as_vbenchs_longer_mode(height, width, resized):
    from vbench.imaging_quality import transform

    frames = frames_to_tensor(smooth_frames(1, height, width, seed=1))
    ours = imaging.longer_side_frames(frames)
    assert tuple(ours.shape[-2:]) == resized
    assert torch.equal(ours, transform(frames, "longer"))


@pytest.mark.parametrize("height, width", [(64, 96), (40, 600)])
def test_agrees_with_vbench_technical_quality(tmp_path, metric, height, width):
    from vbench.imaging_quality import technical_quality

    frames = smooth_frames(2, height, width, seed=2)
    video_path = write_video(tmp_path / "video.mp4", frames)
    video = load_video(video_path)
    assert np.array_equal(video.frames, frames)

    ours = metric.measure(video)
    theirs, results = technical_quality(metric.model, [str(video_path)], "cpu")
    assert ours.value == pytest.approx(theirs, abs=1e-6)
    assert ours.value == pytest.approx(np.mean(ours.curves["frame"]) / 100.0, abs=1e-12)
    assert len(ours.curves["frame"]) == 2
