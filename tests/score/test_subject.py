"""I2V subject: timm's DINO loads Meta's DINO file format offline, a missing file is MissingWeights, the score equals
VBench's ``i2v_subject`` with the same random-weight network, and known constructions order as the formula says."""
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.lib.score_weights import write_dino_backbone
from tests.score.support_vbench import noise_frames, offline, smooth_frames, write_image, write_video  # noqa: F401
from wan_accel.quality import subject
from wan_accel.quality.video_io import Video, load_video
from wan_accel.quality.weights import MissingWeights

FILE = "dino_vitbase16_pretrain.pth"


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    """A folder holding a random DINO ViT-B/16 in DINO's file format, and that network (DINO's own architecture)."""
    folder = tmp_path_factory.mktemp("dino")
    return folder, write_dino_backbone(folder / FILE, seed=0)


@pytest.fixture(scope="module")
def metric(dino):
    return subject.load("cpu", dino[0])


def _video(frames: np.ndarray, image: np.ndarray) -> Video:
    return Video(Path("synthetic.mp4"), frames, 16.0, image)


def test_a_missing_file_is_missing_weights_before_timm_is_touched(offline, tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm ran before the file was checked"))
    with pytest.raises(MissingWeights) as given:
        subject.load("cpu", tmp_path)
    message = str(given.value)
    assert f"metric subject needs {FILE} (343.2 MB, licence: Apache-2.0" in message
    assert subject.WEIGHTS[0].source in message and f"into {tmp_path}" in message
    with pytest.raises(MissingWeights, match=r"into .*/HOME/\.cache/torch/hub/checkpoints \(or pass --weights DIR"):
        subject.load("cpu", None)


def test_timm_loads_dinos_file_offline_and_computes_dinos_features(offline, dino):
    folder, dino_model = dino
    loaded = subject.load("cpu", folder)
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = loaded.model(batch), dino_model(batch)
    assert ours.shape == (2, 768)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_agrees_with_vbench_i2v_subject(tmp_path, metric):
    from vbench2_beta_i2v.i2v_subject import i2v_subject
    from vbench2_beta_i2v.utils import load_video as vbench_load_video

    frames = smooth_frames(7, 64, 96, seed=1)
    image_path = write_image(tmp_path / "image.png", smooth_frames(1, 96, 144, seed=2)[0])
    video_path = write_video(tmp_path / "video.mp4", frames)
    video = load_video(video_path, image_path)
    assert np.array_equal(video.frames, frames)
    assert np.array_equal(vbench_load_video(str(video_path)).permute(0, 2, 3, 1).numpy(), frames)

    ours = metric.measure(video)
    _, results = i2v_subject(metric.model, [(str(image_path), str(video_path))], "cpu")
    assert ours.value == pytest.approx(results[0]["video_results"], abs=1e-6)
    assert (len(ours.curves["to_image"]), len(ours.curves["consecutive"])) == (7, 6)


def test_a_static_video_equal_to_its_image_scores_one(metric):
    # 256x256: neither the tensor nor the PIL resize changes it, so image and frames reach DINO identical.
    image = smooth_frames(1, 256, 256, seed=3)[0]
    value = metric.measure(_video(np.stack([image] * 3), image))
    assert value.value == pytest.approx(1.0, abs=1e-6)
    assert value.curves["to_image"] == pytest.approx([1.0] * 3, abs=1e-6)


def test_ordered_frames_beat_the_same_frames_interleaved_and_noise_scores_below_a_static_video(metric):
    image, other = smooth_frames(1, 64, 96, seed=4)[0], smooth_frames(1, 64, 96, seed=5)[0]
    ordered = metric.measure(_video(np.stack([image, image, other, other]), image))
    interleaved = metric.measure(_video(np.stack([image, other, image, other]), image))
    similarity = interleaved.curves["consecutive"][0]
    assert similarity < 1.0 - 1e-4
    assert interleaved.curves["consecutive"] == pytest.approx([similarity] * 3, abs=1e-6)
    # Same best match to the image; consecutive mean (2 + s) / 3 against s, same minimum s.
    assert ordered.value - interleaved.value == pytest.approx(0.2 * (1.0 - similarity), abs=1e-6)
    # Against a random network only the static video's 1.0 is a provable upper bound for noise (not `ordered`).
    noise = metric.measure(_video(noise_frames(3, 64, 96, seed=6), image))
    assert max(noise.curves["consecutive"]) < 1.0 - 1e-4 and noise.value < 1.0 - 1e-4
