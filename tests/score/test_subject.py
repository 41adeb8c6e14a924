"""I2V subject: timm's DINO loads Meta's DINO file format offline, a missing file is MissingWeights, the score equals
VBench's ``i2v_subject`` with the same random-weight network, and known constructions order as the formula says."""
import pytest
import torch

from benchmarks.lib.score_weights import write_dino_backbone
from tests.score.support_similarity import (  # noqa: F401 (tests shared with the other I2V similarity metric)
    assert_agrees_with_vbench, test_a_static_video_equal_to_its_image_scores_one,
    test_ordered_frames_beat_the_same_frames_interleaved_and_noise_scores_below_a_static_video)
from tests.score.support_vbench import assert_missing_weights, offline, random_weights  # noqa: F401
from wan_accel.quality import subject

FILE = "dino_vitbase16_pretrain.pth"


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    """A random DINO ViT-B/16 in DINO's file format, that network (DINO's own architecture), and the metric."""
    return random_weights(tmp_path_factory, FILE, write_dino_backbone, subject.load)


@pytest.fixture
def metric(dino):
    return dino.metric


@pytest.fixture
def unchanged_side() -> int:
    """DINO's resize target (256): such an image reaches the crop unresized, as image and as frames."""
    return subject.RESIZE


def test_a_missing_file_is_missing_weights_before_timm_is_touched(offline, tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm ran before the file was checked"))
    assert_missing_weights(subject.load, subject.WEIGHTS[0], tmp_path,
                           needs=f"metric subject needs {FILE} (343.2 MB, licence: Apache-2.0",
                           default_folder=r"/HOME/\.cache/torch/hub/checkpoints")


def test_timm_loads_dinos_file_offline_and_computes_dinos_features(offline, dino):
    folder, dino_model, _ = dino
    loaded = subject.load("cpu", folder)
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = loaded.model(batch), dino_model(batch)
    assert ours.shape == (2, 768)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_agrees_with_vbench_i2v_subject(tmp_path, dino):
    from vbench2_beta_i2v.i2v_subject import i2v_subject

    assert_agrees_with_vbench(dino.metric, i2v_subject, tmp_path, count=7)
