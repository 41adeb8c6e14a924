"""I2V background: DreamSim's ensemble loads offline from a folder of random-weight files in its own layout, any
missing file is MissingWeights (never a download), the score equals VBench's ``i2v_background`` with the same network,
and known constructions order as the formula says."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.lib.score_weights import write_dreamsim_cache
from tests.score.support_vbench import noise_frames, offline, smooth_frames, write_image, write_video  # noqa: F401
from wan_accel.quality import background
from wan_accel.quality.video_io import Video, load_video
from wan_accel.quality.weights import MissingWeights


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dreamsim")
    write_dreamsim_cache(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def metric(cache):
    return background.load("cpu", cache)


def _video(frames: np.ndarray, image: np.ndarray) -> Video:
    return Video(Path("synthetic.mp4"), frames, 16.0, image)


def test_weights_list_every_file_dreamsim_reads(cache):
    written = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    listed = {spec.file for spec in background.WEIGHTS}
    # peft's README and torch.hub's trusted_list are written by the libraries, never read for the model.
    assert written - listed == {"ensemble_lora/README.md", "trusted_list"}
    assert listed <= written


def test_each_missing_file_is_missing_weights_and_nothing_downloads(offline, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("a download was attempted"))
    for missing in background.WEIGHTS:
        partial = tmp_path / missing.file.replace("/", "_")
        for spec in background.WEIGHTS:
            if spec is not missing:
                (partial / spec.file).parent.mkdir(parents=True, exist_ok=True)
                (partial / spec.file).symlink_to(cache / spec.file)
        with pytest.raises(MissingWeights) as given:
            background.load("cpu", partial)
        assert (f"metric background needs {missing.file} ({missing.size_mb:g} MB, licence: {missing.licence}); "
                f"download it from {missing.source} into {partial}") in str(given.value)
        shutil.rmtree(partial)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeights, match=r"into models \(or pass --weights DIR with the file in it\)"):
        background.load("cpu", None)


def test_loads_offline_through_dreamsim_and_leaves_the_hub_folder_alone(offline, cache):
    hub_dir = torch.hub.get_dir()
    loaded = background.load("cpu", cache)
    assert torch.hub.get_dir() == hub_dir
    lora = [p for name, p in loaded.model.named_parameters() if "lora_B" in name]
    assert len(lora) == 36 and all(p.abs().sum() > 0 for p in lora)   # 3 ViTs x 12 blocks, the saved random LoRA


def test_agrees_with_vbench_i2v_background(tmp_path, metric):
    from vbench2_beta_i2v.i2v_background import i2v_background

    frames = smooth_frames(4, 64, 96, seed=1)
    image_path = write_image(tmp_path / "image.png", smooth_frames(1, 96, 144, seed=2)[0])
    video_path = write_video(tmp_path / "video.mp4", frames)
    video = load_video(video_path, image_path)
    assert np.array_equal(video.frames, frames)

    ours = metric.measure(video)
    _, results = i2v_background(metric.model, [(str(image_path), str(video_path))], "cpu")
    assert ours.value == pytest.approx(results[0]["video_results"], abs=1e-6)
    assert (len(ours.curves["to_image"]), len(ours.curves["consecutive"])) == (4, 3)


def test_a_static_video_equal_to_its_image_scores_one(metric):
    # 224x224: neither the tensor nor the PIL resize changes it, so image and frames reach DreamSim identical.
    image = smooth_frames(1, 224, 224, seed=3)[0]
    value = metric.measure(_video(np.stack([image] * 3), image))
    assert value.value == pytest.approx(1.0, abs=1e-6)


def test_ordered_frames_beat_the_same_frames_interleaved_and_noise_scores_below_a_static_video(metric):
    image, other = smooth_frames(1, 64, 96, seed=4)[0], smooth_frames(1, 64, 96, seed=5)[0]
    ordered = metric.measure(_video(np.stack([image, image, other, other]), image))
    interleaved = metric.measure(_video(np.stack([image, other, image, other]), image))
    similarity = interleaved.curves["consecutive"][0]
    assert similarity < 1.0 - 1e-4
    assert ordered.value - interleaved.value == pytest.approx(0.2 * (1.0 - similarity), abs=1e-6)
    # Against a random network only the static video's 1.0 is a provable upper bound for noise (not `ordered`).
    noise = metric.measure(_video(noise_frames(3, 64, 96, seed=6), image))
    assert max(noise.curves["consecutive"]) < 1.0 - 1e-4 and noise.value < 1.0 - 1e-4
