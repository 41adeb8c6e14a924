"""I2V background: DreamSim's ensemble loads offline from a folder of random-weight files in its own layout, any
missing file is MissingWeights (never a download), the score equals VBench's ``i2v_background`` with the same network,
and known constructions order as the formula says."""
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.lib.score_weights import write_dreamsim_cache
from tests.score.support_similarity import (  # noqa: F401 (tests shared with the other I2V similarity metric)
    assert_agrees_with_vbench, test_a_static_video_equal_to_its_image_scores_one,
    test_ordered_frames_beat_the_same_frames_interleaved_and_noise_scores_below_a_static_video)
from tests.score.support_vbench import offline  # noqa: F401
from wan_accel.quality import background
from wan_accel.quality.weights import MissingWeights


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dreamsim")
    write_dreamsim_cache(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def metric(cache):
    return background.load("cpu", cache)


@pytest.fixture
def unchanged_side() -> int:
    """DreamSim's input size (224): such an image reaches the network unresized, as image and as frames."""
    return background.SIZE


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

    assert_agrees_with_vbench(metric, i2v_background, tmp_path, count=4)
